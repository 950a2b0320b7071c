"""Fine-tune a sequence classifier with plain torch + transformers.

CUDA when present (bf16 autocast on Ampere and newer, else fp16 with a gradient scaler); on CPU bf16 autocast
where the cores compute bf16 natively (AVX512-BF16 or AMX), else fp32; fixed
seeds; length-grouped batches padded per batch (training/batching.py); fused AdamW; the loss read back (checked
for NaN/inf, logged to MLflow when a tracking URI is set) every ``log_every`` steps only, so the GPU never
waits for the host; checkpoint and resume; early stopping on the eval set; a wall-clock budget. The output
folder is written under a temporary name and renamed into place, so a failed run leaves no half-written model.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from pretrained import MINILM
from training.batching import EmbeddingGradBuffer, train_batches
from training.calibration import Calibration, fit_atc_threshold, fit_temperature, write_calibration
from training.checkpoint import cpu_state, load_checkpoint, save_checkpoint
from training.data import LabelledText, load_feedback_join, load_labelled
from training.errors import DataError, NonFiniteLossError
from training.inference import batched_logits, load_classifier, resolve_model_source, softmax
from training.metrics import classification_metrics
from training.mlflow_sink import MetricsSink
from training.precision import pick_device, resolve_precision


def _help(text: str) -> dict[str, str]:
    return {"help": text}


def _opt(default: Any, text: str) -> Any:
    """A config field with a default and the help ``python -m training finetune`` shows for its flag."""
    return field(default=default, metadata=_help(text))


@dataclass
class FinetuneConfig:
    """Everything one fine-tuning run needs; defaults suit MiniLM-sized encoders on a few thousand rows.

    ``metadata["help"]`` of each field is its help in ``python -m training finetune``, whose flags
    ``transformers.HfArgumentParser`` builds from this class; ``extra_tags`` is API-only.
    """

    # One line per field: its type, default and flag help read together.
    output_dir: Path = field(metadata=_help("output folder (written under a temporary name, then renamed)"))
    train_data: Path | None = _opt(None, "training data: Parquet, CSV or JSONL with text and label columns ...")
    inference_log: Path | None = _opt(None, "... or the inference log (Parquet dataset) joined with feedback")
    feedback: Path | None = _opt(None, "feedback labels joined to inference_log on request_id")
    eval_data: Path | None = _opt(None, "eval data; default: a seeded hold-out of eval_fraction of the rows")
    base_model: str = _opt(MINILM, "'minilm' (packaged), a folder, or a hub id already in the local cache")
    labels: list[str] | None = _opt(
        None, "labels in logit order; default: the base model's labels if they cover the data, else the sorted data labels"
    )
    text_column: str = _opt("text", "name of the text column")
    label_column: str = _opt("label", "name of the label column")
    # 128: the serving tokenizer's limit; short support messages rarely reach it
    max_length: int = _opt(128, "tokenizer truncation length")
    batch_size: int = _opt(32, "training batch size")
    group_by_length: bool = _opt(True, "batch rows of similar length together: less padding, faster steps")
    # 0: the main thread pads (<1 ms a batch); a worker competes for CPU cores; on CUDA it overlaps the GPU anyway
    loader_workers: int = _opt(0, "DataLoader worker processes assembling batches ahead of the loop")
    log_every: int = _opt(10, "read the loss back every N steps: log its mean to MLflow, check it is finite")
    learning_rate: float = _opt(5e-5, "AdamW peak learning rate (the usual BERT fine-tuning rate)")
    weight_decay: float = _opt(0.01, "AdamW weight decay (none on biases and LayerNorm weights)")
    warmup_ratio: float = _opt(0.1, "share of the steps with linear warm-up")
    epochs: float = _opt(3.0, "passes over the training rows")
    max_steps: int | None = _opt(None, "optimizer steps; overrides epochs when set")
    eval_fraction: float = _opt(0.1, "share of the training rows held out for eval when there is no eval_data")
    eval_every: int | None = _opt(None, "evaluate every N steps; default: once per epoch")
    early_stopping_patience: int = _opt(2, "evaluations without improvement before stopping")
    time_budget_s: float | None = _opt(None, "stop cleanly (keeping the best weights) after this many seconds")
    checkpoint_dir: Path | None = _opt(None, "checkpoint folder; default: <output_dir>.ckpt next to the output")
    resume: bool = _opt(False, "resume from the checkpoint folder if it holds one")
    seed: int = _opt(0, "random seed")
    device: Literal["auto", "cpu", "cuda"] = _opt("auto", "auto: cuda when available, else cpu")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = _opt(
        "auto", "auto: bf16 on Ampere+ GPUs and bf16-native CPUs, fp16 on older GPUs, else fp32; set to compare"
    )
    mlflow_tracking_uri: str | None = _opt(
        None, "log per-step metrics here; default: $MLFLOW_TRACKING_URI (unset: none)"
    )
    mlflow_experiment: str = _opt("pitcrew-finetune", "MLflow experiment name")
    progress: bool = _opt(True, "show a progress bar (--no-progress hides it)")
    overwrite: bool = _opt(False, "replace an existing output folder")
    # A dict is no CLI flag: python -m training leaves it out (training/__main__.py).
    extra_tags: dict[str, str] = field(default_factory=dict, metadata={"help": "MLflow run tags (API only)"})

    def __post_init__(self) -> None:
        self.output_dir = Path(self.output_dir)
        if self.train_data is None and (self.inference_log is None or self.feedback is None):
            raise DataError("give train_data, or both inference_log and feedback")
        for name, least in (("batch_size", 1), ("max_length", 1), ("log_every", 1), ("loader_workers", 0)):
            if getattr(self, name) < least:
                raise ValueError(f"{name} must be >= {least}, got {getattr(self, name)}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if not 0.0 <= self.eval_fraction < 1.0:
            raise ValueError(f"eval_fraction must be in [0, 1), got {self.eval_fraction}")


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


def load_training_data(config: FinetuneConfig) -> tuple[LabelledText, LabelledText | None]:
    """Training rows and, if configured or carved out, evaluation rows."""
    if config.train_data is not None:
        train = load_labelled(config.train_data, text_column=config.text_column, label_column=config.label_column)
    else:
        train = load_feedback_join(config.inference_log, config.feedback, text_column=config.text_column,
                                   label_column=config.label_column)
    train.require_trainable()
    if config.eval_data is not None:
        return train, load_labelled(config.eval_data, text_column=config.text_column,
                                    label_column=config.label_column)
    n_eval = int(len(train) * config.eval_fraction)
    if n_eval < 1 or len(train) - n_eval < 2:
        return train, None
    order = np.random.default_rng(config.seed).permutation(len(train))
    held, kept = order[:n_eval], order[n_eval:]
    pick = lambda idx, tag: LabelledText([train.texts[i] for i in idx], [train.labels[i] for i in idx],  # noqa: E731
                                         f"{train.source} ({tag})")
    kept_rows = pick(kept, "train split")
    kept_rows.require_trainable()
    return kept_rows, pick(held, "held-out eval split")


def choose_labels(config: FinetuneConfig, train: LabelledText) -> list[str]:
    """Configured labels, else the base model's own labels when they cover the data, else sorted data labels."""
    if config.labels:
        train.require_known_labels(config.labels)
        return list(config.labels)
    from transformers import AutoConfig

    base_config = AutoConfig.from_pretrained(resolve_model_source(config.base_model), local_files_only=True)
    base_labels = [base_config.id2label[i] for i in range(base_config.num_labels)] if base_config.id2label else []
    if base_labels and set(train.labels) <= set(base_labels) and not all(
            label.startswith("LABEL_") for label in base_labels):
        return base_labels
    return sorted(set(train.labels))


