"""ANNT's attacks against ART's on the same models, images, hyperparameters and machine.

Trains Mnist A at full precision and 1 bit (or loads checkpoints), takes the same N correctly
classified MNIST test images for each model, runs every attack with the paper's settings
through ANNT and through ART, and reports wall time, speed ratio, adversarial accuracy,
distortion of the successful examples and model passes as a Markdown table and JSON.

    python benchmarks/attacks_vs_art.py --samples 100 --out bench.md
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from annt.attacks import run_attack
from annt.models import create_model


def paper_settings(cw_iter: int, cw_bss: int) -> dict[str, tuple[str, dict[str, Any]]]:
    """Row label -> (attack, parameters): the paper's MNIST settings (NOTES section 4)."""
    return {
        "FGSM eps 0.1": ("fgsm", {"eps": 0.1}),
        "JSMA theta 1 gamma 0.1": ("jsma", {"theta": 1.0, "gamma": 0.1}),
        "UAP fgsm 0.01 xi 0.1": ("uap", {"attacker_eps": 0.01, "xi": 0.1, "max_iter": 30}),
        f"CW-L2 {cw_iter}x{cw_bss}": (
            "cw_l2",
            {
                "confidence": 0.0,
                "learning_rate": 0.01,
                "max_iter": cw_iter,
                "initial_const": 0.001,
                "binary_search_steps": cw_bss,
            },
        ),
        "Boundary 15 it": ("boundary", {"max_iter": 15}),
        "Boundary 100 it": ("boundary", {"max_iter": 100}),
    }


# ---------------------------------------------------------------------------- data and models
def default_data_dir() -> Path | None:
    """``$ANNT_DATA_DIR`` wins (None lets annt.data read it); else the shared data folder."""
    if os.environ.get("ANNT_DATA_DIR"):
        return None
    shared = Path(__file__).resolve().parents[2] / "shared" / "data"
    return shared if shared.is_dir() else None


def load_mnist(split: str, data_dir: Path | None) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST via ``annt.data`` when available, else straight from the IDX files."""
    data_dir = data_dir or default_data_dir()
    try:
        from annt.data import load_dataset

        ds = load_dataset("mnist", split, data_dir=data_dir, download=False)
        return ds.x.float(), ds.y.long()
    except ImportError:
        pass
    folder = Path(data_dir or os.environ.get("ANNT_DATA_DIR", ".")) / "mnist"
    prefix = "train" if split == "train" else "t10k"
    with gzip.open(folder / f"{prefix}-images-idx3-ubyte.gz") as f:
        x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 1, 28, 28)
    with gzip.open(folder / f"{prefix}-labels-idx1-ubyte.gz") as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8)
    return torch.from_numpy(x / np.float32(255)), torch.from_numpy(y.astype(np.int64))


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, seed: int) -> None:
    """The paper's recipe: Adam 1e-3, batch 128, cross-entropy."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(x.shape[0], generator=gen).split(128):
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()


def get_model(bits: str, checkpoint: Path | None, train_xy, epochs: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    model = create_model("mnist_a", bits=bits)
    if checkpoint is not None:
        if checkpoint.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(checkpoint))
        else:
            state = torch.load(checkpoint, map_location="cpu")
        model.load_state_dict(state.get("model", state) if isinstance(state, dict) else state)
    else:
        train(model, *train_xy, epochs=epochs, seed=seed)
    return model.eval()


def pick_correct(model: nn.Module, x: torch.Tensor, y: torch.Tensor, n: int, seed: int):
    """N random test images the model classifies correctly (the paper's protocol)."""
    with torch.no_grad():
        ok = torch.cat([model(c).argmax(1) for c in x.split(1000)]) == y
    idx = ok.nonzero()[:, 0]
    idx = idx[torch.randperm(idx.numel(), generator=torch.Generator().manual_seed(seed))[:n]]
    return x[idx].clone(), y[idx].clone(), ok.float().mean().item()


# ---------------------------------------------------------------------------- measuring
@dataclass
class Side:
    seconds: float
    adv_accuracy: float
    success_rate: float
    l2: float
    linf: float
    l0: float
    passes: float  # forward + backward passes per sample (ART: counted in total, averaged)


def measure(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    attack: str,
    params: dict[str, Any],
    backend: str,
    seed: int,
    batch_size: int,
) -> tuple[Side, torch.Tensor, torch.Tensor]:
    """Run one side; returns its summary, its success mask and its adversarial batch."""
    start = time.perf_counter()
    res = run_attack(attack, model, x, y, params, seed=seed, backend=backend, batch_size=batch_size)
    seconds = time.perf_counter() - start
    with torch.no_grad():
        wrong = model(res.adversarial).argmax(1) != y
    d = (res.adversarial - x).flatten(1)

    def mean(v: torch.Tensor) -> float:
        return v[wrong].float().mean().item() if wrong.any() else float("nan")

    side = Side(
        seconds=seconds,
        adv_accuracy=1 - wrong.float().mean().item(),
        success_rate=wrong.float().mean().item(),
        l2=mean(d.norm(dim=1)),
        linf=mean(d.abs().amax(1)),
        l0=mean((d.abs() > 1e-6).sum(1)),
        passes=(res.forward_passes + res.backward_passes).float().mean().item(),
    )
    return side, wrong, res.adversarial


