"""The REST facade's retry of idempotent writes (no server: the generated client's DAG API is stubbed)."""

from __future__ import annotations

import pytest
from airflow_client import client as af

from pitcrew.airflow_api import AirflowApi


class StubDags:
    """``DAGApi.patch_dag`` answering with the given HTTP statuses, then success."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.calls: list[bool] = []

    def patch_dag(self, dag_id: str, body: af.DAGPatchBody) -> None:
        self.calls.append(body.is_paused)
        if self.statuses:
            raise af.ApiException(status=self.statuses.pop(0), reason="stub")


def api_with(dags: StubDags) -> AirflowApi:
    api = AirflowApi.__new__(AirflowApi)  # no login: only the DAG API is used
    api.dags = dags
    return api


def test_pausing_is_retried_while_the_database_is_locked() -> None:
    dags = StubDags([500, 500])
    api_with(dags).set_paused("d", True)
    assert dags.calls == [True, True, True]


@pytest.mark.parametrize("status", [404, 403])
def test_a_client_error_is_not_retried(status: int) -> None:
    dags = StubDags([status])
    with pytest.raises(af.ApiException):
        api_with(dags).set_paused("d", True)
    assert dags.calls == [True]


def test_a_lasting_server_error_is_raised_after_five_tries() -> None:
    dags = StubDags([500] * 6)
    with pytest.raises(af.ApiException):
        api_with(dags).set_paused("d", False)
    assert len(dags.calls) == 5
