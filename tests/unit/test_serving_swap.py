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
from pitcrew.serving.model_config import (
    CoreContract,
    ServingOptions,
    core_model_config,
    from_pbtxt,
    text_model_config,
)
from pitcrew.serving.state import load_state
from pitcrew.serving.swap import HotSwapper
from tests.unit.conftest import write_artifact

MODEL = "textclf"
STAGING = "textclf__staging"
CORE = "textclf_core"


class FakeTriton:
    """Triton's semantics as the protocol relies on them, per model name: a load serves exactly the policy's
    versions, unversioned requests would reach the highest READY one, and a front version calls its core
    version of the same number."""

    def __init__(self, repository: Path) -> None:
        self.repository = repository
        self.models: dict[str, list[int]] = {}
        self.loads: list[tuple[str, list[int]]] = []
        self.broken: set[int] = set()  # fail to load (any model)
        self.refuse_live: set[int] = set()  # the live model's commit load fails
        self.wrong: set[int] = set()  # answer the golden set differently
        self.slow_ms: dict[int, float] = {}
        self.calls = 0
        self.max_batch = 0

    @property
    def loaded(self) -> list[int]:
        return self.models.get(MODEL, [])

    def load(self, model: str, config_json: str | None = None, versions=()) -> None:
        config = json.loads(config_json)
        wanted = [int(v) for v in config["version_policy"]["specific"]["versions"]]
        assert list(versions) == wanted
        self.loads.append((model, wanted))
        bad = (self.broken | (self.refuse_live if model == MODEL else set())) & set(wanted)
        if bad:
            raise ModelLoadError(f"Triton refused to load {model}: version {min(bad)} is at UNAVAILABLE state")
        core = config.get("parameters", {}).get("core_model", {}).get("string_value")
        for v in wanted:
            assert (self.repository / model / str(v)).is_dir(), f"{model}/{v} not published"
            if core:
                assert v in self.models.get(core, []), f"front {model}/{v} loaded before its core"
        self.models[model] = wanted

    def unload(self, model: str) -> None:
        self.models.pop(model, None)

    def version_states(self, model: str) -> dict[int, str]:
        return {v: "READY" for v in self.models.get(model, [])}

    def ready_versions(self, model: str) -> list[int]:
        return sorted(self.models.get(model, []))

    def classify(self, model, texts, version=None, request_id=""):
        assert version in self.models.get(model, [])
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


def pair_configs():
    options = ServingOptions(runtime="onnxruntime", core_max_batch_size=16)
    contract = CoreContract("onnxruntime", ["input_ids", "attention_mask"], "logits", 2, 16)
    return text_model_config(MODEL, 2, options), core_model_config(MODEL, contract, options, standin=True)


def artifact(tmp_path: Path, name: str, runtime: str = "python-onnxruntime") -> Path:
    return write_artifact(tmp_path / "artifacts" / name, runtime=runtime)


def live_loads(triton: FakeTriton) -> list[list[int]]:
    return [versions for model, versions in triton.loads if model == MODEL]


