"""Training throughput (images/s): an earlier ANNT revision vs this working tree, in one run.

    python benchmarks/train_throughput.py [--before 87b8c39] [--seconds 8] [--rounds 3]
        [--threads 1,2] [--variants after,channels_last] [--out results.json]

Both versions are imported into this one process (the earlier one from ``git archive REV src``
unpacked into a temporary folder; each keeps its own modules), so they train the same images
on the same machine, and every round times every variant back to back: a slower stretch of a
shared machine hits all of them, and the per-round ratios cancel it. Each timing is reported
by the wall clock and by the process's CPU time (on a machine shared with other jobs the
latter is the steadier; with 2 threads it also counts a thread's wait for the other).

What one step is: exactly the loop body of each version's ``fit`` on the real training split
(CIFAR-10 for ResNet20, MNIST for Mnist A, from ``--data-dir`` / ``$ANNT_DATA_DIR``): gather a
batch from the in-memory set, augment it as the recipe says (pad-crop-flip for ResNet20), the
forward pass, loss (+ Mnist A's L2 term), backward, optimiser step. Batch sizes: the recipes'
(128) unless ``--batch``. Variants: ``before`` (the old revision), ``after`` (this tree, speed
options off), ``channels_last``, ``compile`` (implies channels_last; the warm-up compile is not
timed; only at ``--compile-threads``, each a fresh compile), ``bf16``.

Before timing, ``--check-steps`` steps of ``before`` and ``after`` from the same seed are
compared: the weights must be bit-identical (printed as ``identical``).
"""

from __future__ import annotations

import argparse
import importlib
import io
import json
import platform
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import torch
from torch.nn import functional as F

REPO = Path(__file__).resolve().parents[1]
MODELS = (("resnet20", "fp"), ("resnet20", "1"), ("mnist_a", "fp"), ("mnist_a", "1"))


def import_annt(src: Path) -> SimpleNamespace:
    """Import the ``annt`` package found in ``src`` and return the parts a training step uses.

    Earlier-imported ``annt`` modules are removed from ``sys.modules`` first; the functions
    returned keep their own module globals, so two versions live side by side afterwards.
    """
    for name in [m for m in sys.modules if m == "annt" or m.startswith("annt.")]:
        del sys.modules[name]
    sys.path.insert(0, str(src))
    try:
        importlib.invalidate_caches()
        ns = SimpleNamespace(
            trainer=importlib.import_module("annt.train.trainer"),
            recipes=importlib.import_module("annt.train.recipes"),
            models=importlib.import_module("annt.models"),
            data=importlib.import_module("annt.data"),
        )
        # modules a step could import lazily, loaded now while this version is on the path
        for extra in ("annt.store.checkpoint", "annt.models.inference"):
            importlib.import_module(extra)
        ns.path = str(Path(ns.trainer.__file__).resolve())
        return ns
    finally:
        sys.path.remove(str(src))