def common_l2(x, adv_a, adv_b, ok_a, ok_b) -> tuple[float, float]:
    """Mean L2 of both sides over the samples both made adversarial (a like-for-like view)."""
    both = ok_a & ok_b
    if not both.any():
        return float("nan"), float("nan")
    la = (adv_a - x).flatten(1).norm(dim=1)[both].mean().item()
    lb = (adv_b - x).flatten(1).norm(dim=1)[both].mean().item()
    return la, lb


# ---------------------------------------------------------------------------- report
def fmt(v: float, digits: int = 3) -> str:
    return "-" if v != v else f"{v:.{digits}f}"


def markdown(rows: list[dict[str, Any]], header: str) -> str:
    lines = [
        header,
        "",
        "| model | attack | ANNT s | ART s | speed-up | adv. acc ANNT / ART | "
        "mean L2 ANNT / ART | L2 on common successes | mean Linf ANNT / ART | "
        "mean L0 ANNT / ART | passes/sample ANNT / ART |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        a, b = r["annt"], r["art"]
        lines.append(
            f"| {r['model']} | {r['attack']} | {a['seconds']:.2f} | {b['seconds']:.2f} | "
            f"{r['speedup']:.1f}x | {a['adv_accuracy']:.3f} / {b['adv_accuracy']:.3f} | "
            f"{fmt(a['l2'])} / {fmt(b['l2'])} | {fmt(r['common_l2'][0])} / "
            f"{fmt(r['common_l2'][1])} | {fmt(a['linf'])} / {fmt(b['linf'])} | "
            f"{fmt(a['l0'], 1)} / {fmt(b['l0'], 1)} | {a['passes']:.0f} / {b['passes']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def warm_up(x: torch.Tensor, y: torch.Tensor) -> None:
    """Import ART and touch both code paths once so that no timing includes start-up costs."""
    model = create_model("mnist_a").eval()
    for backend in ("annt", "art"):
        run_attack("fgsm", model, x, y, {"eps": 0.1}, backend=backend)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=500, help="correctly classified test images")
    p.add_argument("--data-dir", type=Path, default=None, help="folder that contains mnist/")
    p.add_argument("--epochs", type=int, default=1, help="training epochs when no checkpoint")
    p.add_argument("--train-size", type=int, default=60000, help="training images used")
    p.add_argument("--fp-checkpoint", type=Path, default=None)
    p.add_argument("--q-checkpoint", type=Path, default=None, help="1-bit Mnist A state dict")
    p.add_argument(
        "--attacks", default="fgsm,jsma,uap,cw_l2,boundary", help="comma-separated subset"
    )
    p.add_argument("--cw-iter", type=int, default=100)
    p.add_argument("--cw-bss", type=int, default=9, help="CW binary search steps")
    p.add_argument(
        "--batch-size",
        type=int,
        default=100,
        help="batch size of both ANNT and ART (ART's own defaults are 1 to 64)",
    )
    p.add_argument("--threads", type=int, default=1, help="torch threads for both sides")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="Markdown file (JSON next to it)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    wanted = {a.strip() for a in args.attacks.split(",")}
    settings = {
        k: v for k, v in paper_settings(args.cw_iter, args.cw_bss).items() if v[0] in wanted
    }
    x_test, y_test = load_mnist("test", args.data_dir)
    train_xy = None
    if args.fp_checkpoint is None or args.q_checkpoint is None:
        x_tr, y_tr = load_mnist("train", args.data_dir)
        train_xy = (x_tr[: args.train_size], y_tr[: args.train_size])
    rows: list[dict[str, Any]] = []
    warm_up(x_test[:4], y_test[:4])
    for bits, ckpt in (("fp", args.fp_checkpoint), ("1", args.q_checkpoint)):
        t0 = time.perf_counter()
        model = get_model(bits, ckpt, train_xy, args.epochs, args.seed)
        x, y, acc = pick_correct(model, x_test, y_test, args.samples, args.seed)
        label = "Mnist A FP" if bits == "fp" else "Mnist A 1-bit"
        print(
            f"{label}: clean accuracy {acc:.4f}, {x.shape[0]} samples "
            f"(ready in {time.perf_counter() - t0:.0f}s)",
            file=sys.stderr,
            flush=True,
        )
        for row_name, (attack, params) in settings.items():
            annt, ok_a, adv_a = measure(
                model, x, y, attack, params, "annt", args.seed, args.batch_size
            )
            art, ok_b, adv_b = measure(
                model, x, y, attack, params, "art", args.seed, args.batch_size
            )
            row = {
                "model": label,
                "attack": row_name,
                "params": params,
                "clean_accuracy": acc,
                "samples": x.shape[0],
                "annt": asdict(annt),
                "art": asdict(art),
                "speedup": art.seconds / max(annt.seconds, 1e-9),
                "common_l2": common_l2(x, adv_a, adv_b, ok_a, ok_b),
            }
            rows.append(row)
            print(markdown([row], "").strip().splitlines()[-1], file=sys.stderr, flush=True)
    header = (
        f"{args.samples} correctly classified MNIST test images per model, batch size "
        f"{args.batch_size}, {args.threads} thread(s), torch {torch.__version__}"
    )
    table = markdown(rows, header)
    print(table)
    if args.out is not None:
        args.out.write_text(table)
        args.out.with_suffix(".json").write_text(
            json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}, indent=2)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
