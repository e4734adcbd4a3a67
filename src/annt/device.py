"""Device names (``cpu``, ``cuda``, ``cuda:N``, ``auto``): one parser for every command and study."""

from __future__ import annotations

import torch

from annt.errors import AnntError


def resolve_device(name: str | None) -> torch.device:
    """``None`` / ``auto``: CUDA when available, else CPU; anything else must exist here."""
    if name is None or name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise AnntError(f"unknown device {name!r}: use cpu or cuda[:N]") from None
    if device.type not in ("cpu", "cuda"):
        raise AnntError(f"unsupported device {name!r}: use cpu or cuda[:N]")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise AnntError(f"device {name} requested but no CUDA GPU is available; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise AnntError(f"device {name} does not exist: this machine has"
                            f" {torch.cuda.device_count()} CUDA device(s)")
    return device


def exact_float32(device: torch.device) -> None:
    """On CUDA, compute float32 convolutions and matmuls in full float32 precision (no TF32).

    Attacks such as Boundary and CW-L2 end on the decision boundary, where the label depends on
    the last bits of the logits; on a quantized model a rounding difference also flips activation
    levels. With TF32 (cuDNN's default on Ampere and later, ~1e-3 relative error) the attack's
    queries and the later evaluation, which may run different kernels and batch sizes, disagree
    on many such points: a CIFAR-10 study on an H200 (TF32, queries on a channels_last copy)
    scored 47% of the 1-bit ResNet20's Boundary-12 examples as not adversarial, where the CPU
    (float32) scores none.
    Training is left alone (TF32 noise does no harm there). No-op on a CPU.
    """
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False


def worker_device(device: torch.device, worker: int) -> torch.device:
    """The device of local worker ``worker``: plain ``cuda`` spreads workers over the GPUs."""
    if device.type == "cuda" and device.index is None and torch.cuda.device_count() > 1:
        return torch.device("cuda", worker % torch.cuda.device_count())
    return device


CPU_BATCH = 100  # images per attack call on a CPU: small enough for steady progress bars
GPU_BYTES_PER_VALUE = 4 * 512  # float32 x a generous factor for activations, gradients, attack state


def auto_batch(device: torch.device, values_per_image: int, images: int) -> int:
    """Images per attack call: ``CPU_BATCH`` on a CPU; on a GPU as many as half its free memory holds.

    The factor is deliberately pessimistic (iterative attacks keep several copies of the
    batch); the result never exceeds ``images`` (the study's sample count).
    """
    if device.type != "cuda":
        return CPU_BATCH
    free, _ = torch.cuda.mem_get_info(device)
    fits = int(free * 0.5 // (values_per_image * GPU_BYTES_PER_VALUE))
    return max(1, min(images, fits))
