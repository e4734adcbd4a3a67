"""ANNT's attacks against the PyTorch peers (adv-lib, Foolbox, torchattacks, ART), one process.

Same zoo models (Mnist A FP and 1 bit, ResNet20 FP), same correctly classified test images,
same settings; every library that has an attack runs it, alternating between libraries for
``--repeats`` rounds (timings on a shared machine swing 2x; the fastest round is reported).
Each row: wall time, model forward/backward passes per image (counted by a wrapper, so the
peers are measured the same way), success (judged by the model on the returned images),
median L2/Linf/L0 of the successes, and each method's median L2 on the images every method
broke relative to ANNT's. ``--before REV`` also runs the ANNT attacks of a git revision
(imported as ``annt_before``) in the same rounds, for before/after tables.

    pip install -e ".[bench]" && pip install --no-deps adv-lib
    OMP_NUM_THREADS=1 python benchmarks/attacks_vs_peers.py --repeats 3 --out peers.md

On a GPU (no ART, which is NumPy; no JSMA, which torchattacks runs image by image):

    python benchmarks/attacks_vs_peers.py --device cuda --peers adv_lib,torchattacks,foolbox \
        --attacks fgsm,cw_l2,boundary --boundary-modes single --samples 1000 \
        --boundary-samples 1000 --resnet-samples 500 --repeats 2 --out gpu-peers.md
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import inspect
import io
import json
import re
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from annt.attacks import run_attack
from annt.data import load_dataset
from annt.zoo import load_model

REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- peers
def install_stand_ins() -> None:
    """adv-lib imports torchvision and visdom, Foolbox GitPython and requests; none is needed here.

    PyPI's torchvision does not load beside the CPU torch, and visdom does not build, so empty
    stand-in modules take their place before the peers are imported.
    """
    stand_ins = ("torchvision", "torchvision.models", "torchvision.transforms", "visdom", "git")
    for name in stand_ins + ("requests",):
        if name in sys.modules:
            continue
        try:
            importlib.import_module(name)
        except Exception:
            mod = types.ModuleType(name)
            mod.__path__ = []  # type: ignore[attr-defined]
            sys.modules[name] = mod
    sys.modules["torchvision"].models = sys.modules["torchvision.models"]  # type: ignore[attr-defined]
    sys.modules["visdom"].Visdom = object  # type: ignore[attr-defined]
    sys.modules["git"].Repo = object  # type: ignore[attr-defined]


def optional(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except Exception as exc:  # a missing peer leaves its cells empty
        print(f"peer {name} unavailable: {exc}", file=sys.stderr)
        return None


def load_annt_revision(rev: str) -> Any:
    """ANNT's attacks at git revision ``rev``, importable as ``annt_before`` (same process)."""
    blob = subprocess.run(
        ["git", "-C", str(REPO), "archive", rev, "src/annt"], check=True, capture_output=True
    ).stdout
    root = Path(tempfile.mkdtemp(prefix="annt_before_"))
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        tar.extractall(root, filter="data")
    src = root / "src" / "annt"
    pkg = root / "annt_before"
    src.rename(pkg)
    for f in pkg.rglob("*.py"):
        text = f.read_text()
        f.write_text(
            re.sub(r"\bannt(?=[. ])", "annt_before", text.replace('"annt.', '"annt_before.'))
        )
    sys.path.insert(0, str(root))
    return importlib.import_module("annt_before.attacks")