class TestDeploy:
    def test_first_deploy_publishes_stages_verifies_commits(self, tmp_path, swapper, triton, repo, config):
        result = swapper.deploy(MODEL, 1, artifact(tmp_path, "v1"), config=config)
        assert (result.version, result.previous, result.action) == (1, None, "deploy")
        assert result.verification.mismatched_labels == 0 and result.verification.p95_ms == pytest.approx(2.0)
        assert triton.loads == [(STAGING, [1]), (MODEL, [1])]
        assert triton.models == {MODEL: [1]} and not (repo / STAGING).exists()  # staging gone again
        on_disk = from_pbtxt((repo / MODEL / "config.pbtxt").read_text())
        assert list(on_disk.version_policy.specific.versions) == [1]
        assert load_state(repo, MODEL).serving == 1

    def test_new_version_never_reaches_the_live_model_before_it_is_verified(
        self, tmp_path, swapper, triton, repo, config
    ):
        swapper.deploy(MODEL, 1, artifact(tmp_path, "v1"), config=config)
        result = swapper.deploy(MODEL, 2, artifact(tmp_path, "v2"))
        # The live model goes [1] -> [2]: never [1, 2], where 2 (higher) would take unversioned traffic.
        assert live_loads(triton) == [[1], [2]]
        assert triton.loads[-2:] == [(STAGING, [2]), (MODEL, [2])]
        assert (result.version, result.previous) == (2, 1)
        state = load_state(repo, MODEL)
        assert (state.serving, state.previous) == (2, 1)
        assert [h["action"] for h in state.history] == ["deploy", "deploy"]

    def test_staging_writes_no_inference_log(self, tmp_path, swapper, triton, repo):
        config = text_model_config(MODEL, 2, ServingOptions(inference_log_uri=str(tmp_path / "log")))
        seen = []
        original = triton.load
        triton.load = lambda model, cfg, versions=(): (
            seen.append((model, json.loads(cfg))), original(model, cfg, versions)
        )
        swapper.deploy(MODEL, 1, artifact(tmp_path, "v1"), config=config)
        logs = {model: cfg["parameters"].get("inference_log_uri") for model, cfg in seen}
        assert logs == {STAGING: None, MODEL: {"string_value": str(tmp_path / "log")}}

    def test_broken_version_rejected_old_keeps_serving_half_published_removed(
        self, tmp_path, swapper, triton, repo, config
    ):
        swapper.deploy(MODEL, 1, artifact(tmp_path, "v1"), config=config)
        triton.broken.add(2)
        with pytest.raises(ModelLoadError, match="version 2 is at UNAVAILABLE.*version 1 keeps serving"):
            swapper.deploy(MODEL, 2, artifact(tmp_path, "v2"))
        assert triton.models == {MODEL: [1]} and live_loads(triton) == [[1]]
        assert not (repo / MODEL / "2").exists() and load_state(repo, MODEL).serving == 1
        triton.broken.clear()
        assert swapper.deploy(MODEL, 2, artifact(tmp_path, "v2")).version == 2  # a retry can publish again

    def test_wrong_golden_answers_never_served_live(self, tmp_path, swapper, triton, config):
        swapper.deploy(MODEL, 1, artifact(tmp_path, "v1"), config=config)
        triton.wrong.add(2)
        with pytest.raises(VerificationError, match="2/2 golden labels differ.*version 1 keeps serving"):
            swapper.deploy(MODEL, 2, artifact(tmp_path, "v2"))
        assert triton.models == {MODEL: [1]} and live_loads(triton) == [[1]]

    def test_slow_version_rejected(self, tmp_path, swapper, triton, config):
        swapper.deploy(MODEL, 1, artifact(tmp_path, "v1"), config=config)
        triton.slow_ms[2] = 80.0
        with pytest.raises(VerificationError, match="p95 latency 80.0 ms exceeds budget 50.0 ms"):
            swapper.deploy(MODEL, 2, artifact(tmp_path, "v2"))
        assert triton.models == {MODEL: [1]}

    def test_failed_commit_restores_the_old_version(self, tmp_path, swapper, triton, repo, config):
        swapper.deploy(MODEL, 1, artifact(tmp_path, "v1"), config=config)
        triton.refuse_live.add(2)
        with pytest.raises(ModelLoadError, match="version 1 keeps serving"):
            swapper.deploy(MODEL, 2, artifact(tmp_path, "v2"))
        assert live_loads(triton) == [[1], [2], [1]] and triton.models == {MODEL: [1]}
        assert load_state(repo, MODEL).serving == 1
        assert list(from_pbtxt((repo / MODEL / "config.pbtxt").read_text()).version_policy.specific.versions) == [1]

    def test_failed_first_deploy_leaves_nothing(self, tmp_path, swapper, triton, repo, config):
        triton.wrong.add(1)
        with pytest.raises(VerificationError, match="nothing was serving before"):
            swapper.deploy(MODEL, 1, artifact(tmp_path, "v1"), config=config)
        assert triton.models == {} and not (repo / MODEL / "1").exists()

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

    def test_version_without_any_config_is_named(self, swapper, repo):
        (repo / MODEL / "1").mkdir(parents=True)
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
            threading.Thread(target=lambda v=v: results.append(waiting.deploy(MODEL, v, arts[v], config=config)))
            for v in (2, 3)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(results) == 2
        first, second = results if results[0].previous == 1 else results[::-1]
        # Each swap's steps are adjacent: staging then live, never mixed with the other swap's.
        assert triton.loads[2:] == [
            (STAGING, [first.version]), (MODEL, [first.version]),
            (STAGING, [second.version]), (MODEL, [second.version]),
        ]  # fmt: skip
        assert second.previous == first.version


