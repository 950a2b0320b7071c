"""``pitcrew drift``: exit codes 0/1/2, --json shape, --html, CSV and Parquet, saved profiles."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from pitcrew.cli import main


@pytest.fixture
def tables(tmp_path):
    rng = np.random.default_rng(9)
    ref = pd.DataFrame({"x": rng.normal(size=1000), "label": rng.choice(["a", "b"], 1000)})
    same = pd.DataFrame({"x": rng.normal(size=1000), "label": rng.choice(["a", "b"], 1000)})
    shifted = pd.DataFrame({"x": rng.normal(0.8, 1, 1000), "label": rng.choice(["a", "b"], 1000)})
    paths = {"ref": tmp_path / "ref.parquet", "same": tmp_path / "same.csv", "shifted": tmp_path / "shifted.parquet"}
    ref.to_parquet(paths["ref"])
    same.to_csv(paths["same"], index=False)
    shifted.to_parquet(paths["shifted"])
    return paths


def test_no_drift_exits_0(tables, capsys) -> None:
    assert main(["drift", "--reference", str(tables["ref"]), "--current", str(tables["same"])]) == 0
    assert capsys.readouterr().out.startswith("no_drift:")


def test_drift_exits_1_with_the_documented_json(tables, capsys, tmp_path) -> None:
    html = tmp_path / "out" / "report.html"
    code = main(["drift", "--reference", str(tables["ref"]), "--current", str(tables["shifted"]),
                 "--json", "--html", str(html)])
    assert code == 1
    data = json.loads(capsys.readouterr().out)
    assert data["drift"] is True and "x" in data["reason"]
    assert [c["column"] for c in data["columns"]] == ["x", "label"]
    assert set(data["columns"][0]) >= {"column", "test", "statistic", "p_value", "p_value_adjusted",
                                       "effect_size", "drifted"}
    assert "<svg" in html.read_text()


def test_saved_profile_is_reused(tables, capsys, tmp_path) -> None:
    profile = tmp_path / "ref.npz"
    args = ["drift", "--current", str(tables["shifted"]), "--json"]
    assert main([*args, "--reference", str(tables["ref"]), "--save-profile", str(profile)]) == 1
    first = capsys.readouterr().out
    assert main([*args, "--reference", str(profile)]) == 1
    assert capsys.readouterr().out == first


def test_insufficient_data_exits_2(tables, capsys) -> None:
    code = main(["drift", "--reference", str(tables["ref"]), "--current", str(tables["same"]), "--min-rows", "5000"])
    assert code == 2
    assert "insufficient data" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "message"),
    [(["--columns", "x,nope"], "not in the reference: nope"), (["--alpha", "2"], "alpha must lie")],
)
def test_bad_input_exits_2_with_one_line(tables, capsys, extra, message) -> None:
    code = main(["drift", "--reference", str(tables["ref"]), "--current", str(tables["same"]), *extra])
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_missing_file_exits_2(tables, capsys, tmp_path) -> None:
    assert main(["drift", "--reference", str(tmp_path / "nope.parquet"), "--current", str(tables["same"])]) == 2
    assert "no such file" in capsys.readouterr().err


def test_metrics_textfile_is_written(tables, tmp_path) -> None:
    prom = tmp_path / "drift.prom"
    main(["drift", "--reference", str(tables["ref"]), "--current", str(tables["shifted"]),
          "--metrics-textfile", str(prom), "--model", "textclf", "--min-rows", "100"])
    assert 'pitcrew_drift_detected{model="textclf"} 1.0' in prom.read_text()
