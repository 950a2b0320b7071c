"""Airflow Hook for Triton Inference Server: connection parsing, client creation and the swap operations.

Connection (conn type ``triton``): host and port of Triton's HTTP endpoint (required); extras
``repository`` (the live model repository folder Triton serves; default: pitcrew's ``model_repository``
setting), ``retries`` (connection attempts per control call, the client's one retry policy) and
``lock_timeout_s`` (how long to wait for another swap of the same model), and what this Triton can run:
``core_standin`` (serve ``<name>_core`` ONNX models with the Python-backend stand-in), ``tensorrt_version``
(plans built by another TensorRT are refused) and ``gpu`` (core instances on the GPU); these default to
pitcrew's settings. The local stack defines ``triton_default``; production defines it in Airflow
(docker-compose.yml).
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook

from pitcrew.settings import get_settings

if TYPE_CHECKING:
    from pitcrew.models_file import ModelEntry
    from pitcrew.serving.client import TritonControl
    from pitcrew.serving.swap import HotSwapper

# The serving package (tritonclient, gevent, grpc) is imported when a task calls the hook, not when a
# DAG file that names an operator using it is parsed.


class TritonHook(BaseHook):
    """Owns the Triton connection; exposes ``deploy``, ``rollback`` and ``serving_version``.

    :param triton_conn_id: Airflow connection id (conn type ``triton``).
    """

    conn_name_attr = "triton_conn_id"
    default_conn_name = "triton_default"
    conn_type = "triton"
    hook_name = "Triton Inference Server"

    def __init__(self, triton_conn_id: str = default_conn_name) -> None:
        super().__init__()
        self.triton_conn_id = triton_conn_id

    @staticmethod
    def parse_connection(host: str | None, port: int | None, extra: dict[str, Any]) -> dict[str, Any]:
        """Connection fields as client arguments; scheme and path in ``host`` are dropped (HTTP endpoint)."""
        if not host or not port:
            raise ValueError("a triton connection needs the host and port of Triton's HTTP endpoint")
        from pitcrew.serving.factory import TritonTarget

        host = host.split("://", 1)[-1].split("/", 1)[0]
        settings = get_settings()
        return {
            "url": f"{host}:{port}",
            "repository": Path(extra.get("repository") or settings.repository_dir),
            "retries": int(extra.get("retries", 3)),
            "lock_timeout_s": float(extra.get("lock_timeout_s", 0.0)),
            "target": TritonTarget(
                core_standin=_flag(extra.get("core_standin", settings.triton_core_standin)),
                tensorrt_version=str(extra.get("tensorrt_version", settings.triton_tensorrt_version)),
                gpu=_flag(extra.get("gpu", settings.triton_gpu)),
            ),
        }

    @cached_property
    def params(self) -> dict[str, Any]:
        conn = self.get_connection(self.triton_conn_id)
        return self.parse_connection(conn.host, conn.port, conn.extra_dejson)

    def get_conn(self) -> TritonControl:
        from pitcrew.serving.client import TritonControl

        return TritonControl(self.params["url"], retries=self.params["retries"])

    def swapper(self, model: str | ModelEntry) -> HotSwapper:
        from pitcrew.serving.factory import make_swapper

        entry = self._entry(model) if isinstance(model, str) else model
        p = self.params
        return make_swapper(
            entry, p["url"], p["repository"], lock_timeout_s=p["lock_timeout_s"], retries=p["retries"]
        )

    def deploy(self, model: str, version: int, artifact: str | Path | None = None) -> dict:
        """Hot-swap ``version`` in (publishing ``artifact`` first if given); a JSON-safe result."""
        from pitcrew.serving.factory import deploy_version

        entry = self._entry(model)
        path = Path(artifact) if artifact else None
        return deploy_version(entry, self.swapper(entry), int(version), path, self.params["target"]).as_dict()

    def check_servable(self, model: str, artifact: str | Path) -> None:
        """Raise if this Triton cannot serve ``artifact`` (runtime, TensorRT version): before approval."""
        from pitcrew.serving.artifact import read_artifact
        from pitcrew.serving.factory import check_servable

        check_servable(self._entry(model), read_artifact(Path(artifact)), self.params["target"])

    # A weighted rollout (pitcrew/serving/weighted.py): the challenger beside the champion, by weight.
    def rollout(self, model: str):
        from pitcrew.serving.weighted import WeightedRollout

        return WeightedRollout(self.swapper(model))

    def start_rollout(self, model: str, version: int, artifact: str | Path | None = None) -> dict:
        """Load ``version`` as the challenger at weight 0 (publishing ``artifact`` first); a JSON-safe result."""
        from pitcrew.serving.factory import serving_configs

        entry = self._entry(model)
        if artifact is None:
            return self.rollout(model).start(model, int(version)).as_dict()
        front, core = serving_configs(entry, Path(artifact), self.params["target"])
        return self.rollout(model).start(model, int(version), Path(artifact), front, core).as_dict()

    def set_weight(self, model: str, weight: float, *, step: int, mode: str = "split") -> dict:
        from dataclasses import asdict

        return asdict(self.rollout(model).set_weight(model, weight, step=step, mode=mode))

    def promote_rollout(self, model: str) -> dict:
        return self.rollout(model).promote(model).as_dict()

    def abort_rollout(self, model: str) -> int | None:
        return self.rollout(model).abort(model)

    def rollout_under_way(self, model: str) -> dict | None:
        from dataclasses import asdict

        from pitcrew.rollout.routing import read_routing

        table = read_routing(self.params["repository"], model)
        return asdict(table) if table is not None else None

    def rollback(self, model: str, version: int | None = None) -> dict:
        return self.swapper(model).rollback(model, version).as_dict()

    def serving_version(self, model: str) -> int | None:
        return self.swapper(model).serving_version(model)

    @staticmethod
    def _entry(model: str) -> ModelEntry:
        from pitcrew.models_file import load_models_file

        return load_models_file(get_settings().models_file).get(model)

    def test_connection(self) -> tuple[bool, str]:
        try:
            live = self.get_conn().is_live()
        except Exception as exc:  # noqa: BLE001 - reported to the UI, not raised
            return False, f"{type(exc).__name__}: {exc}"
        return live, f"Triton at {self.params['url']} is {'live' if live else 'not live'}"


def _flag(value: Any) -> bool:
    """A boolean connection extra, which may arrive as JSON true or as the text "true"."""
    return value if isinstance(value, bool) else str(value).strip().lower() in ("1", "true", "yes")
