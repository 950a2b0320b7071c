"""docs/dag-paths.md names, for every DAG path, a test that runs it: each row names one, and each exists."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DOC = REPO_ROOT / "docs" / "dag-paths.md"
TEST_REF = re.compile(r"`(tests/[\w/]+\.py)::(test_\w+)`")


def _rows() -> list[str]:
    lines = [line for line in DOC.read_text().splitlines() if line.startswith("| ")]
    header, separator, *rows = lines
    assert "test that runs it" in header and set(separator) <= set("|- ")
    return rows


def _test_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)}


def test_every_path_names_a_test() -> None:
    rows = _rows()
    assert len(rows) >= 15
    for row in rows:
        last_cell = row.rstrip(" |").rsplit("|", 1)[-1]
        assert TEST_REF.search(last_cell), f"no test named for: {row[:100]}"


def test_every_named_test_exists() -> None:
    refs = {ref for row in _rows() for ref in TEST_REF.findall(row)}
    for file, name in sorted(refs):
        path = REPO_ROOT / file
        assert path.is_file(), f"{file} (named in docs/dag-paths.md) does not exist"
        assert name in _test_names(path), f"{file} has no {name} (named in docs/dag-paths.md)"
