from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from pitcrew.serving.client import Prediction, VersionStats
from pitcrew.serving.errors import (
    ModelLoadError,
    NothingToRollBackError,
    PublishError,
    SwapInProgressError,
    VerificationError,
)
from pitcrew.serving.lock import model_lock
from pitcrew.serving.model_config import ServingOptions, from_pbtxt, text_model_config
from pitcrew.serving.state import load_state
from pitcrew.serving.swap import HotSwapper
from tests.unit.test_serving_artifact import write_artifact

MODEL = "textclf"


class FakeTriton:
    """Triton's load semantics as the protocol relies on them: a load sets the served versions to the policy."""

    def __init__(self, repository: Path) -> None:
        self.repository = repository
        self.loaded: list[int] = []
        self.loads: list[list[int]] = []
        self.broken: set[int] = set()  # fail to load
        self.wrong: set[int] = set()  # answer the golden set differently
        self.slow_ms: dict[int, float] = {}
        self.calls = 0
        self.max_batch = 0

    def load(self, model: str, config_json: str | None = None) -> None:
        versions = [int(v) for v in json.loads(config_json)["version_policy"]["specific"]["versions"]]
        self.loads.append(versions)
        bad = self.broken & set(versions)
        if bad:
            raise ModelLoadError(
                f"Triton refused to load {model}: version {min(bad)} is at UNAVAILABLE state"
            )
        self.loaded = versions

    def unload(self, model: str) -> None:
        self.loaded = []

    def ready_versions(self, model: str) -> list[int]:
        return sorted(self.loaded)

    def classify(self, model, texts, version=None, request_id=""):
        assert version in self.loaded
        self.calls += 1
        self.max_batch = max(self.max_batch, len(texts))
        golden = json.loads((self.repository / model / str(version) / "golden.json").read_text())
        by_text = dict(
            zip(golden["texts"], zip(golden["labels"], golden["probabilities"], strict=True), strict=True)
        )
        answers = []
        for text in texts:
            label, probs = by_text[text]
            if version in self.wrong:
                label, probs = "a" if label == "b" else "b", probs[::-1]
            answers.append(Prediction(label, probs, str(version), "id"))
        return answers

    def stats(self, model, version):
        per_request_ns = int(self.slow_ms.get(version, 2.0) * 1e6)
        return VersionStats(self.calls, self.calls * per_request_ns, 0, 0)


@pytest.fixture()
def repo(tmp_path: Path) -> Path:
    return tmp_path / "repo"


@pytest.fixture()
def triton(repo: Path) -> FakeTriton:
    return FakeTriton(repo)


@pytest.fixture()
def swapper(triton, repo) -> HotSwapper:
    return HotSwapper(triton, repo, latency_budget_ms=50)


@pytest.fixture()
def config():
    return text_model_config(MODEL, 2, ServingOptions())


def artifact(tmp_path: Path, name: str) -> Path:
    return write_artifact(tmp_path / "artifacts" / name)