class TestPair:
    def test_core_then_staged_front_then_live_front_then_old_core_dropped(self, tmp_path, swapper, triton, repo):
        front, core = pair_configs()
        swapper.deploy(MODEL, 1, artifact(tmp_path, "v1", "onnxruntime"), front, core)
        result = swapper.deploy(MODEL, 2, artifact(tmp_path, "v2", "onnxruntime"), front, core)
        assert triton.loads == [
            (CORE, [1]), (STAGING, [1]), (MODEL, [1]),
            (CORE, [1, 2]), (STAGING, [2]), (MODEL, [2]), (CORE, [2]),
        ]  # fmt: skip
        assert triton.models == {MODEL: [2], CORE: [2]} and result.core_model == CORE
        # The core version holds the network (and the stand-in's code); the front only tokenizes.
        assert sorted(p.name for p in (repo / CORE / "2").iterdir() if p.suffix in (".onnx", ".py")) == [
            "model.onnx", "model.py"
        ]
        assert not (repo / MODEL / "2" / "model.onnx").exists()
        for name in (MODEL, CORE):
            on_disk = from_pbtxt((repo / name / "config.pbtxt").read_text())
            assert list(on_disk.version_policy.specific.versions) == [2]

    @pytest.mark.parametrize(
        ("failure", "error"),
        [("wrong", VerificationError), ("broken", ModelLoadError), ("refuse_live", ModelLoadError)],
    )
    def test_any_failure_keeps_the_old_pair_and_removes_the_new(self, tmp_path, swapper, triton, repo, failure, error):
        """wrong: verification fails; broken: a version fails to load; refuse_live: the commit load fails."""
        front, core = pair_configs()
        swapper.deploy(MODEL, 1, artifact(tmp_path, "v1", "onnxruntime"), front, core)
        getattr(triton, failure).add(2)
        with pytest.raises(error, match="version 1 keeps serving"):
            swapper.deploy(MODEL, 2, artifact(tmp_path, "v2", "onnxruntime"), front, core)
        assert triton.models == {MODEL: [1], CORE: [1]} and load_state(repo, MODEL).serving == 1
        assert not (repo / MODEL / "2").exists() and not (repo / CORE / "2").exists()

    def test_rollback_swaps_the_pair_back(self, tmp_path, swapper, triton):
        front, core = pair_configs()
        for v in (1, 2):
            swapper.deploy(MODEL, v, artifact(tmp_path, f"v{v}", "onnxruntime"), front, core)
        result = swapper.rollback(MODEL)
        assert (result.version, result.previous) == (1, 2)
        assert triton.loads[-4:] == [(CORE, [1, 2]), (STAGING, [1]), (MODEL, [1]), (CORE, [1])]
        assert triton.models == {MODEL: [1], CORE: [1]}

    def test_rollback_across_layouts_unloads_the_core(self, tmp_path, swapper, triton, config):
        swapper.deploy(MODEL, 1, artifact(tmp_path, "v1"), config=config)
        front, core = pair_configs()
        swapper.deploy(MODEL, 2, artifact(tmp_path, "v2", "onnxruntime"), front, core)
        assert triton.models == {MODEL: [2], CORE: [2]}
        swapper.rollback(MODEL)
        assert triton.models == {MODEL: [1]}  # version 1 runs ONNX itself: no core left loaded


class TestRollback:
    def test_rollback_to_previous_lower_version(self, tmp_path, swapper, triton, repo, config):
        swapper.deploy(MODEL, 1, artifact(tmp_path, "v1"), config=config)
        swapper.deploy(MODEL, 2, artifact(tmp_path, "v2"), config=config)
        result = swapper.rollback(MODEL)
        assert (result.action, result.version, result.previous) == ("rollback", 1, 2)
        assert live_loads(triton)[-1] == [1] and triton.loaded == [1]
        assert (repo / MODEL / "2").is_dir()  # every file kept
        assert swapper.rollback(MODEL).version == 2  # and back again

    def test_without_state_falls_back_to_highest_lower_version_on_disk(
        self, tmp_path, swapper, triton, repo, config
    ):
        for v in (1, 2, 3):
            swapper.deploy(MODEL, v, artifact(tmp_path, f"v{v}"), config=config)
        (repo / ".pitcrew" / "state" / f"{MODEL}.json").unlink()
        assert swapper.rollback(MODEL).version == 2

    def test_nothing_to_roll_back(self, tmp_path, swapper, config):
        swapper.deploy(MODEL, 1, artifact(tmp_path, "v1"), config=config)
        with pytest.raises(NothingToRollBackError, match="no earlier version"):
            swapper.rollback(MODEL)
