"""Forward throughput (images/s) of the zoo models: today's path vs the inference copy.

"before" is what evaluation did until now: the model itself under ``torch.no_grad``, NCHW,
1000 images per call (``predict_logits``' old default). "after" is ``predict_logits`` now:
an inference copy (quantized weights computed once, channels_last) at the device's batch
size. Both run alternately in one process for ``--rounds`` rounds; the best round counts.
Predictions of both paths are compared on the same images.

    OMP_NUM_THREADS=1 python benchmarks/forward_throughput.py --images 2000 --rounds 5
"""

from __future__ import annotations

import argparse
import functools
import sys
import time

import torch

from annt.data import load_dataset
from annt.models.inference import as_model_input, default_batch_size, inference_copy
from annt.zoo import load_model

MODELS = {
    "Mnist A FP": ("mnist_a@fp", "mnist"),
    "Mnist A 1-bit": ("mnist_a@1bit", "mnist"),
    "ResNet20 FP": ("resnet20@fp", "cifar10"),
    "ResNet20 1-bit": ("resnet20@1bit", "cifar10"),
}


@torch.no_grad()
def logits(model: torch.nn.Module, x: torch.Tensor, batch: int) -> torch.Tensor:
    return torch.cat([model(as_model_input(c, model)) for c in x.split(batch)])


def timed(fn, sync: bool) -> float:
    if sync:
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if sync:
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    sync = args.device == "cuda"
    print(f"{args.device}, {args.threads} thread(s), torch {torch.__version__}, {args.images} images")
    print("| model | before img/s | after img/s | speed-up | same predictions | max logit diff |")
    print("|---|---|---|---|---|---|")
    for label, (zoo, dataset) in MODELS.items():
        model = load_model(f"zoo:{zoo}", device=args.device).eval()
        ds = load_dataset(dataset, "test", download=False)
        x = ds.x[: args.images].float()
        x = (x / 255 if x.max() > 1 else x).to(args.device)
        batch = default_batch_size(args.device)
        fast = inference_copy(model)
        before_fn = functools.partial(logits, model, x, 1000)
        after_fn = functools.partial(logits, fast, x, batch)
        before_fn(), after_fn()  # warm-up
        t_before, t_after = [], []
        for _ in range(args.rounds):  # alternate, so that load swings hit both paths
            t_before.append(timed(before_fn, sync))
            t_after.append(timed(after_fn, sync))
        before, after = min(t_before), min(t_after)
        a, b = before_fn(), after_fn()
        print(
            f"| {label} | {len(x) / before:.0f} | {len(x) / after:.0f} | {before / after:.2f}x | "
            f"{bool((a.argmax(1) == b.argmax(1)).all())} | {(a - b).abs().max().item():.1e} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
