"""ANNT's Square, HopSkipJump and FMN against their reference implementations, in one run.

Same zoo model (Mnist A, FP and 1 bit), same N correctly classified MNIST test images, same
budget, one thread. Square is compared with torchattacks' ``Square`` (its ``n_queries`` does
not count the starting query, so it gets ``max_queries - 1``), HopSkipJump with ART's
``HopSkipJump`` (ART's unseeded starting-noise generator is seeded here for repeatability),
FMN with adv-lib's ``fmn`` (stand-in modules for its unused torchvision/visdom imports).
Reports wall time, the speed ratio (reference / ANNT), success rate and median distance of the
successful examples as a Markdown table.

    pip install --no-deps torchattacks==3.5.1 adv-lib==0.2.8   # references; they'd pull torchvision
    OMP_NUM_THREADS=1 python benchmarks/square_hsj_vs_reference.py --samples 100 --attacks square,fmn
    OMP_NUM_THREADS=1 python benchmarks/square_hsj_vs_reference.py --samples 100 --attacks hop_skip_jump --seeds 1
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from annt.attacks import run_attack
from annt.data import load_dataset
from annt.zoo import load_model


def samples(model: torch.nn.Module, n: int, data_dir: str | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The first n MNIST test images the model classifies correctly."""
    ds = load_dataset("mnist", "test", data_dir=data_dir, download=False)
    x, y = ds.x[: 4 * n].float(), ds.y[: 4 * n].long()
    with torch.no_grad():
        ok = model(x).argmax(1) == y
    return x[ok][:n].clone(), y[ok][:n].clone()


def stats(model, x, y, adv, p: float) -> tuple[float, float]:
    with torch.no_grad():
        hit = model(adv).argmax(1) != y
    dist = (adv - x).flatten(1).norm(p=p, dim=1)[hit]
    return hit.float().mean().item(), dist.median().item() if hit.any() else float("nan")


