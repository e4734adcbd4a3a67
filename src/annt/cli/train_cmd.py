"""``annt train``: train a registered model on a dataset at a bitwidth, resumable."""

from __future__ import annotations

import argparse
import json

from annt.cli.common import (
    add_data_dir,
    add_device,
    add_factory_options,
    add_trust,
    model_args,
    positive_int,
    resolve_device,
)
from annt.data import dataset_info
from annt.inputs.numbers import finite_float_arg, milestone_list, seed_arg
from annt.models import model_info
from annt.quant import parse_bits
from annt.quant.surrogate import DEFAULT_GRADIENT, GRADIENTS

# Every field of annt.train.recipes.Recipe is an option of ``annt train`` under its own name
# (``--lr-milestones`` -> dest ``lr_milestones``), default None: the model family's recipe
# (annt.train.recipes.default_recipe) fills in what is not given. ``run`` passes them on by
# these names. tests/foundation/test_cli_reference.py fails when a Recipe field has neither an
# option here nor an entry in RECIPE_EXCLUDED (with the reason), when an option's choices
# differ from the field's allowed values, or when a default named in a help text disagrees.
# (Not generated from the Recipe: importing annt.train costs the CLI's start-up ~0.4 s.)
RECIPE_OPTIONS = (
    "optimizer", "lr", "momentum", "weight_decay", "batch_size", "epochs", "lr_milestones", "lr_schedule",
    "warmup_epochs", "nesterov", "label_smoothing", "distill_weight", "distill_temperature", "augment",
    "random_shift", "dropout", "validation_size", "validation_seed", "channels_last", "compile", "bf16",
    "adv_method", "adv_eps", "adv_norm", "adv_steps", "adv_step_size", "adv_warmup_epochs", "adv_gradient",
    "trades_beta", "robust_validation",
)
RECIPE_EXCLUDED: dict[str, str] = {}  # Recipe field -> why ``annt train`` does not offer it
OPTIMIZERS = ("adam", "sgd")  # Recipe.optimizer's pattern
LR_SCHEDULES = ("step", "cosine")  # Recipe.lr_schedule's pattern
ADV_METHODS = ("none", "pgd", "fgsm_rs", "trades")  # Recipe.adv_method's pattern
ADV_NORMS = ("inf", "2")  # Recipe.adv_norm's pattern
CHECK_IMAGES = 200  # --check-images when not given
RECIPE_DEFAULTS = {"distill_temperature": 4.0, "validation_seed": 0, "trades_beta": 6.0}  # as stated in the help texts


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model (FP or DoReFa-quantized); resumes if interrupted")
    p.add_argument("--model", default=None, help="registered model name (see `annt models`)")
    add_factory_options(p)
    p.add_argument(
        "--keep-fp", default=None, metavar="LAYERS",
        help="--model-factory below FP: layers kept full precision, comma-separated: first, last and/or"
        " module names (default first,last)",
    )
    p.add_argument("--dataset", default=None, help="dataset name (default: the model's own)")
    p.add_argument("--bits", default="fp", help="'fp', n (W=A=n, G=32) or 'W,A,G' (default fp)")
    p.add_argument("--epochs", type=positive_int, default=None)
    p.add_argument("--lr", type=finite_float_arg, default=None)
    p.add_argument(
        "--lr-milestones", type=milestone_list, default=None,
        metavar="E1,E2", help="epochs at which the learning rate is multiplied by 0.1",
    )
    p.add_argument(
        "--lr-schedule", choices=LR_SCHEDULES, default=None,
        help="step (x0.1 at each milestone) or cosine (per batch, from --lr down to 0)",
    )
    p.add_argument(
        "--warmup-epochs", type=float, default=None, metavar="E",
        help="linear learning-rate warm-up over the first E epochs (fractions allowed)",
    )
    p.add_argument("--nesterov", action=argparse.BooleanOptionalAction, default=None, help="Nesterov momentum (sgd)")
    p.add_argument("--label-smoothing", type=float, default=None, help="cross-entropy label smoothing (0..1)")
    p.add_argument("--batch-size", type=positive_int, default=None)
    p.add_argument("--optimizer", choices=OPTIMIZERS, default=None)
    p.add_argument("--weight-decay", type=finite_float_arg, default=None)
    p.add_argument("--momentum", type=finite_float_arg, default=None)
    p.add_argument(
        "--augment", action=argparse.BooleanOptionalAction, default=None,
        help="pad 4 + random crop + horizontal flip (the ResNet/CIFAR default; flips suit objects, not digits)",
    )
    p.add_argument(
        "--random-shift", type=int, default=None, metavar="N",
        help="augment by a random translation of up to N pixels, no flip (suits digits)",
    )
    p.add_argument(
        "--dropout", type=finite_float_arg, default=None,
        help="training dropout rate (default: the model's own, 0.5 for Mnist A/B/C)",
    )
    p.add_argument(
        "--channels-last", action=argparse.BooleanOptionalAction, default=None,
        help="speed: NHWC memory layout for the convolutions (equal up to float rounding)",
    )
    p.add_argument(
        "--compile", action=argparse.BooleanOptionalAction, default=None,
        help="speed: torch.compile the training step (minutes of warm-up; pays on long runs)",
    )
    p.add_argument(
        "--bf16", action=argparse.BooleanOptionalAction, default=None,
        help="bfloat16 autocast of the forward pass (changes results; slow on CPUs without bf16 units)",
    )
    p.add_argument(
        "--adv-method", choices=ADV_METHODS, default=None,
        help="adversarial training: pgd (Madry et al.), fgsm_rs (FGSM with random start, Wong et al.)"
        " or trades (Zhang et al.); none: standard training",
    )
    p.add_argument("--adv-eps", type=finite_float_arg, default=None, metavar="EPS",
                   help="perturbation budget of the training examples (and of --robust-validation)")
    p.add_argument("--adv-norm", choices=ADV_NORMS, default=None, help="budget norm: inf (Linf) or 2 (L2)")
    p.add_argument("--adv-steps", type=positive_int, default=None,
                   help="attack steps per batch for pgd/trades (10 if not given; fgsm_rs takes 1)")
    p.add_argument("--adv-step-size", type=finite_float_arg, default=None,
                   help="attack step size (if not given 2.5*eps/steps; 1.25*eps for fgsm_rs)")
    p.add_argument("--adv-warmup-epochs", type=float, default=None, metavar="E",
                   help="ramp the budget linearly from 0 to --adv-eps over the first E epochs")
    p.add_argument("--adv-gradient", choices=GRADIENTS, default=None,
                   help=f"quantizer backward pass while crafting on quantized models ({DEFAULT_GRADIENT} if not given)")
    p.add_argument("--trades-beta", type=finite_float_arg, default=None,
                   help=f"weight of the TRADES robustness term (default {RECIPE_DEFAULTS['trades_beta']:g})")
    p.add_argument("--robust-validation", type=int, default=None, metavar="N",
                   help="after each epoch attack N validation images with a 10-step PGD at --adv-eps;"
                   " the best checkpoint is then the most robust epoch")
    p.add_argument("--check-images", type=int, default=None, metavar="N",
                   help=f"after training with --adv-eps: diagnose the best checkpoint for gradient masking and"
                   f" run the standard ensemble on N test images at --adv-eps (default {CHECK_IMAGES}; 0: skip)")
    p.add_argument("--threads", type=positive_int, default=None, help="CPU threads for torch (default: torch's)")
    p.add_argument("--validation-size", type=positive_int, default=None)
    p.add_argument("--validation-seed", type=seed_arg, default=None,
                   help=f"seed of the held-out validation split (default {RECIPE_DEFAULTS['validation_seed']},"
                   " whatever --seed is)")
    p.add_argument("--train-limit", type=positive_int, default=None, help="use only the first N training images")
    p.add_argument(
        "--init-from", default=None, metavar="CHECKPOINT",
        help="start from a trained checkpoint (folder or zoo:NAME) of the same model, any bitwidth;"
        " with --model-factory also a weights file (.safetensors or state_dict)",
    )
    p.add_argument(
        "--teacher", default=None, metavar="CHECKPOINT",
        help="distil from a trained model (folder or zoo:NAME), e.g. the FP twin of a quantized net;"
        " with --model-factory also a weights file of the factory's FP network",
    )
    p.add_argument("--distill-weight", type=finite_float_arg, default=None, help="share of the teacher's loss (default 0.5)")
    p.add_argument("--distill-temperature", type=finite_float_arg, default=None,
                   help=f"softening temperature (default {RECIPE_DEFAULTS['distill_temperature']:g})")
    p.add_argument("--seed", type=seed_arg, default=0)
    p.add_argument("--out", default=None, help="run folder (default runs/train/MODEL-DATASET-BITS-sSEED)")
    p.add_argument("--no-progress", action="store_true")
    add_data_dir(p)
    add_device(p)
    add_trust(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from annt.train import train_model

    if args.threads is not None:
        torch.set_num_threads(args.threads)

    from annt.errors import AnntError
    from annt.store.naming import slug

    if bool(args.model) == bool(args.model_factory):
        raise AnntError("name the model once: --model NAME (registered) or --model-factory MODULE:FN (your own)")
    if args.model and (args.model_arg or args.mean or args.std or args.keep_fp):
        raise AnntError("--model-arg, --mean, --std and --keep-fp go with --model-factory, not --model")
    if (args.mean is None) != (args.std is None):
        raise AnntError("pass --mean and --std together")
    if args.model_factory:
        from annt.models.sources import is_factory_ref

        if not is_factory_ref(args.model_factory):
            raise AnntError(f"--model-factory {args.model_factory!r}: write package.module:function or"
                            " path/to/file.py:function")
        if not args.dataset:
            raise AnntError("--model-factory needs --dataset (a user network has no default dataset)")
        name, dataset = args.model_factory, args.dataset
        short = args.model_factory.rpartition(":")[2]
    else:
        info = model_info(args.model)
        name, dataset, short = info.name, args.dataset or info.default_dataset, info.name
    ds = dataset_info(dataset)
    spec = parse_bits(args.bits)
    check_images = CHECK_IMAGES if args.check_images is None else args.check_images
    if check_images < 0:
        raise AnntError(f"--check-images must be 0 or more, got {check_images}")
    keep_fp = [k.strip() for k in args.keep_fp.split(",") if k.strip()] if args.keep_fp is not None else None
    out = args.out or f"runs/train/{slug(short)}-{ds.name.replace(':', '_').replace('/', '_')}-{spec.tag}-s{args.seed}"
    result = train_model(
        name, dataset, spec, out, seed=args.seed,
        model_args=model_args(args.model_arg) if args.model_factory else None,
        preprocess={"mean": args.mean, "std": args.std} if args.mean is not None else None,
        keep_fp=keep_fp,
        data_dir=args.data_dir, device=resolve_device(args.device), progress=not args.no_progress,
        train_limit=args.train_limit, init_from=args.init_from, teacher=args.teacher,
        trust_unverified=args.trust_unverified,
        **{field: getattr(args, field) for field in RECIPE_OPTIONS},  # None: the family's recipe value
    )
    import sys

    from annt.store.checkpoint import read_meta

    if args.model_factory:
        from annt.quant.convert import describe

        report = read_meta(result.best).get("quantization")
        if report:
            print(describe(report), file=sys.stderr)
    check = None
    if check_images and args.adv_eps:  # adversarial training or robust validation: robust, or masking?
        from annt.robustness.training_check import check_trained, summary_line

        recipe = read_meta(result.best)["recipe"]
        check = check_trained(result.best, out, eps=float(recipe["adv_eps"]), norm=recipe.get("adv_norm", "inf"),
                              images=check_images, dataset=ds.name, data_dir=args.data_dir,
                              device=resolve_device(args.device), seed=args.seed, progress=not args.no_progress)
        print(summary_line(check), file=sys.stderr)
    print(json.dumps({
        "checkpoint": str(result.best), "last": str(result.last), "epochs": result.epochs,
        "validation_accuracy": round(result.validation_accuracy, 4),
        **({"robust_validation_accuracy": round(result.robust_validation_accuracy, 4)}
           if result.robust_validation_accuracy is not None else {}),
        "test_accuracy": round(result.test_accuracy, 4),
        **({"robustness_check": {k: v for k, v in check.items() if k not in ("evidence", "explanation")}} if check is not None else {}),
    }))
    return 0
