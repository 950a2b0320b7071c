"""How a run ended: a failed task wins, else the declared outcome, else failed; facts fold in order."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pitcrew.pipeline.outcome import (
    FAILED_STATES,
    OUTCOMES,
    SUCCESSFUL,
    RunOutcome,
    decide_outcome,
    merge_facts,
)

#: Task states Airflow reports for a run that did not fail.
NON_FAILED_STATES = ["success", "skipped", "removed", "up_for_retry", "running", "awaiting_input", None]
task_ids = st.text(alphabet="abcdefghij_", min_size=1, max_size=8)
declarations = st.lists(st.one_of(st.none(), st.sampled_from(OUTCOMES)), max_size=6)


class TestRunOutcome:
    @pytest.mark.parametrize("outcome", OUTCOMES)
    def test_only_failed_and_rolled_back_end_red(self, outcome: str) -> None:
        assert RunOutcome(outcome, "why").successful is (outcome not in ("failed", "rolled_back"))

    def test_successful_outcomes_are_known_outcomes(self) -> None:
        assert set(SUCCESSFUL) <= set(OUTCOMES)


class TestDecideOutcome:
    @pytest.mark.parametrize(
        ("states", "declared", "outcome"),
        [
            ({"drift_check": "success", "train": "skipped"}, [None, "no_drift"], "no_drift"),
            ({"promote": "success", "rollback": "skipped"}, ["deployed", None], "deployed"),
            ({"approval": "success", "hot_swap": "skipped"}, ["rejected_by_human"], "rejected_by_human"),
            ({"rollback": "success"}, ["rolled_back"], "rolled_back"),
            ({"approval": "skipped"}, ["dry_run"], "dry_run"),
            ({"evaluate": "success"}, ["rejected_by_evaluation"], "rejected_by_evaluation"),
            ({"prepare_training": "success"}, ["nothing_to_do"], "nothing_to_do"),
            ({"fine_tune": "failed", "promote": "upstream_failed"}, ["deployed"], "failed"),
            ({"hot_swap": "upstream_failed"}, [], "failed"),
            ({"promote": "success"}, [], "failed"),
            ({"promote": "success"}, [None, None], "failed"),
        ],
    )
    def test_table(self, states: dict, declared: list, outcome: str) -> None:
        assert decide_outcome(states, declared).outcome == outcome

    def test_failed_reason_names_the_failed_tasks_sorted(self) -> None:
        decided = decide_outcome(
            {"zeta": "failed", "alpha": "upstream_failed", "ok": "success"}, ["deployed"]
        )
        assert decided.reason == "task(s) failed: alpha, zeta"
        assert not decided.successful

    def test_no_declaration_says_so(self) -> None:
        decided = decide_outcome({"a": "success"}, [None])
        assert decided.outcome == "failed"
        assert "no step declared an outcome" in decided.reason

    def test_the_declaring_steps_reason_is_the_runs_reason(self) -> None:
        states = {"prepare_training": "skipped", "fine_tune": "skipped"}
        decided = decide_outcome(states, [None, "nothing_to_do"], [None, "textclf has no champion yet"])
        assert decided == RunOutcome("nothing_to_do", "textclf has no champion yet")
        without = decide_outcome(states, ["nothing_to_do"], [None])
        assert without.reason == "declared by the step that ended the run"

    def test_several_outcomes_the_last_counts_and_the_reason_lists_them(self) -> None:
        decided = decide_outcome({}, ["deployed", None, "rolled_back"])
        assert decided.outcome == "rolled_back"
        assert "['deployed', 'rolled_back']" in decided.reason

    def test_states_may_be_enum_like(self) -> None:
        class State:
            def __init__(self, value: str) -> None:
                self.value = value

            def __str__(self) -> str:
                return self.value

        assert decide_outcome({"t": State("failed")}, ["deployed"]).outcome == "failed"
        assert decide_outcome({"t": State("success")}, ["deployed"]).outcome == "deployed"

    def test_unknown_outcome_raises_naming_it(self) -> None:
        with pytest.raises(ValueError, match=r"'promoted'") as info:
            decide_outcome({"a": "success"}, ["deployed", "promoted"])
        assert "deployed" in str(info.value)  # lists the known outcomes too

    @settings(max_examples=200, deadline=None)
    @given(
        states=st.dictionaries(task_ids, st.sampled_from(NON_FAILED_STATES), max_size=6),
        failed=st.dictionaries(task_ids, st.sampled_from(sorted(FAILED_STATES)), min_size=1, max_size=3),
        declared=declarations,
    )
    def test_any_failed_state_wins(self, states: dict, failed: dict, declared: list) -> None:
        decided = decide_outcome({**states, **failed}, declared)
        assert decided.outcome == "failed"
        assert all(task in decided.reason for task in failed)

    @settings(max_examples=200, deadline=None)
    @given(
        states=st.dictionaries(task_ids, st.sampled_from(NON_FAILED_STATES), max_size=6),
        declared=declarations,
    )
    def test_without_failures_the_last_declaration_decides(self, states: dict, declared: list) -> None:
        decided = decide_outcome(states, declared)
        made = [d for d in declared if d]
        assert decided.outcome == (made[-1] if made else "failed")
        assert decided.successful is (decided.outcome in SUCCESSFUL)

    @settings(max_examples=100, deadline=None)
    @given(
        declared=declarations,
        unknown=st.text(min_size=1, max_size=12).filter(lambda s: s not in OUTCOMES),
        at=st.integers(min_value=0, max_value=6),
    )
    def test_any_unknown_declaration_raises_without_failures(
        self, declared: list, unknown: str, at: int
    ) -> None:
        declared.insert(min(at, len(declared)), unknown)
        with pytest.raises(ValueError) as info:
            decide_outcome({"t": "success"}, declared)
        assert repr(unknown) in str(info.value)


class TestMergeFacts:
    def test_later_facts_override_earlier(self) -> None:
        merged = merge_facts(
            [{"training_seconds": 12.5, "training_device": "cpu"}, {"training_seconds": 14.0}]
        )
        assert merged == {"training_seconds": 14.0, "training_device": "cpu"}

    def test_none_reports_and_none_values_are_ignored(self) -> None:
        merged = merge_facts(
            [None, {"approval_wait_s": 30.0}, {"approval_wait_s": None, "alert_to_deploy_s": 90.0}]
        )
        assert merged == {"approval_wait_s": 30.0, "alert_to_deploy_s": 90.0}

    def test_nothing_reported(self) -> None:
        assert merge_facts([]) == {}
        assert merge_facts([None, None]) == {}

    def test_reads_a_generator_once_and_leaves_inputs_alone(self) -> None:
        first = {"training_seconds": 1.0}
        merged = merge_facts(item for item in [first, {"training_seconds": 2.0}])
        assert merged == {"training_seconds": 2.0}
        assert first == {"training_seconds": 1.0}
