"""Python-backend stand-in for a ``<name>_core`` model of Triton's onnxruntime backend.

The bundled Triton has only the Python backend, so local tests and benchmarks serve the pair layout with
this model in the core's place. Its contract is the core's own config (generated from the artifact:
input names, int64 ids ``[batch, sequence]``, float32 logits ``[batch, labels]``, max batch size) and it
runs the same ``model.onnx`` with ONNX Runtime; on a Triton with the onnxruntime backend only the core's
``platform`` differs (docs/design.md, "Serving").
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

#: Niceness of the loading thread: a core version loads beside the serving one during a hot swap.
LOAD_NICENESS = 19


def _lower_priority() -> None:
    """Linux niceness is per thread: lower the calling thread's priority where permitted."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), LOAD_NICENESS)
    except OSError:
        pass


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.input_names = [i["name"] for i in config["input"]]
        self.output_name = config["output"][0]["name"]
        folder = Path(args["model_repository"]) / str(args["model_version"])
        loaded: dict = {}
        # ONNX Runtime's session creation is the heavy part: run it at low CPU priority (per-thread
        # niceness on Linux) so the serving version keeps the CPU during a swap.
        thread = threading.Thread(
            target=self._load, args=(folder / "model.onnx", int(params.get("ort_threads", "1")), loaded)
        )
        thread.start()
        thread.join()
        if "error" in loaded:
            raise loaded["error"]
        self.session = loaded["session"]

    def _load(self, path: Path, threads: int, loaded: dict) -> None:
        _lower_priority()
        try:
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            warm = {name: np.ones((1, 4), dtype=np.int64) for name in self.input_names}
            session.run([self.output_name], warm)  # first-run allocations here, not in a served request
            loaded["session"] = session
        except BaseException as exc:  # re-raised in initialize: Triton reports the load as failed
            loaded["error"] = exc

    def finalize(self) -> None:
        # Unloaded while the new version serves on the same cores: exit at the lowest priority.
        _lower_priority()
        self.session = None

    def execute(self, requests: list) -> list:
        # Requests from different front batches have different sequence lengths, so each runs alone.
        responses = []
        for request in requests:
            try:
                feeds = {
                    name: pb_utils.get_input_tensor_by_name(request, name).as_numpy().astype(np.int64, copy=False)
                    for name in self.input_names
                }
                logits = self.session.run([self.output_name], feeds)[0].astype(np.float32, copy=False)
                responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(self.output_name, logits)]))
            except Exception as exc:  # this request fails alone
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(f"core: {exc}")))
        return responses
