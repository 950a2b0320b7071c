"""Where and in which precision a fine-tune runs: the device, and the autocast dtype that device computes natively."""

from __future__ import annotations


def pick_device(requested: str) -> str:
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but no CUDA device is available")
    return requested


def cpu_computes_bf16() -> bool:
    """Whether this CPU has bf16 instructions (AVX512-BF16 or AMX), where oneDNN runs bf16 matmuls at about
    twice the fp32 rate. Without them bf16 is emulated and slower than fp32. Asked through ``torch.cpu``'s
    private probes (there is no public one); a torch without them answers False, i.e. fp32."""
    import torch

    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(probe() for probe in probes if probe is not None)


def pick_precision(device: str, capability: tuple[int, int] | None = None, *, cpu_bf16: bool | None = None) -> str:
    """The autocast precision of a fine-tune on ``device``: ``fp32``, ``bf16`` or ``fp16``.

    bf16 (no gradient scaler needed) only where the hardware computes it natively: a GPU of compute
    capability 8.0 (Ampere) and newer, or a CPU with AVX512-BF16 or AMX (:func:`cpu_computes_bf16`; on a
    2-core AVX512-BF16 machine a MiniLM step is ~1.4x faster, with the same eval accuracy in
    ``benchmarks/finetune.py``). Older GPUs get fp16 with a scaler, other CPUs fp32. The weights and the
    optimizer stay fp32 either way: autocast only runs the matmuls in bf16.
    ``torch.cuda.is_bf16_supported()`` is not asked: it answers true on Turing, where bf16 is emulated and
    slower than fp32.

    :param capability: ``(major, minor)``; default: the current CUDA device's.
    :param cpu_bf16: whether the CPU computes bf16; default: :func:`cpu_computes_bf16`.
    """
    if device != "cuda":
        return "bf16" if (cpu_computes_bf16() if cpu_bf16 is None else cpu_bf16) else "fp32"
    if capability is None:
        import torch

        capability = torch.cuda.get_device_capability()
    return "bf16" if capability[0] >= 8 else "fp16"


def resolve_precision(requested: str, device: str) -> str:
    """``requested`` (``fp32``, ``bf16``, ``fp16``), or :func:`pick_precision`'s for ``auto``; fp16 (with its
    gradient scaler) needs CUDA."""
    if requested == "auto":
        return pick_precision(device)
    if requested == "fp16" and device != "cuda":
        raise ValueError(f"precision {requested} needs a CUDA device (got device {device})")
    return requested