# ----------------------------------------------------------------------------- counting
class Counted(nn.Module):
    """Counts forward and backward passes per image of the wrapped model (any library)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.fwd = 0
        self.bwd = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.fwd += x.shape[0]
        out = self.model(x)
        if out.requires_grad:
            n = x.shape[0]

            def hook(grad: torch.Tensor) -> None:
                self.bwd += n

            out.register_hook(hook)
        return out


# ----------------------------------------------------------------------------- methods
# (model, images, true labels, goal labels) -> adversarial images, or (images, fwd, bwd) per image
Method = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor], Any]


def annt_method(attacks_pkg: Any, name: str, params: dict[str, Any], seed: int) -> Method:
    """ANNT reports its own exact per-image costs (its query model may be an inference copy)."""

    def run(model: nn.Module, x: torch.Tensor, y: torch.Tensor, goal: torch.Tensor) -> Any:
        if isinstance(model, Counted):  # ANNT counts itself; the model object stays the same
            model = model.model
        res = attacks_pkg.run_attack(name, model, x, goal, params, seed=seed)
        fwd, bwd = (
            res.forward_passes.float().mean().item(),
            res.backward_passes.float().mean().item(),
        )
        return res.adversarial, fwd, bwd

    return run


def peer_methods(attack: str, cfg: dict[str, Any], peers: dict[str, Any]) -> dict[str, Method]:
    """The peers' implementations of ``attack`` with ANNT's settings ``cfg``."""
    out: dict[str, Method] = {}
    fb, ta, al, art = (
        peers.get("foolbox"),
        peers.get("torchattacks"),
        peers.get("adv_lib"),
        peers.get("art"),
    )
    if attack == "fgsm":
        eps = cfg["eps"]
        if ta:
            out["torchattacks"] = lambda m, x, y, g: ta.FGSM(m, eps=eps)(x, y)
        if fb:
            out["foolbox"] = lambda m, x, y, g: fb.attacks.FGSM(random_start=False)(
                fb.PyTorchModel(m, bounds=(0, 1)), x, y, epsilons=eps
            )[1]
        if art:
            out["art"] = lambda m, x, y, g: _art("fgsm", m, x, y, cfg)
    elif attack == "jsma":
        if ta:
            out["torchattacks"] = lambda m, x, y, g: ta.JSMA(
                m, theta=cfg["theta"], gamma=cfg["gamma"]
            )(x, y)
        if art:
            out["art"] = lambda m, x, y, g: _art("jsma", m, x, g, cfg)
    elif attack == "uap":
        if art:
            out["art"] = lambda m, x, y, g: _art("uap", m, x, y, cfg)
    elif attack == "cw_l2":
        kw = dict(
            binary_search_steps=cfg["binary_search_steps"],
            confidence=cfg["confidence"],
            initial_const=cfg["initial_const"],
            abort_early=False,
        )
        if al:
            out["adv-lib"] = lambda m, x, y, g: al.carlini_wagner_l2(
                m, x, y, learning_rate=cfg["learning_rate"], max_iterations=cfg["max_iter"], **kw
            )
        if fb:
            out["foolbox"] = lambda m, x, y, g: fb.attacks.L2CarliniWagnerAttack(
                steps=cfg["max_iter"], stepsize=cfg["learning_rate"], **kw
            )(fb.PyTorchModel(m, bounds=(0, 1)), x, y, epsilons=None)[0]
    elif attack == "boundary":
        steps = cfg["max_iter"] if cfg.get("step_mode") == "single" else None
        if fb and steps:

            def foolbox_boundary(m: nn.Module, x: torch.Tensor, y: torch.Tensor, g) -> torch.Tensor:
                torch.manual_seed(0)
                return fb.attacks.BoundaryAttack(steps=steps)(
                    fb.PyTorchModel(m, bounds=(0, 1)), x, y, epsilons=None
                )[0]

            out["foolbox"] = foolbox_boundary
    return out


def _art(
    attack: str, m: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: dict[str, Any]
) -> torch.Tensor:
    return run_attack(
        attack, m, x, y, cfg, seed=0, backend="art", batch_size=x.shape[0]
    ).adversarial


# ----------------------------------------------------------------------------- settings
def settings(
    kind: str, cw_iter: int, cw_bss: int, boundary_steps: int, boundary_modes: str = "single,trial"
) -> dict[str, tuple[str, dict]]:
    """Row label -> (attack, ANNT parameters); peers get the same values."""
    eps = 0.1 if kind == "mnist" else 8 / 255
    rows: dict[str, tuple[str, dict]] = {
        f"FGSM eps {eps:.3g}": ("fgsm", {"eps": eps}),
        f"CW-L2 {cw_iter}x{cw_bss}": (
            "cw_l2",
            {
                "confidence": 0.0,
                "learning_rate": 0.01,
                "max_iter": cw_iter,
                "initial_const": 0.01,
                "binary_search_steps": cw_bss,
            },
        ),
        f"Boundary single {boundary_steps} steps": (
            "boundary",
            {"max_iter": boundary_steps, "step_mode": "single"},
        ),
        f"Boundary ART-faithful {max(1, boundary_steps // 30)} it": (
            "boundary",
            {"max_iter": max(1, boundary_steps // 30)},
        ),
    }
    modes = boundary_modes.split(",")
    if "single" not in modes:
        rows.pop(f"Boundary single {boundary_steps} steps")
    if "trial" not in modes:
        rows.pop(f"Boundary ART-faithful {max(1, boundary_steps // 30)} it")
    if kind == "mnist":
        rows["JSMA theta 1 gamma 0.1 (target y+1)"] = (
            "jsma",
            {"theta": 1.0, "gamma": 0.1, "targeted": True},
        )
        rows["UAP fgsm 0.01 xi 0.1, 5 passes"] = (
            "uap",
            {"attacker_eps": 0.01, "xi": 0.1, "max_iter": 5},
        )
    return rows


MODELS = {
    "Mnist A FP": ("mnist_a@fp", "mnist"),
    "Mnist A 1-bit": ("mnist_a@1bit", "mnist"),
    "ResNet20 FP": ("resnet20@fp", "cifar10"),
}


def pick_images(
    model: nn.Module, dataset: str, n: int, seed: int, pool: int = 2000
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` random test images the model classifies correctly (the paper's protocol).

    They are drawn from the first ``pool`` test images (at least ``2 n``), on the CPU.
    """
    ds = load_dataset(dataset, "test", download=False)
    x, y = ds.x.float(), ds.y.long()
    pool = max(pool, 2 * n)
    if x.max() > 1:
        x = x / 255
    x, y = x[:pool], y[:pool]
    device = next(model.parameters()).device
    with torch.no_grad():
        ok = torch.cat([model(c.to(device)).argmax(1).cpu() for c in x.split(500)]) == y
    idx = ok.nonzero()[:, 0]
    idx = idx[torch.randperm(idx.numel(), generator=torch.Generator().manual_seed(seed))[:n]]
    return x[idx].contiguous(), y[idx].contiguous()