def finetune(config: FinetuneConfig) -> Path:
    """Run one fine-tuning and return the output folder (weights, tokenizer, labels.json, training_summary.json,
    and calibration.json when there is an eval set)."""
    import torch

    started = time.monotonic()
    if config.output_dir.exists() and not config.overwrite:
        raise FileExistsError(f"output folder {config.output_dir} already exists (pass overwrite)")
    train, evaluation = load_training_data(config)
    labels = choose_labels(config, train)
    if evaluation is not None:
        evaluation.require_known_labels(labels)
    seed_everything(config.seed)
    device = pick_device(config.device)
    precision = resolve_precision(config.precision, device)
    model, tokenizer = load_classifier(config.base_model, labels=labels, device=device)

    steps_per_epoch = math.ceil(len(train) / config.batch_size)
    total_steps = config.max_steps or max(1, math.ceil(config.epochs * steps_per_epoch))
    eval_every = config.eval_every or steps_per_epoch

    # fused: one kernel for all tensors instead of a Python loop over ~100 (10x faster on CPU; Trainer's default).
    # The parameters are fp32 on cpu or cuda (autocast leaves them so), which the fused kernel always supports.
    optimizer = torch.optim.AdamW(_param_groups(model, config.weight_decay), lr=config.learning_rate, fused=True)
    warmup = int(config.warmup_ratio * total_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / max(1, warmup), max(0.0, (total_steps - s) / max(1, total_steps - warmup))))
    scaler = torch.amp.GradScaler("cuda", enabled=precision == "fp16")
    autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)

    checkpoint_dir = Path(config.checkpoint_dir or f"{config.output_dir}.ckpt")
    state = {"step": 0, "best_score": None, "bad_evals": 0, "history": []}
    resumed_from_step = None  # the step a resumed run started from: the summary says so
    if config.resume and (checkpoint_dir / "checkpoint.pt").exists():
        state = load_checkpoint(checkpoint_dir, model, optimizer, scheduler, scaler)
        resumed_from_step = state["step"]
    best_state = cpu_state(model) if state["best_score"] is None else torch.load(
        checkpoint_dir / "best.pt", map_location="cpu", weights_only=True)
    # The batch order depends on (seed, epoch) only: started at the checkpoint's step, the loader replays
    # exactly the batches the interrupted run would have drawn next.
    batches = iter(train_batches(tokenizer, train.texts, train.label_ids(labels), max_length=config.max_length,
                                 batch_size=config.batch_size, seed=config.seed, start_step=state["step"],
                                 group_by_length=config.group_by_length, workers=config.loader_workers,
                                 pin_memory=device == "cuda"))
    embedding_grad = EmbeddingGradBuffer(model, enabled=device == "cpu")  # CPU: same weights, ~8 % faster steps

    sink = MetricsSink.open(config.mlflow_tracking_uri or os.environ.get("MLFLOW_TRACKING_URI"),
                            config.mlflow_experiment, params=_params(config, labels, device, precision),
                            tags=config.extra_tags)
    stop_reason = "max_steps"
    samples_seen = 0
    train_seconds = 0.0
    pending: list[Any] = []  # the per-step losses since the last read-back, still on the device
    segment_started = time.perf_counter()  # training time since the last read-back; eval and checkpoints excluded

    def read_back(step: int) -> None:  # the one host sync per interval; on CUDA it waits for all queued work
        nonlocal train_seconds
        if not pending:
            return
        values = torch.stack(pending).tolist()
        pending.clear()
        train_seconds += time.perf_counter() - segment_started
        bad = next((i for i, value in enumerate(values) if not math.isfinite(value)), None)
        if bad is not None:  # raised before any checkpoint or eval could use the poisoned weights
            raise NonFiniteLossError(
                f"loss became {values[bad]} at step {step - len(values) + bad + 1}; nothing was written")
        state["last_loss"] = values[-1]
        bar.set_postfix(loss=f"{values[-1]:.4f}")
        sink.log({"train_loss": sum(values) / len(values), "learning_rate": scheduler.get_last_lr()[0]}, step)

    from tqdm.auto import tqdm

    bar = tqdm(total=total_steps, initial=state["step"], disable=not config.progress, desc="fine-tune")
    model.train()
    try:
        while state["step"] < total_steps:
            batch = {k: v.to(device, non_blocking=True) for k, v in next(batches).items()}
            targets = batch.pop("labels")
            with torch.autocast(device_type=device, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                logits = model(**batch).logits
            loss = torch.nn.functional.cross_entropy(logits.float(), targets)
            optimizer.zero_grad(set_to_none=True)
            embedding_grad.zero()
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            pending.append(loss.detach())
            samples_seen += len(targets)
            state["step"] = step = state["step"] + 1
            bar.update(1)
            if step % config.log_every == 0 or step % eval_every == 0 or step == total_steps:
                read_back(step)  # before any eval or checkpoint: a NaN must not reach them
            if evaluation is not None and (step % eval_every == 0 or step == total_steps):
                metrics = _evaluate(model, tokenizer, evaluation, labels, config, device)
                model.train()
                sink.log({f"eval_{k}": metrics[k] for k in ("accuracy", "macro_f1", "ece")}, step)
                state["history"].append({"step": step, **{k: metrics[k] for k in ("accuracy", "macro_f1", "ece")}})
                score = (metrics["accuracy"], metrics["macro_f1"])
                if state["best_score"] is None or score > tuple(state["best_score"]):
                    state["best_score"], state["bad_evals"], state["best_step"] = list(score), 0, step
                    best_state = cpu_state(model)
                else:
                    state["bad_evals"] += 1
            if step % eval_every == 0:
                save_checkpoint(checkpoint_dir, model, optimizer, scheduler, scaler, state, best_state)
            if not pending:  # read back this step: restart the clock after the eval and checkpoint
                segment_started = time.perf_counter()
            stop = ("early_stopping" if state["bad_evals"] >= config.early_stopping_patience and step < total_steps
                    else "time_budget" if config.time_budget_s is not None
                    and time.monotonic() - started > config.time_budget_s else None)
            if stop is not None:
                read_back(step)  # the steps since the last read-back still count, and are checked
                stop_reason = stop
                break
    except BaseException:
        sink.close(status="FAILED")
        raise
    finally:
        bar.close()
        embedding_grad.release()

    final_eval = calibration = None
    if evaluation is not None:
        model.load_state_dict(best_state)
        final_logits = _eval_logits(model, tokenizer, evaluation, config, device)
        final_eval = classification_metrics(evaluation.label_ids(labels), softmax(final_logits), labels)
        # the confidence calibration the serving front applies (training/calibration.py); no eval set, no file
        truth = np.asarray(evaluation.label_ids(labels))
        probabilities = softmax(final_logits)
        calibration = replace(
            fit_temperature(final_logits, truth, fitted_on=evaluation.source),
            atc_threshold=fit_atc_threshold(probabilities.max(axis=1), probabilities.argmax(axis=1) == truth),
        )
    summary = {
        "base_model": config.base_model, "labels": labels, "n_train": len(train),
        "n_eval": len(evaluation) if evaluation is not None else 0,
        "steps": state["step"], "total_steps": total_steps, "epochs_completed": state["step"] / steps_per_epoch,
        "stop_reason": stop_reason, "resumed_from_step": resumed_from_step, "best_step": state.get("best_step"),
        "last_train_loss": state.get("last_loss"),
        "eval": final_eval, "calibration": calibration.to_dict() if calibration is not None else None,
        "history": state["history"], "device": device, "precision": precision,
        "samples_per_s": samples_seen / train_seconds if train_seconds else None,
        "wall_s": time.monotonic() - started, "seed": config.seed, "versions": _versions(),
        "mlflow_run_id": sink.run_id,
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()},
    }
    if final_eval is not None:
        sink.log({"final_eval_accuracy": final_eval["accuracy"], "final_eval_macro_f1": final_eval["macro_f1"]},
                 state["step"])
    output = _write_output(config.output_dir, model, tokenizer, labels, summary, overwrite=config.overwrite,
                           calibration=calibration)
    sink.close(status="FINISHED")
    shutil.rmtree(checkpoint_dir, ignore_errors=True)
    return output


