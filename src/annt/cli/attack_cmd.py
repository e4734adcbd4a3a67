"""``annt attack``: craft an adversarial set on correctly classified test images and save it."""

from __future__ import annotations

import argparse
import json
import time

import torch

from annt.cli.common import (
    add_data_dir,
    add_device,
    add_model_source,
    add_trust,
    fit_to_data,
    load_model_source,
    model_label,
    positive_int,
    resolve_device,
)
from annt.device import exact_float32
from annt.errors import AnntError
from annt.inputs.files import output_file
from annt.inputs.numbers import seed_arg
from annt.progress import Progress


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("attack", help="craft adversarial examples on a model and save them (.npz)")
    add_model_source(p, flag_help="the model to attack")
    p.add_argument("--attack", required=True, help="attack name (`annt attacks` lists them)")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help="attack parameter (repeatable)")
    p.add_argument("--samples", type=positive_int, default=1000, help="correctly classified test images to attack")
    p.add_argument("--seed", type=seed_arg, default=0, help="seeds sample choice and the attack")
    p.add_argument("--dataset", default=None, help="dataset (default: the checkpoint's)")
    p.add_argument("--backend", choices=("annt", "art"), default="annt")
    p.add_argument("--batch-size", type=positive_int, default=None)
    p.add_argument("--out", required=True, help="output .npz (a .json sidecar is written beside it)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    add_data_dir(p)
    add_device(p)
    add_trust(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from annt.attacks import parse_param, run_attack, validate_params
    from annt.data import load_dataset
    from annt.data.sampling import sample_correct
    from annt.store.adversarial_set import AdversarialSet, save_adversarial_set

    out = output_file(args.out, "--out", ".npz")
    params = validate_params(args.attack, dict(parse_param(p) for p in args.param))
    device = resolve_device(args.device)
    exact_float32(device)  # attacks end on the decision boundary: no TF32 (see annt.device)
    from annt.attacks.registry import check_model_supports

    model = load_model_source(args, device)
    check_model_supports(args.attack, model, model_label(args))
    meta = getattr(model, "annt_meta", {})
    dataset = args.dataset or meta.get("dataset")
    if not dataset:
        raise AnntError(f"{model_label(args)} names no dataset; pass --dataset")
    test = load_dataset(dataset, "test", args.data_dir)
    fit_to_data(model, test.x, test.y, len(test.classes), f"dataset {dataset}", model_label(args))
    chosen = sample_correct(model, test, args.samples, args.seed)
    tic = time.perf_counter()
    with Progress(len(chosen), f"attack {args.attack}", "images", enabled=not args.quiet) as bar:
        result = run_attack(
            args.attack, model, chosen.x.to(device), chosen.y.to(device), params,
            seed=args.seed, backend=args.backend, batch_size=args.batch_size, on_chunk=bar.update,
        )
    seconds = time.perf_counter() - tic
    adv = result.adversarial.detach().cpu()
    with torch.no_grad():
        from annt.models.inference import predict_labels

        still_correct = predict_labels(model, adv) == chosen.y
    delta = (adv - chosen.x).flatten(1)
    ok = ~still_correct
    l2 = delta.norm(dim=1)[ok]
    linf = delta.abs().amax(dim=1)[ok]
    costs = {
        "iterations": result.iterations.cpu(), "forward_passes": result.forward_passes.cpu(),
        "backward_passes": result.backward_passes.cpu(),
    }
    save_adversarial_set(out, AdversarialSet(
        adv, chosen.y, chosen.index, result.success.cpu(), costs, dict(result.extras),
        meta={
            "checkpoint": model_label(args), "model": meta.get("model"), "bits": meta.get("bits"),
            "weights_sha256": meta.get("weights_sha256"), "dataset": dataset, "split": "test",
            "attack": args.attack, "params": params, "seed": args.seed, "backend": args.backend,
            "seconds": round(seconds, 3),
        },
    ), device=device)
    print(json.dumps({
        "out": str(out), "samples": len(chosen), "adversarial_accuracy": round(still_correct.float().mean().item(), 4),
        "mean_l2": round(l2.mean().item(), 4) if len(l2) else None,
        "mean_linf": round(linf.mean().item(), 4) if len(linf) else None, "seconds": round(seconds, 2),
    }))
    return 0