# ----------------------------------------------------------------------------- measuring
def measure(
    model: nn.Module, method: Method, x, y, goal
) -> tuple[float, torch.Tensor, float, float]:
    counted = Counted(model).eval()
    if x.is_cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = method(counted, x, y, goal)
    if x.is_cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    if isinstance(out, tuple):
        return seconds, out[0].detach().float(), out[1], out[2]
    return seconds, out.detach().float(), counted.fwd / x.shape[0], counted.bwd / x.shape[0]


def summarise(model: nn.Module, x, y, goal_y, targeted: bool, adv: torch.Tensor) -> dict[str, Any]:
    adv = adv.clamp(0, 1)
    with torch.no_grad():
        pred = torch.cat([model(c).argmax(1) for c in adv.split(500)])
    ok = pred == goal_y if targeted else pred != y
    d = (adv - x).flatten(1)
    med = lambda v: float(v[ok].median()) if ok.any() else float("nan")  # noqa: E731
    return {
        "success": ok.float().mean().item(),
        "ok": ok,
        "l2_all": d.norm(dim=1),
        "l2": med(d.norm(dim=1)),
        "linf": med(d.abs().amax(1)),
        "l0": med((d.abs() > 1e-6).sum(1).float()),
    }


def run_row(
    model, x, y, attack, params, methods: dict[str, Method], repeats: int
) -> dict[str, Any]:
    targeted = bool(params.get("targeted"))
    goal = (y + 1) % 10 if targeted else y
    times: dict[str, list[float]] = {k: [] for k in methods}
    results: dict[str, dict[str, Any]] = {}
    if x.is_cuda:  # untimed warm-up: CUDA context, cuDNN/cuBLAS handles, lazily loaded kernels
        for method in methods.values():
            # a failing method fails again, and is reported, in the timed rounds
            with contextlib.suppress(Exception):
                measure(model, method, x[:16], y[:16], goal[:16])
    for r in range(repeats):
        order = list(methods) if r % 2 == 0 else list(reversed(list(methods)))  # alternate
        for name in order:
            if r > 0 and times[name][0] > 10 * min(t[0] for t in times.values()):
                continue  # >10x slower than the fastest: one round says enough
            try:
                seconds, adv, fwd, bwd = measure(model, methods[name], x, y, goal)
            except Exception as exc:  # e.g. Foolbox's Boundary start failing on some image
                print(f"{name} failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
                times[name].append(float("inf"))
                continue
            times[name].append(seconds)
            if r == 0:
                results[name] = summarise(model, x, y, goal, targeted, adv) | {
                    "fwd": fwd,
                    "bwd": bwd,
                }
    if not results:
        return results
    every = torch.stack([res["ok"] for res in results.values()]).all(0)
    ref = results.get("annt")
    for name, res in results.items():
        times[name] = [t for t in times[name] if t != float("inf")]
        res["seconds"] = min(times[name])
        res["seconds_median"] = statistics.median(times[name])
        if ref is not None and every.any():
            res["l2_common_ratio"] = float(
                res["l2_all"][every].median() / ref["l2_all"][every].median()
            )
        else:
            res["l2_common_ratio"] = float("nan")
        res["common"] = int(every.sum())
    for res in results.values():
        del res["ok"], res["l2_all"]
    return results


def fmt(v: float, d: int = 3) -> str:
    return "-" if v != v else f"{v:.{d}f}"


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| model | attack | library | s (best) | s (median) | fwd/img | bwd/img | success | median L2 | median Linf | median L0 | L2 / ANNT on common | ANNT time / fastest peer |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        peers = {k: v for k, v in row["results"].items() if not k.startswith("annt")}
        fastest = min((v["seconds"] for v in peers.values()), default=float("nan"))
        for lib, r in row["results"].items():
            ratio = (
                r["seconds"] / fastest
                if lib.startswith("annt") and fastest == fastest
                else float("nan")
            )
            lines.append(
                f"| {row['model']} | {row['attack']} | {lib} | {r['seconds']:.3f} | {r['seconds_median']:.3f} | "
                f"{r['fwd']:.0f} | {r['bwd']:.0f} | {r['success']:.2f} | {fmt(r['l2'])} | {fmt(r['linf'])} | "
                f"{fmt(r['l0'], 0)} | {fmt(r['l2_common_ratio'])} ({r['common']}) | {fmt(ratio, 2)} |"
            )
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=100, help="images per model (gradient attacks)")
    p.add_argument("--boundary-samples", type=int, default=30)
    p.add_argument("--resnet-samples", type=int, default=10, help="at most this many on ResNet20")
    p.add_argument("--boundary-steps", type=int, default=600, help="single-step mode steps")
    p.add_argument("--cw-iter", type=int, default=50)
    p.add_argument("--cw-bss", type=int, default=5)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--attacks", default="fgsm,jsma,uap,cw_l2,boundary")
    p.add_argument("--peers", default="adv_lib,foolbox,torchattacks,art")
    p.add_argument(
        "--boundary-modes", default="single,trial", help="Boundary rows: single and/or trial"
    )
    p.add_argument("--before", default=None, help="git revision whose ANNT also runs (annt_before)")
    p.add_argument(
        "--device",
        default="cuda" if torch.cuda.is_available() else "cpu",
        help="cpu or cuda; on cuda every library runs on the GPU (leave ART out: --peers)",
    )
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="Markdown file (JSON next to it)")
    return p.parse_args(argv)


