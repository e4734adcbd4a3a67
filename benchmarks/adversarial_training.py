"""Training throughput (images/s) of adversarial training vs standard training, in one run.

    python benchmarks/adversarial_training.py [--model mnist_a] [--bits fp] [--dataset mnist]
        [--methods none,pgd,fgsm_rs,trades] [--steps 10] [--eps 0.3] [--seconds 8] [--rounds 3]
        [--threads 1] [--out results.json]

One step is the loop body of ``annt.train.trainer.fit``: gather a batch (the recipe's size),
craft its adversarial examples (``annt.train.adversarial``, ``--steps`` PGD / TRADES steps;
FGSM-RS takes one), forward, loss, backward, optimiser step. Every round times every method
back to back (a slower stretch of a shared machine hits all of them; the per-round ratios
cancel it); each timing is taken by the wall clock and by this process's CPU time. Data:
``--dataset`` from ``--data-dir`` / ``$ANNT_DATA_DIR`` (``mnist-embedded`` needs no files).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from annt.data import load_dataset
from annt.models import create_model
from annt.train.adversarial import adversarial_examples, crafting_generator
from annt.train.recipes import make_recipe
from annt.train.trainer import _batch, _optimizer, _train_step, compact_images


class Runner:
    """One method's model, optimiser and data, stepping as ``fit`` does."""

    def __init__(self, method: str, args: argparse.Namespace, x: torch.Tensor, y: torch.Tensor):
        adv = {} if method == "none" else {
            "adv_method": method, "adv_eps": args.eps, "adv_steps": None if method == "fgsm_rs" else args.steps}
        self.recipe = make_recipe(args.model, **adv)
        torch.manual_seed(0)
        self.model = create_model(args.model, args.bits, in_channels=x.shape[1], image_size=x.shape[2]).train()
        self.optimizer = _optimizer(self.model, self.recipe)
        self.regularizer = getattr(self.model, "regularization_loss", None)
        self.images, self.labels = compact_images(x), y
        self.gen = torch.Generator().manual_seed(1)
        self.craft = crafting_generator(0, 0, torch.device("cpu"))
        self.order = torch.randperm(len(y), generator=self.gen)
        self.pos = 0

    def step(self) -> None:
        bs, r = self.recipe.batch_size, self.recipe
        if self.pos + bs > len(self.order):
            self.pos = 0
        idx = self.order[self.pos : self.pos + bs]
        self.pos += bs
        x, y = _batch(self.images, self.labels, idx, r, self.gen, torch.device("cpu"))
        x_adv = None if r.adv_method == "none" else adversarial_examples(self.model, x, y, r, r.adv_eps, self.craft)
        _train_step(self.model, self.optimizer, x, y, r, None, self.regularizer, x_adv)

    def timed(self, seconds: float) -> tuple[float, float]:
        """Images/s over about ``seconds``, by the wall clock and by this process's CPU time."""
        done, tic, cpu = 0, time.perf_counter(), time.process_time()
        while time.perf_counter() - tic < seconds or done < 2:
            self.step()
            done += 1
        images = done * self.recipe.batch_size
        return images / (time.perf_counter() - tic), images / (time.process_time() - cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="mnist_a")
    parser.add_argument("--bits", default="fp")
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--methods", default="none,pgd,fgsm_rs", help="none, pgd, fgsm_rs, trades")
    parser.add_argument("--steps", type=int, default=10, help="attack steps of pgd / trades")
    parser.add_argument("--eps", type=float, default=0.3)
    parser.add_argument("--seconds", type=float, default=8.0, help="timed training per method and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    data = load_dataset(args.dataset, "train", args.data_dir)
    methods = [m for m in args.methods.split(",") if m]
    runners = {m: Runner(m, args, data.x, data.y) for m in methods}
    for r in runners.values():  # warm-up outside the timing
        r.timed(0.0)
    per: dict[str, list[tuple[float, float]]] = {m: [] for m in methods}
    for _ in range(args.rounds):
        for m in methods:
            per[m].append(runners[m].timed(args.seconds))
    base = methods[0]
    rows = []
    for m in methods:
        wall = [a / b for (a, _), (b, _) in zip(per[m], per[base])]
        cpu = [a / b for (_, a), (_, b) in zip(per[m], per[base])]
        rows.append({
            "model": args.model, "bits": args.bits, "method": m, "threads": args.threads,
            "attack_steps": 0 if m == "none" else 1 if m == "fgsm_rs" else args.steps,
            "batch": runners[m].recipe.batch_size,
            "images_per_s": round(statistics.median(w for w, _ in per[m]), 1),
            f"ratio_vs_{base}": round(statistics.median(wall), 3),
            "cpu_images_per_s": round(statistics.median(c for _, c in per[m]), 1),
            f"cpu_ratio_vs_{base}": round(statistics.median(cpu), 3),
        })
        print(json.dumps(rows[-1]), flush=True)
    print(f"\n| method | attack steps | images/s (wall) | x {base} | images/s (CPU time) | x {base} |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['method']} | {r['attack_steps']} | {r['images_per_s']} | {r[f'ratio_vs_{base}']} |"
              f" {r['cpu_images_per_s']} | {r[f'cpu_ratio_vs_{base}']} |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"machine": platform.processor() or platform.machine(), "torch": torch.__version__,
                       "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