def _param_groups(model: Any, weight_decay: float) -> list[dict]:
    """No weight decay on biases and LayerNorm weights, as in the BERT recipe."""
    decay, no_decay = [], []
    for param in model.parameters():
        (no_decay if param.ndim < 2 else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _eval_logits(model: Any, tokenizer: Any, data: LabelledText, config: FinetuneConfig, device: str) -> np.ndarray:
    return batched_logits(model, tokenizer, data.texts, batch_size=max(64, config.batch_size),
                          max_length=config.max_length, device=device)


def _evaluate(model: Any, tokenizer: Any, data: LabelledText, labels: list[str], config: FinetuneConfig,
              device: str) -> dict:
    logits = _eval_logits(model, tokenizer, data, config, device)
    return classification_metrics(data.label_ids(labels), softmax(logits), labels)


def _write_output(output_dir: Path, model: Any, tokenizer: Any, labels: list[str], summary: dict, *,
                  overwrite: bool, calibration: Calibration | None = None) -> Path:
    tmp = output_dir.parent / f".{output_dir.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model.to("cpu").save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "labels.json").write_text(json.dumps(labels))
        if calibration is not None:  # compile carries it into the artifact
            write_calibration(tmp, calibration)
        (tmp / "training_summary.json").write_text(json.dumps(summary, indent=2, default=str))
        if output_dir.exists() and overwrite:
            shutil.rmtree(output_dir)
        os.replace(tmp, output_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return output_dir


def _params(config: FinetuneConfig, labels: list[str], device: str, precision: str) -> dict[str, str]:
    keys = ("base_model", "batch_size", "learning_rate", "epochs", "max_steps", "max_length", "seed",
            "weight_decay", "warmup_ratio", "train_data", "group_by_length")
    params = {k: str(getattr(config, k)) for k in keys}
    params.update(labels=",".join(labels), device=device, precision=precision)
    return params


def _versions() -> dict[str, str]:
    import torch
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__}
