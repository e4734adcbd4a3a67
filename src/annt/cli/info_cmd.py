"""``annt datasets`` / ``annt models`` / ``annt zoo`` / ``annt attacks``: what is available."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    sub.add_parser("datasets", help="list datasets").set_defaults(func=_datasets)
    sub.add_parser("models", help="list model architectures").set_defaults(func=_models)
    sub.add_parser("zoo", help="list bundled trained models").set_defaults(func=_zoo)
    sub.add_parser("attacks", help="list attacks, their kind and parameters").set_defaults(func=_attacks)


def _attacks(args: argparse.Namespace) -> int:
    from annt.attacks.registry import get_attack, list_attacks

    for name in list_attacks():
        spec = get_attack(name)
        kind = "gradient" if spec.gradient_based else "gradient-free"
        params = ", ".join(f"{k}={f.default!r}" for k, f in spec.params_model.model_fields.items())
        print(f"{name:14s} {kind:13s} {spec.description}")
        print(f"{'':14s} parameters: {params}")
    return 0


def _datasets(args: argparse.Namespace) -> int:
    from annt.data import DATASETS, data_root

    for info in DATASETS.values():
        print(f"{info.name:16s} {info.description}")
    print(f"{'npz:DIR':16s} arrays x (uint8 NHWC or float [0,1]) and y in DIR/*train.npz, DIR/*test.npz")
    print(f"{'image-folder:DIR':16s} DIR/train/<class>/*.png|jpg and DIR/test/<class>/...")
    print(f"data root: {data_root()}")
    return 0


def _models(args: argparse.Namespace) -> int:
    from annt.models import list_models

    for info in list_models():
        print(f"{info.name:10s} {info.description} (default dataset: {info.default_dataset})")
    print("your own network: --model-factory package.module:function or path/to/file.py:function")
    return 0


def _zoo(args: argparse.Namespace) -> int:
    from annt.zoo import list_zoo

    entries = list_zoo()
    if not entries:
        print("no bundled models")
    for e in entries:
        print(f"zoo:{e['name']:22s} {e['dataset']:8s} bits={e['bits']:8s} test_accuracy={e['test_accuracy']:.4f}"
              f" epochs={e.get('epochs_trained', '?')}")
    return 0
