"""Deployed twins of the zoo models: accuracy, agreement with PyTorch, and forward throughput.

For each zoo model: the PyTorch model, its ONNX fp32 twin, ONNX Runtime static int8 PTQ (QDQ,
and QOperator for the FP model) and, for DoReFa models, the exact DoReFa integer graph
(``annt.deploy``). For the FP model also ORT's QOperator PTQ without moving the ReLUs that
follow a MaxPool (its silent accuracy collapse). Calibration: the first ``--calibration``
training images. On the whole test split: accuracy, the share of images whose label equals
PyTorch's, the largest logit difference. Throughput: one thread, ``--images`` test images in
batches of ``--batch``, best of ``--rounds`` (PyTorch: the model itself under
``torch.no_grad``, and ANNT's inference copy with frozen weights and channels_last; ONNX: one
``InferenceSession`` with one intra-op thread).

    ANNT_DATA_DIR=... OMP_NUM_THREADS=1 python benchmarks/deployment.py --models mnist_a@fp mnist_a@1bit
"""

from __future__ import annotations

import argparse
import functools
import time

import torch

from annt.data import load_dataset
from annt.deploy.export import INPUT, OUTPUT, build_onnx, compare, quantize_int8
from annt.deploy.runtime import executed_operators, operator_summary, require_onnx
from annt.models.inference import as_model_input, inference_copy
from annt.zoo import load_model

DEFAULT_MODELS = ["mnist_a@fp", "mnist_a@1bit", "mnist_a@2bit", "mnist_a@4bit", "mnist_a@8bit"]


def session(data: bytes):
    _, ort = require_onnx()
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def onnx_logits(sess, x: torch.Tensor, batch: int) -> torch.Tensor:
    return torch.cat([torch.from_numpy(sess.run([OUTPUT], {INPUT: c.numpy()})[0]) for c in x.split(batch)])


@torch.no_grad()
def torch_logits(model: torch.nn.Module, x: torch.Tensor, batch: int) -> torch.Tensor:
    return torch.cat([model(as_model_input(c, model)) for c in x.split(batch)])


def qoperator_as_ort_makes_it(model: torch.nn.Module, calib: torch.Tensor) -> tuple[bytes, dict]:
    """ORT's QOperator PTQ of the fp32 twin without moving ReLUs before MaxPools."""
    fp32, _ = build_onnx(model, "fp32", calib[:1])
    data, _ = quantize_int8(fp32, calib, "qoperator", relu_first=False)
    return data, operator_summary(executed_operators(data))


def best_rate(fn, n: int, rounds: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return n / min(times)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
    p.add_argument("--calibration", type=int, default=1000)
    p.add_argument("--images", type=int, default=10_000, help="images for the throughput runs")
    p.add_argument("--batch", type=int, default=500)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    onnx, ort = require_onnx()
    print(f"torch {torch.__version__}, onnx {onnx.__version__}, onnxruntime {ort.__version__}, one thread")
    print("| model | graph | test accuracy | agreement with PyTorch | max logit diff | integer ops run |"
          " float conv/matmul run | images/s |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.models:
        model = load_model(f"zoo:{name}").eval()
        dataset = model.annt_meta["dataset"]
        test = load_dataset(dataset, "test", download=False)
        calib = load_dataset(dataset, "train", download=False).x[: args.calibration]
        x, y = test.x, test.y
        timing_x = x[: args.images]
        reference = torch_logits(model, x, args.batch)
        rate = best_rate(functools.partial(torch_logits, model, timing_x, args.batch), len(timing_x), args.rounds)
        acc = (reference.argmax(1) == y).float().mean().item()
        print(f"| {name} | PyTorch | {acc:.4f} | - | - | - | - | {rate:.0f} |", flush=True)
        fast = inference_copy(model)  # what ANNT's evaluation runs: same labels, frozen weights
        rate = best_rate(functools.partial(torch_logits, fast, timing_x, args.batch), len(timing_x), args.rounds)
        print(f"| {name} | PyTorch, ANNT inference copy | - | - | - | - | - | {rate:.0f} |", flush=True)
        quantized = not model.annt_meta["bits"].startswith("32,32")
        graphs = [("ONNX fp32", "fp32", "qdq"), ("ORT int8 QDQ", "int8", "qdq")]
        if not quantized:
            graphs.append(("ORT int8 QOperator", "int8", "qoperator"))
        else:
            graphs.append(("DoReFa integer", "dorefa", "qdq"))
        if not quantized:
            graphs.append(("ORT int8 QOperator, ReLU after MaxPool kept", None, None))
        for label, fmt, int8_format in graphs:
            if fmt is None:
                data, meta = qoperator_as_ort_makes_it(model, calib)
            else:
                data, meta = build_onnx(model, fmt, calib, int8_format=int8_format)
            sess = session(data)
            logits = onnx_logits(sess, x, args.batch)
            same = compare(reference, logits)
            acc = (logits.argmax(1) == y).float().mean().item()
            rate = best_rate(functools.partial(onnx_logits, sess, timing_x, args.batch), len(timing_x), args.rounds)
            ints = ", ".join(f"{k} {v}" for k, v in meta["integer_operators"].items()) or "none"
            floats = ", ".join(f"{k} {v}" for k, v in meta["float_compute_operators"].items()) or "none"
            print(f"| {name} | {label} | {acc:.4f} | {same['label_agreement']:.4f} |"
                  f" {same['max_logit_diff']:.2g} | {ints} | {floats} | {rate:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
