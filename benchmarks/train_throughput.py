"""Training throughput (images/s) of FP vs DoReFa-quantized models, measured in one run.

    python benchmarks/train_throughput.py [--seconds 20] [--out docs/benchmarks-train.json]

Each configuration trains on real images (MNIST embedded sample; CIFAR-10 if the data root
has it, else MNIST-sized inputs are not substituted: ResNet20 is skipped) with the recipe's
batch size and optimiser, after a warm-up; the ratio is quantized time / FP time per image.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch
from torch.nn import functional as F

from annt.data import load_dataset
from annt.errors import AnntError
from annt.models import create_model
from annt.train.recipes import default_recipe
from annt.train.trainer import _optimizer


def measure(model_name: str, bits: str, x: torch.Tensor, y: torch.Tensor, seconds: float) -> float:
    torch.manual_seed(0)
    model = create_model(model_name, bits, in_channels=x.shape[1], image_size=x.shape[2]).train()
    recipe = default_recipe(model_name)
    opt = _optimizer(model, recipe)
    bs = recipe.batch_size

    def step(i: int) -> None:
        s = (i * bs) % (len(x) - bs)
        logits = model(x[s : s + bs])
        loss = F.cross_entropy(logits, y[s : s + bs])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for i in range(3):
        step(i)
    done, tic = 0, time.perf_counter()
    while time.perf_counter() - tic < seconds:
        step(done)
        done += 1
    return done * bs / (time.perf_counter() - tic)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0, help="timed training per configuration")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()
    mnist = load_dataset("embedded", "train")
    sets = {"mnist_a": (mnist.x, mnist.y)}
    try:
        cifar = load_dataset("cifar10", "test", args.data_dir, download=False)
        sets["resnet20"] = (cifar.x[:5000], cifar.y[:5000])
    except AnntError as exc:
        print(f"skipping resnet20: {exc}")
    rows = []
    for name, (x, y) in sets.items():
        fp = None
        for bits in ("fp", "1", "8"):
            ips = measure(name, bits, x, y, args.seconds)
            fp = fp or ips
            rows.append({"model": name, "bits": bits, "images_per_s": round(ips, 1),
                         "time_ratio_vs_fp": round(fp / ips, 3)})
            print(json.dumps(rows[-1]), flush=True)
    print("\n| model | bits | images/s | time ratio vs FP |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['bits']} | {r['images_per_s']} | {r['time_ratio_vs_fp']} |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"machine": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                       "torch": torch.__version__, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