def timed(fn: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def torchattacks_square(model, x, y, eps, norm, queries, seed):
    import torchattacks

    torch.manual_seed(seed)
    atk = torchattacks.Square(model, norm="Linf" if norm == "inf" else "L2", eps=eps,
                              n_queries=queries - 1, seed=seed)
    return atk(x, y)


def art_hsj(model, x, norm, max_iter, init_eval, seed):
    import art.attacks.evasion.hop_skip_jump as hsj
    from art.estimators.classification import PyTorchClassifier

    from annt.attacks.art_backend import CountingModel

    plain, seeds = np.random.RandomState, itertools.count(seed * 100000)
    hsj.np.random.RandomState = lambda *a: plain(*a) if a else plain(next(seeds))
    try:
        np.random.seed(seed)
        clf = PyTorchClassifier(CountingModel(model), loss=torch.nn.CrossEntropyLoss(),
                                input_shape=tuple(x.shape[1:]), nb_classes=10, clip_values=(0.0, 1.0))
        atk = hsj.HopSkipJump(clf, norm=2 if norm == "2" else np.inf, max_iter=max_iter,
                              init_eval=init_eval, verbose=False)
        return torch.from_numpy(atk.generate(x.numpy())).float()
    finally:
        hsj.np.random.RandomState = plain


class _Stub(types.ModuleType):
    """Empty module whose attributes are empty modules: adv-lib's unused torchvision imports."""

    def __getattr__(self, name: str) -> types.ModuleType:
        if name.startswith("__"):
            raise AttributeError(name)
        sub = _Stub(f"{self.__name__}.{name}")
        setattr(self, name, sub)
        sys.modules[sub.__name__] = sub
        return sub


def adv_lib_fmn(model, x, y, norm, steps):
    for name in ("torchvision", "visdom"):
        sys.modules.setdefault(name, _Stub(name))
    from adv_lib.attacks import fmn

    return fmn(model, x, y, norm=2 if norm == "2" else float("inf"), steps=steps)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=100)
    ap.add_argument("--square-queries", type=int, default=200)
    ap.add_argument("--hsj-iter", type=int, default=5)
    ap.add_argument("--hsj-init-eval", type=int, default=50)
    ap.add_argument("--fmn-steps", type=int, default=100)
    ap.add_argument("--seeds", type=int, default=2, help="runs per row (pooled statistics)")
    ap.add_argument("--attacks", default="square,hop_skip_jump,fmn", help="comma-separated subset")
    ap.add_argument("--data-dir", default=os.environ.get("ANNT_DATA_DIR"))
    ap.add_argument("--out", type=Path, default=None, help="also write the table here")
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = []
    cases = [
        ("square", "1bit", "inf", 0.2), ("square", "fp", "2", 2.0),
        ("hop_skip_jump", "fp", "2", None), ("hop_skip_jump", "1bit", "inf", None),
        ("fmn", "fp", "2", None), ("fmn", "1bit", "2", None),
    ]
    wanted = set(args.attacks.split(","))
    for attack, bits, norm, eps in [c for c in cases if c[0] in wanted]:
        model = load_model(f"zoo:mnist_a@{bits}")
        x, y = samples(model, args.samples, args.data_dir)
        p = 2.0 if norm == "2" else float("inf")
        ours_t = ref_t = 0.0
        ours_s, ref_s = [], []
        for seed in range(args.seeds):
            if attack == "square":
                params = {"eps": eps, "norm": norm, "max_queries": args.square_queries}
                ref, t = timed(lambda: torchattacks_square(model, x, y, eps, norm, args.square_queries, seed))  # noqa: B023
                label = f"Square {norm} eps {eps}, {args.square_queries} queries"
                ref_name = "torchattacks 3.5.1"
                p_stat = 2.0  # Linf distance is eps by construction; L2 is informative
            elif attack == "fmn":
                params = {"norm": norm, "steps": args.fmn_steps}
                ref, t = timed(lambda: adv_lib_fmn(model, x, y, norm, args.fmn_steps))  # noqa: B023
                label = f"FMN {norm}, {args.fmn_steps} steps"
                ref_name = "adv-lib 0.2.8"
                p_stat = p
            else:
                params = {"norm": norm, "max_iter": args.hsj_iter, "init_eval": args.hsj_init_eval}
                ref, t = timed(lambda: art_hsj(model, x, norm, args.hsj_iter, args.hsj_init_eval, seed))  # noqa: B023
                label = f"HopSkipJump {norm}, {args.hsj_iter} it, init_eval {args.hsj_init_eval}"
                ref_name = "ART"
                p_stat = p
            ref_t += t
            ref_s.append(stats(model, x, y, ref, p_stat))
            res, t = timed(lambda: run_attack(attack, model, x, y, params, seed=seed).adversarial)  # noqa: B023
            ours_t += t
            ours_s.append(stats(model, x, y, res, p_stat))
        mean = lambda v: sum(v) / len(v)  # noqa: E731
        rows.append(
            f"| {label} | Mnist A {bits} | {ref_name} | {ref_t:.1f} | {ours_t:.1f} | {ref_t / ours_t:.2f} "
            f"| {mean([s for s, _ in ref_s]):.3f} | {mean([s for s, _ in ours_s]):.3f} "
            f"| {mean([d for _, d in ref_s]):.3f} | {mean([d for _, d in ours_s]):.3f} |"
        )
        print(rows[-1], flush=True)
    head = (
        f"{args.samples} images, {args.seeds} seeds per row (times summed, statistics averaged), 1 thread\n\n"
        "| attack | model | reference | ref. s | ANNT s | speed-up | ref. success | ANNT success "
        "| ref. median dist. | ANNT median dist. |\n|---|---|---|---|---|---|---|---|---|---|"
    )
    table = head + "\n" + "\n".join(rows) + "\n"
    print(table)
    if args.out:
        args.out.write_text(table)


if __name__ == "__main__":
    main()