class TestDeploy:
    def test_first_deploy_publishes_loads_verifies_commits(self, tmp_path, swapper, triton, repo, config):
        result = swapper.deploy(MODEL, 1, artifact(tmp_path, "v1"), config=config)
        assert (result.version, result.previous, result.action) == (1, None, "deploy")
        assert result.verification.mismatched_labels == 0 and result.verification.p95_ms == pytest.approx(2.0)
        assert triton.loads == [[1]] and triton.loaded == [1]
        on_disk = from_pbtxt((repo / MODEL / "config.pbtxt").read_text())
        assert list(on_disk.version_policy.specific.versions) == [1]
        assert load_state(repo, MODEL).serving == 1

    def test_new_version_loads_beside_old_then_old_is_dropped(self, tmp_path, swapper, triton, repo, config):
        swapper.deploy(MODEL, 1, artifact(tmp_path, "v1"), config=config)
        result = swapper.deploy(MODEL, 2, artifact(tmp_path, "v2"))
        assert triton.loads == [[1], [1, 2], [2]]  # never an unload, never new without old first
        assert (result.version, result.previous) == (2, 1)
        state = load_state(repo, MODEL)
        assert (state.serving, state.previous) == (2, 1)
        assert [h["action"] for h in state.history] == ["deploy", "deploy"]

    def test_broken_version_rejected_old_keeps_serving_files_kept(
        self, tmp_path, swapper, triton, repo, config
    ):
        swapper.deploy(MODEL, 1, artifact(tmp_path, "v1"), config=config)
        triton.broken.add(2)
        with pytest.raises(ModelLoadError, match="version 2 failed to load; version 1 keeps serving"):
            swapper.deploy(MODEL, 2, artifact(tmp_path, "v2"))
        assert triton.loaded == [1] and triton.loads[-1] == [1]
        assert (repo / MODEL / "2" / "model.onnx").exists()
        assert load_state(repo, MODEL).serving == 1

    def test_wrong_golden_answers_roll_back(self, tmp_path, swapper, triton, config):
        swapper.deploy(MODEL, 1, artifact(tmp_path, "v1"), config=config)
        triton.wrong.add(2)
        with pytest.raises(VerificationError, match="2/2 golden labels differ.*version 1 keeps serving"):
            swapper.deploy(MODEL, 2, artifact(tmp_path, "v2"))
        assert triton.loaded == [1]

    def test_slow_version_rolls_back(self, tmp_path, swapper, triton, config):
        swapper.deploy(MODEL, 1, artifact(tmp_path, "v1"), config=config)
        triton.slow_ms[2] = 80.0
        with pytest.raises(VerificationError, match="p95 latency 80.0 ms exceeds budget 50.0 ms"):
            swapper.deploy(MODEL, 2, artifact(tmp_path, "v2"))
        assert triton.loaded == [1]

    def test_failed_first_deploy_unloads(self, tmp_path, swapper, triton, config):
        triton.wrong.add(1)
        with pytest.raises(VerificationError, match="nothing was serving before"):
            swapper.deploy(MODEL, 1, artifact(tmp_path, "v1"), config=config)
        assert triton.loaded == []

    def test_large_golden_set_sent_in_batches_with_bounded_latency_samples(self, tmp_path, swapper, triton, config):
        folder = artifact(tmp_path, "v1")
        texts = [f"text {i}" for i in range(70)]
        golden = {"texts": texts, "labels": ["a"] * 70, "probabilities": [[0.6, 0.4]] * 70}
        (folder / "golden.json").write_text(json.dumps(golden))
        result = swapper.deploy(MODEL, 1, folder, config=config)
        assert result.verification.golden_texts == 70
        assert triton.max_batch == 32
        assert triton.calls == 3 + 60  # answers in 3 batches, then at most 60 single latency samples

    def test_unknown_version_without_artifact(self, swapper, repo, config):
        with pytest.raises(PublishError, match="pass --artifact"):
            swapper.deploy(MODEL, 5, config=config)

    def test_missing_config_is_named(self, swapper):
        with pytest.raises(PublishError, match="no config.pbtxt"):
            swapper.deploy(MODEL, 1)

    def test_concurrent_swap_fails_clearly_and_changes_nothing(self, tmp_path, swapper, triton, repo, config):
        swapper.deploy(MODEL, 1, artifact(tmp_path, "v1"), config=config)
        with model_lock(repo, MODEL):
            with pytest.raises(SwapInProgressError):
                swapper.deploy(MODEL, 2, artifact(tmp_path, "v2"))
        assert triton.loaded == [1] and not (repo / MODEL / "2").exists()

    def test_concurrent_swaps_never_interleave(self, tmp_path, triton, repo, config):
        HotSwapper(triton, repo).deploy(MODEL, 1, artifact(tmp_path, "v1"), config=config)
        waiting = HotSwapper(triton, repo, lock_timeout_s=30)
        arts = {v: artifact(tmp_path, f"v{v}") for v in (2, 3)}
        results = []
        threads = [
            threading.Thread(target=lambda v=v: results.append(waiting.deploy(MODEL, v, arts[v])))
            for v in (2, 3)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(results) == 2
        first, second = results if results[0].previous == 1 else results[::-1]
        # Each swap's steps are adjacent: [old, new] then [new], never mixed with the other swap's.
        assert triton.loads == [
            [1],
            [1, first.version], [first.version],
            sorted([first.version, second.version]), [second.version],
        ]  # fmt: skip
        assert second.previous == first.version


class TestRollback:
    def test_rollback_to_previous_lower_version(self, tmp_path, swapper, triton, repo, config):
        swapper.deploy(MODEL, 1, artifact(tmp_path, "v1"), config=config)
        swapper.deploy(MODEL, 2, artifact(tmp_path, "v2"))
        result = swapper.rollback(MODEL)
        assert (result.action, result.version, result.previous) == ("rollback", 1, 2)
        assert triton.loads[-2:] == [[1, 2], [1]] and triton.loaded == [1]
        assert (repo / MODEL / "2").is_dir()  # every file kept
        assert swapper.rollback(MODEL).version == 2  # and back again

    def test_without_state_falls_back_to_highest_lower_version_on_disk(
        self, tmp_path, swapper, triton, repo, config
    ):
        for v in (1, 2, 3):
            swapper.deploy(MODEL, v, artifact(tmp_path, f"v{v}"), config=config if v == 1 else None)
        (repo / ".pitcrew" / "state" / f"{MODEL}.json").unlink()
        assert swapper.rollback(MODEL).version == 2

    def test_nothing_to_roll_back(self, tmp_path, swapper, config):
        swapper.deploy(MODEL, 1, artifact(tmp_path, "v1"), config=config)
        with pytest.raises(NothingToRollBackError, match="no earlier version"):
            swapper.rollback(MODEL)
