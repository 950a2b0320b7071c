from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from pitcrew.rollout.routing import (
    RoutingError,
    RoutingTable,
    clear_routing,
    read_routing,
    routing_path,
    write_routing,
)


def test_written_then_read_back_with_its_time(tmp_path: Path) -> None:
    assert read_routing(tmp_path, "textclf") is None  # no table: the champion answers everything
    written = write_routing(tmp_path, RoutingTable("textclf", champion=3, challenger=4, weight=10, step=1))
    assert written.updated_at
    assert read_routing(tmp_path, "textclf") == written
    assert written.weights() == {3: 90.0, 4: 10.0} and written.canary_model == "textclf__canary"
    assert routing_path(tmp_path, "textclf") == tmp_path / ".pitcrew" / "routing" / "textclf.json"
    assert clear_routing(tmp_path, "textclf") and read_routing(tmp_path, "textclf") is None
    assert not clear_routing(tmp_path, "textclf")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"weight": 101}, "weight must be a percentage"),
        ({"weight": -1}, "weight must be a percentage"),
        ({"weight": float("nan")}, "percentage"),
        ({"weight": True}, "percentage"),
        ({"challenger": 3}, "champion and challenger are both version 3"),
        ({"champion": -1}, "champion must be a whole number"),
        ({"step": 1.5}, "step must be a whole number"),
        ({"mode": "mirror"}, "mode must be split or shadow"),
        ({"mode": "shadow", "weight": 10}, "in shadow mode the champion answers all"),
    ],
)
def test_an_invalid_table_is_refused_naming_the_field(fields: dict, message: str) -> None:
    values = {"model": "textclf", "champion": 3, "challenger": 4, "weight": 10.0, **fields}
    with pytest.raises(RoutingError, match=message):
        RoutingTable(**values)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "unreadable"),
        ('{"model": "other", "champion": 1, "challenger": 2, "weight": 5}', "not the table of textclf"),
        ('{"model": "textclf", "champion": 1, "weight": 5}', "challenger"),
        ('{"model": "textclf", "champion": 1, "challenger": 2, "weight": 500}', "percentage"),
    ],
)
def test_a_broken_file_is_an_error_that_names_the_file(tmp_path: Path, text: str, message: str) -> None:
    path = routing_path(tmp_path, "textclf")
    path.parent.mkdir(parents=True)
    path.write_text(text)
    with pytest.raises(RoutingError, match=message) as raised:
        read_routing(tmp_path, "textclf")
    assert str(path) in str(raised.value)


def test_readers_never_see_a_half_written_table(tmp_path: Path) -> None:
    # What the front model relies on: while the weight changes, every read is a whole, valid table.
    write_routing(tmp_path, RoutingTable("textclf", 1, 2, weight=0))
    stop, seen, errors = threading.Event(), set(), []

    def read() -> None:
        while not stop.is_set():
            try:
                seen.add(json.loads(routing_path(tmp_path, "textclf").read_text())["weight"])
            except Exception as exc:  # noqa: BLE001 - any error is what this test looks for
                errors.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    for i in range(200):
        write_routing(tmp_path, RoutingTable("textclf", 1, 2, weight=float(i % 101)))
    stop.set()
    reader.join()
    assert not errors, errors[:3]
    assert len(seen) > 1
