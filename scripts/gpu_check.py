"""Time training and every registered attack on the GPU and on the CPU of the same machine.

Attack parameters are the quickstart's (examples/quickstart.yaml, the paper's MNIST values
with reduced iterations), on the zoo's Mnist A FP and correctly classified images of the
bundled MNIST sample, so the script needs no data directory and no network. Each attack runs
once per device (after one warm-up call on 8 images); the table gives wall seconds and the
GPU speed-up. ``--budget`` seconds: CPU timings that would overrun are skipped and marked.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from annt.data import load_dataset
from annt.data.sampling import sample_correct
from annt.experiments import prepare
from annt.experiments.attack_api import attack_names, craft
from annt.zoo import load_model

REPO = Path(__file__).resolve().parents[1]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_training(device: torch.device, epochs: int) -> float:
    from annt.train import train_model

    with tempfile.TemporaryDirectory() as tmp:
        tic = time.perf_counter()
        train_model("mnist_a", "mnist-embedded", "fp", Path(tmp) / "m", epochs=epochs, seed=0, device=device,
                    progress=False)
        _sync(device)
        return time.perf_counter() - tic


def time_attack(name: str, params: dict, backend: str, device: torch.device, x: torch.Tensor,
                y: torch.Tensor, chunk: int) -> float:
    model = load_model("zoo:mnist_a@fp", device=device)
    craft(name, model, x[:8].to(device), y[:8].to(device), params, seed=0, backend=backend, chunk=8)  # warm-up
    _sync(device)
    tic = time.perf_counter()
    craft(name, model, x.to(device), y.to(device), params, seed=0, backend=backend, chunk=chunk)
    _sync(device)
    return time.perf_counter() - tic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="gpu_timings.md")
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--budget", type=float, default=220, help="seconds for everything")
    parser.add_argument("--gpu", default="cuda", help="the accelerated device (cpu: a dry run of this script)")
    args = parser.parse_args()
    start = time.perf_counter()
    gpu, cpu = torch.device(args.gpu), torch.device("cpu")
    plan = prepare(REPO / "examples" / "quickstart.yaml", device="cpu")
    configs = {a.name: a for a in plan.attacks["mnist-embedded"]}
    test = load_dataset("mnist-embedded", "test")
    chosen = sample_correct(load_model("zoo:mnist_a@fp", device=cpu), test, args.images, 0)
    x, y = chosen.x, chosen.y
    rows = []

    def left() -> float:
        return args.budget - (time.perf_counter() - start)

    g = time_training(gpu, args.epochs)
    c = time_training(cpu, args.epochs) if left() > 4 * g + 30 else float("nan")
    rows.append((f"train mnist_a FP, {args.epochs} epoch(s) of 6,000 images", g, c))
    print(rows[-1], flush=True)
    for name in attack_names():
        cfg = configs.get(name)
        params = dict(cfg.params) if cfg else {}
        backend = cfg.backend if cfg else "annt"
        g = time_attack(name, params, backend, gpu, x, y, chunk=len(x))
        c = time_attack(name, params, backend, cpu, x, y, chunk=100) if left() > 30 * g + 20 else float("nan")
        rows.append((f"{name} ({'quickstart params' if cfg else 'defaults'}), {len(x)} images", g, c))
        print(rows[-1], flush=True)
    name = torch.cuda.get_device_name(gpu) if gpu.type == "cuda" else str(gpu)
    lines = [f"GPU: {name}; CPU: {torch.get_num_threads()} torch threads;"
             f" torch {torch.__version__}. Seconds of one call (after a warm-up); nan = skipped (budget).", "",
             "| task | GPU (s) | CPU (s) | GPU speed-up |", "|---|---|---|---|"]
    for what, g, c in rows:
        lines.append(f"| {what} | {g:.2f} | {c:.2f} | {c / g:.1f}x |")
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
