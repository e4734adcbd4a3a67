"""Train ``net.py``'s network with plain PyTorch, as a user would have done outside ANNT.

Inputs are normalised with the MNIST mean and std in the data pipeline (not inside the model),
and the weights are saved as a plain ``state_dict``. ANNT only supplies the image arrays here
(the bundled ``mnist-embedded`` sample: 6,000 training and 1,000 test images, offline).

    python examples/audit/train_plain.py --out runs/audit/fp.pt --epochs 4
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import torch
from torch import nn

MEAN, STD = 0.1307, 0.3081


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from annt.data import load_dataset  # only the arrays

    spec = importlib.util.spec_from_file_location("audit_net", Path(__file__).with_name("net.py"))
    net = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(net)

    torch.manual_seed(args.seed)
    train, test = load_dataset("mnist-embedded", "train"), load_dataset("mnist-embedded", "test")
    model = net.small_vgg(width=args.width)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    loss_fn = nn.CrossEntropyLoss()
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(len(train.y))
        for i in range(0, len(order), 64):
            idx = order[i : i + 64]
            x = (train.x[idx] - MEAN) / STD
            optimizer.zero_grad()
            loss_fn(model(x), train.y[idx]).backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            acc = (model((test.x - MEAN) / STD).argmax(1) == test.y).float().mean().item()
        print(f"epoch {epoch + 1}: test accuracy {acc:.4f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), args.out)
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