def checkout(rev: str, into: Path) -> Path:
    """``git archive REV src`` unpacked under ``into`` (the repository itself is not touched)."""
    blob = subprocess.run(["git", "archive", rev, "src"], cwd=REPO, check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


class Runner:
    """One variant's model, optimiser and data, stepping as that version's ``fit`` does."""

    def __init__(self, v: SimpleNamespace, variant: str, model: str, bits: str, x, y, batch: int | None):
        self.v, self.variant = v, variant
        opts = {"channels_last": variant in ("channels_last", "compile"), "compile": variant == "compile",
                "bf16": variant == "bf16"}
        base = v.recipes.default_recipe(model)
        fields = {k: val for k, val in opts.items() if val}
        if batch:
            fields["batch_size"] = batch
        self.recipe = base.model_copy(update=fields)
        torch.manual_seed(0)
        self.model = v.models.create_model(model, bits, in_channels=x.shape[1], image_size=x.shape[2]).train()
        self.optimizer = v.trainer._optimizer(self.model, self.recipe)
        self.regularizer = getattr(self.model, "regularization_loss", None)
        self.new = hasattr(v.trainer, "_train_step")
        if self.new:
            self.images = v.trainer.compact_images(x)
            self.forward = v.trainer._training_forward(self.model, self.recipe)
        else:
            self.images = x
        self.labels = y
        self.gen = torch.Generator().manual_seed(1)
        self.order = torch.randperm(len(y), generator=self.gen)
        self.pos = 0

    def _indices(self) -> torch.Tensor:
        bs = self.recipe.batch_size
        if self.pos + bs > len(self.order):
            self.pos = 0
        idx = self.order[self.pos : self.pos + bs]
        self.pos += bs
        return idx

    def step(self) -> None:
        r, t = self.recipe, self.v.trainer
        idx = self._indices()
        if self.new:
            x, y = t._batch(self.images, self.labels, idx, r, self.gen, torch.device("cpu"))
            t._train_step(self.forward, self.optimizer, x, y, r, None, self.regularizer)
            return
        # the loop body of fit() at 87b8c39 (no teacher)
        x, y = self.images[idx], self.labels[idx]
        if r.augment:
            x = t.augment_batch(x, self.gen)
        if r.random_shift:
            x = t.random_crop(x, self.gen, r.random_shift)
        logits = self.model(x)
        loss = F.cross_entropy(logits, y, label_smoothing=r.label_smoothing)
        if self.regularizer is not None:
            loss = loss + self.regularizer()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

    def timed(self, seconds: float) -> tuple[float, float]:
        """Images/s over about ``seconds``: by the wall clock, and by this process's CPU time
        (steadier on a shared machine: time the other jobs take from us is not counted)."""
        done, tic, cpu = 0, time.perf_counter(), time.process_time()
        while time.perf_counter() - tic < seconds or done < 2:
            self.step()
            done += 1
        images = done * self.recipe.batch_size
        return images / (time.perf_counter() - tic), images / (time.process_time() - cpu)


def identical(before: Runner, after: Runner, steps: int) -> bool:
    for runner in (before, after):
        torch.manual_seed(1)  # dropout draws from the global generator
        for _ in range(steps):
            runner.step()
    a, b = before.model.state_dict(), after.model.state_dict()
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", default="87b8c39", help="git revision to compare against")
    parser.add_argument("--seconds", type=float, default=8.0, help="timed training per variant and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", default="1,2", help="comma-separated torch thread counts")
    parser.add_argument("--variants", default="after,channels_last",
                        help="besides 'before': after, channels_last, compile, bf16")
    parser.add_argument("--compile-threads", default="1", help="thread counts at which 'compile' is timed")
    parser.add_argument("--models", default=",".join(f"{m}:{b}" for m, b in MODELS))
    parser.add_argument("--batch", type=int, default=None, help="batch size (default: the recipe's)")
    parser.add_argument("--check-steps", type=int, default=3)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        old = import_annt(checkout(args.before, Path(tmp)))
        new = import_annt(REPO / "src")
        print(f"before: {args.before} ({old.path})\nafter: working tree ({new.path})", flush=True)
        mnist = new.data.load_dataset("mnist", "train", args.data_dir, download=False)
        cifar = new.data.load_dataset("cifar10", "train", args.data_dir, download=False)
        sets = {"mnist_a": (mnist.x, mnist.y), "resnet20": (cifar.x, cifar.y)}
        variants = ["before", *[s for s in args.variants.split(",") if s]]
        rows = []
        for spec in args.models.split(","):
            model, bits = spec.split(":")
            x, y = sets[model]
            torch.set_num_threads(1)
            same = identical(Runner(old, "before", model, bits, x, y, args.batch),
                             Runner(new, "after", model, bits, x, y, args.batch), args.check_steps)
            print(f"{model} {bits}: {args.check_steps} steps before vs after (options off):"
                  f" {'identical' if same else 'DIFFERENT'}", flush=True)
            runners = {v: Runner(old if v == "before" else new, v, model, bits, x, y, args.batch)
                       for v in variants if v != "compile"}
            for threads in (int(t) for t in args.threads.split(",")):
                torch.set_num_threads(threads)
                here = [v for v in variants if v != "compile" or str(threads) in args.compile_threads.split(",")]
                if "compile" in here:  # compiled kernels keep the thread count they were built for
                    runners["compile"] = Runner(new, "compile", model, bits, x, y, args.batch)
                for v in here:  # warm-up (and compilation) outside the timing
                    tic = time.perf_counter()
                    runners[v].timed(0.0)
                    if v == "compile":
                        print(f"compile warm-up {time.perf_counter() - tic:.0f} s", flush=True)
                per = {v: [] for v in here}
                for _ in range(args.rounds):
                    for v in here:
                        per[v].append(runners[v].timed(args.seconds))
                for v in here:
                    wall = [a / b for (a, _), (b, _) in zip(per[v], per["before"])]
                    cpu = [a / b for (_, a), (_, b) in zip(per[v], per["before"])]
                    rows.append({
                        "model": model, "bits": bits, "threads": threads, "variant": v,
                        "batch": runners[v].recipe.batch_size,
                        "images_per_s": round(statistics.median(w for w, _ in per[v]), 1),
                        "ratio_vs_before": round(statistics.median(wall), 2),
                        "ratio_range": [round(min(wall), 2), round(max(wall), 2)],
                        "cpu_images_per_s": round(statistics.median(c for _, c in per[v]), 1),
                        "cpu_ratio_vs_before": round(statistics.median(cpu), 2),
                        "cpu_ratio_range": [round(min(cpu), 2), round(max(cpu), 2)],
                        "identical_when_off": same,
                    })
                    print(json.dumps(rows[-1]), flush=True)
    print("\n| model | bits | threads | variant | images/s (wall) | x before (median, range) |"
          " images/s (CPU time) | x before (median, range) |\n|---|---|---|---|---|---|---|---|")
    for r in rows:
        lo, hi = r["ratio_range"]
        clo, chi = r["cpu_ratio_range"]
        print(f"| {r['model']} | {r['bits']} | {r['threads']} | {r['variant']} | {r['images_per_s']} |"
              f" {r['ratio_vs_before']} ({lo}-{hi}) | {r['cpu_images_per_s']} | {r['cpu_ratio_vs_before']} ({clo}-{chi}) |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"machine": platform.processor() or platform.machine(), "torch": torch.__version__,
                       "before": args.before, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
