"""The measurements of docs/results/deployment.md: zoo models against their deployed ONNX twins.

Per zoo model, all through the ``annt`` command line (so every step is what a user would run):

1. ``annt export``: the FP model to int8 (ONNX Runtime static PTQ, integer kernels), a DoReFa
   model to its exact integer graph (``--format dorefa``);
2. transfer: FGSM, PGD, CW-L2 and Boundary sets crafted on the PyTorch model (``annt attack``,
   correctly classified test images, seed 0) and replayed on both models (``annt evaluate
   --adversarial``): adversarial accuracy on each;
3. Square run directly on the deployed file and on the PyTorch model, same images and budget;
4. ``annt deploy-gap`` at the budgets given.

Every output lands under ``ROOT/<model>/``; a step whose output exists is read back, not rerun,
so a killed run resumes. ``--table`` prints the Markdown rows of what is finished and writes
``summary.json`` per model.

    OMP_NUM_THREADS=1 python scripts/deployment_table.py --root runs/deploy --models mnist_a@fp,mnist_a@1bit \\
            --dataset mnist --eps 0.1 --gap-eps 0.05,0.1 --n-images 1000 --slow-images 100
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ATTACKS = ("fgsm", "pgd", "cw_l2", "boundary")
# beyond eps: CW-L2 with a larger constant and more steps than its defaults (which fool almost
# nothing on MNIST), Boundary with a fifth of its default iterations
PARAMS = {"cw_l2": {"max_iter": 50, "binary_search_steps": 5, "initial_const": 1, "learning_rate": 0.05},
          "boundary": {"max_iter": 1000}}


def annt(*args: str) -> dict:
    """Run ``annt ARGS`` and return the JSON object it prints last."""
    done = subprocess.run([sys.executable, "-m", "annt", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"annt {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    return json.loads(lines[-1])


def cached(path: Path, run) -> dict:
    """``run()``'s JSON, stored at ``path`` (atomic); read back when it exists."""
    if path.exists():
        return json.loads(path.read_text())
    out = run()
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(out, indent=1))
    tmp.replace(path)
    return out


def measure(root: Path, model: str, dataset: str, eps: float, gap_eps: str, n: int, slow: int, n_cw: int,
            n_gap: int) -> dict:
    zoo = f"zoo:{model}"
    here = root / model.replace("@", "-")
    here.mkdir(parents=True, exist_ok=True)
    fmt = "int8" if model.endswith("@fp") else "dorefa"
    deployed = here / f"{fmt}.onnx"
    common = ["--dataset", dataset]
    summary: dict = {"model": zoo, "format": fmt, "dataset": dataset, "eps": eps}
    summary["export"] = cached(here / "export.json", lambda: annt(
        "export", zoo, "--format", fmt, "--out", str(deployed), *common))
    for attack in ATTACKS:
        params = {"eps": eps} if attack in ("fgsm", "pgd") else PARAMS[attack]
        samples = {"cw_l2": n_cw, "boundary": slow}.get(attack, n)
        npz = here / f"{attack}.npz"

        def craft(attack=attack, params=params, samples=samples, npz=npz) -> dict:
            flags = [x for k, v in params.items() for x in ("--param", f"{k}={v}")]
            return annt("attack", "--checkpoint", zoo, "--attack", attack, *flags, "--samples", str(samples),
                        "--out", str(npz), *common)

        crafted = cached(here / f"{attack}-craft.json", craft)
        on_deployed = cached(here / f"{attack}-on-deployed.json", lambda npz=npz: annt(
            "evaluate", "--checkpoint", str(deployed), "--adversarial", str(npz), *common))
        summary[attack] = {"samples": crafted["samples"], "params": params, "seconds": crafted.get("seconds"),
                           "pytorch_adversarial_accuracy": crafted["adversarial_accuracy"],
                           "deployed_adversarial_accuracy": on_deployed["adversarial_accuracy"],
                           "mean_l2": crafted.get("mean_l2")}
    for target, label in ((zoo, "pytorch"), (str(deployed), "deployed")):
        out = cached(here / f"square-{label}.json", lambda target=target, label=label: annt(
            "attack", "--checkpoint", target, "--attack", "square", "--param", f"eps={eps}", "--samples", str(slow),
            "--out", str(here / f"square-{label}.npz"), *common))
        summary[f"square_{label}"] = {"samples": out["samples"], "adversarial_accuracy": out["adversarial_accuracy"],
                                      "seconds": out.get("seconds")}
    gap = here / "gap"
    if not (gap / "gap.json").exists():
        annt("deploy-gap", "--checkpoint", zoo, "--deployed", str(deployed), "--eps", gap_eps,
             "--n-images", str(n_gap), "--out", str(gap), *common)
    summary["gap"] = json.loads((gap / "gap.json").read_text())
    (here / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", required=True)
    ap.add_argument("--models", required=True, help="comma-separated zoo names, e.g. mnist_a@fp,mnist_a@1bit")
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--eps", type=float, required=True, help="Linf budget of FGSM, PGD and Square")
    ap.add_argument("--gap-eps", required=True, help="deploy-gap budgets, e.g. 0.05,0.1")
    ap.add_argument("--n-images", type=int, default=1000, help="images for FGSM and PGD (and CW-L2, deploy-gap unless set)")
    ap.add_argument("--cw-images", type=int, default=None, help="images for CW-L2 (default: --n-images)")
    ap.add_argument("--gap-images", type=int, default=None, help="images for deploy-gap (default: --n-images)")
    ap.add_argument("--slow-images", type=int, default=100, help="images for Boundary and Square")
    args = ap.parse_args()
    root = Path(args.root)
    for model in args.models.split(","):
        s = measure(root, model, args.dataset, args.eps, args.gap_eps, args.n_images, args.slow_images,
                    args.cw_images or args.n_images, args.gap_images or args.n_images)
        cells = [f"{s[a]['pytorch_adversarial_accuracy']:.3f} / {s[a]['deployed_adversarial_accuracy']:.3f}"
                 for a in ATTACKS]
        sq = f"{s['square_pytorch']['adversarial_accuracy']:.3f} / {s['square_deployed']['adversarial_accuracy']:.3f}"
        print(f"| {model} | {s['format']} | " + " | ".join(cells) + f" | {sq} |", flush=True)


if __name__ == "__main__":
    main()