def write_tables(args: argparse.Namespace, rows: list[dict[str, Any]], final: bool) -> str:
    """The Markdown table (with the device line) of ``rows``, also written to ``--out``."""
    device = (
        torch.cuda.get_device_name() if args.device == "cuda" else f"CPU, {args.threads} thread(s)"
    )
    table = (
        f"{device}, torch {torch.__version__}, best of {args.repeats} alternating rounds"
        + ("" if final else " (partial)")
        + "\n\n"
        + markdown(rows)
    )
    if args.out is not None:
        args.out.write_text(table)
        args.out.with_suffix(".json").write_text(
            json.dumps(
                {"args": vars(args) | {"out": str(args.out)}, "rows": rows}, indent=1, default=str
            )
        )
    return table


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.device == "cuda" and "art" in args.peers.split(","):
        print("ART runs on NumPy (CPU): left out on cuda", file=sys.stderr)
        args.peers = ",".join(p for p in args.peers.split(",") if p != "art")
    if args.device == "cuda" and "jsma" in args.attacks.split(","):
        print("torchattacks' JSMA loops over images: pass --attacks without jsma", file=sys.stderr)
    torch.set_num_threads(args.threads)
    np.random.seed(args.seed)
    install_stand_ins()
    wanted = set(args.peers.split(","))
    peers = {
        "adv_lib": optional("adv_lib.attacks") if "adv_lib" in wanted else None,
        "foolbox": optional("foolbox") if "foolbox" in wanted else None,
        "torchattacks": optional("torchattacks") if "torchattacks" in wanted else None,
        "art": optional("art") if "art" in wanted else None,
    }
    annt_pkgs = {"annt": importlib.import_module("annt.attacks")}
    if args.before:
        annt_pkgs[f"annt {args.before}"] = load_annt_revision(args.before)
    rows: list[dict[str, Any]] = []
    for label in args.models.split(","):
        zoo, kind = MODELS[label]
        model = load_model(f"zoo:{zoo}", device=args.device).eval()
        for row_name, (attack, params) in settings(
            kind, args.cw_iter, args.cw_bss, args.boundary_steps, args.boundary_modes
        ).items():
            if attack not in args.attacks.split(","):
                continue
            n = args.boundary_samples if attack == "boundary" else args.samples
            n = min(n, args.resnet_samples) if kind == "cifar10" else n
            x, y = pick_images(model, kind, n, args.seed)
            x, y = x.to(args.device), y.to(args.device)
            methods: dict[str, Method] = {
                k: annt_method(p, attack, params, args.seed) for k, p in annt_pkgs.items()
            }
            before = annt_pkgs.get(f"annt {args.before}")
            if attack == "boundary" and before and params.get("step_mode"):
                fn = before.registry.get_attack("boundary").fn
                if "step_mode" not in inspect.signature(fn).parameters:
                    methods.pop(f"annt {args.before}")  # the mode is newer than that revision
            methods |= peer_methods(attack, params, peers)
            results = run_row(model, x, y, attack, params, methods, args.repeats)
            row = {
                "model": label,
                "attack": row_name,
                "params": params,
                "samples": n,
                "results": results,
            }
            rows.append(row)
            print(markdown([row]).split("\n", 2)[2], file=sys.stderr, flush=True)
            write_tables(args, rows, final=False)  # a run cut short keeps its finished rows
    print(write_tables(args, rows, final=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
