"""Export ``net.py``'s trained network as TorchScript and ONNX, the way a user ships it.

Plain PyTorch: the exported graphs take normalised inputs, like the network itself.

    python examples/audit/export.py --weights runs/audit/fp.pt --torchscript runs/audit/fp.ts --onnx runs/audit/fp.onnx
"""

from __future__ import annotations

import argparse
import importlib.util
import warnings
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", required=True)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--torchscript", default=None)
    parser.add_argument("--onnx", default=None)
    args = parser.parse_args()

    spec = importlib.util.spec_from_file_location("audit_net", Path(__file__).with_name("net.py"))
    net = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(net)
    model = net.small_vgg(width=args.width)
    model.load_state_dict(torch.load(args.weights, map_location="cpu", weights_only=True))
    model.eval()
    example = torch.zeros(1, 1, 28, 28)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's deprecation notices for both exporters
        if args.torchscript:
            torch.jit.trace(model, example).save(args.torchscript)
            print(f"saved {args.torchscript}")
        if args.onnx:
            torch.onnx.export(model, (example,), args.onnx, input_names=["x"], output_names=["logits"],
                              dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False)
            print(f"saved {args.onnx}")


if __name__ == "__main__":
    main()
