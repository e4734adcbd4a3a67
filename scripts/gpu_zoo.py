"""Train the model zoo on one accelerator inside a fixed wall-clock budget (one device call).

    python scripts/gpu_zoo.py --runs /tmp/zoo-runs --deadline-s 480 --pack $OUT/zoo-runs.tar.gz

Every job of the plan (``--plan FILE.json``, default ``PLAN`` below) is one ``annt`` training
run in its own process (one CPU thread each, all sharing the GPU): small networks are launch-
bound, so several processes keep one GPU busier than one process can. A job with ``"epochs":
"budget"`` times a few training steps first, under the same contention, and takes as many
epochs as fit before the deadline (cosine schedules then end at the deadline, not mid-way).
Every run writes ``best/`` and ``last/`` after each epoch; a packer copies the finished
checkpoints, metrics and logs into a tar file every 30 s (in parts of at most 15 MiB, the size a
device call returns: ``cat PACK.* | tar xz``), so a call cut short still returns what was trained. Test accuracy is *not* measured here (``evaluate_test=False``): it is taken
afterwards with ``annt evaluate`` and recorded by ``scripts/build_zoo.py``.

A run cut by the deadline resumes from its ``last/`` folder when the same job is started again
on the same ``--runs`` folder with its epoch count fixed (``"epochs": N`` as the probe chose,
printed in its log), so that its schedule ends where planned. Within one warm machine that is
a second call; across sessions, ``--pack-last`` also packs ``last/`` (with the optimizer state)
to be unpacked into ``--runs`` on the next machine.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path
from typing import Any

MNIST_RECIPE = {"lr": 2e-3, "batch_size": 64, "lr_milestones": [15, 25]}  # 30 epochs reach 0.9902 at 1 bit
RESNET_FP = {
    "lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4, "batch_size": 128,
    "lr_schedule": "cosine", "warmup_epochs": 1.0, "augment": True,
}
RESNET_Q = {**RESNET_FP, "lr": 0.05, "weight_decay": 2e-4}  # fine-tuned from the FP zoo model

PLAN: list[dict[str, Any]] = [
    *[
        {"name": f"mnist_a@{tag}", "model": "mnist_a", "dataset": "mnist", "bits": bits, "seed": 0,
         "epochs": 30, "recipe": MNIST_RECIPE}
        for tag, bits in [("fp", "32"), ("1bit", "1"), ("2bit", "2"), ("4bit", "4"), ("8bit", "8"),
                          ("12bit", "12"), ("16bit", "16")]
    ],
    *[
        {"name": f"mnist_a@{tag}-s1", "model": "mnist_a", "dataset": "mnist", "bits": bits, "seed": 1,
         "epochs": 30, "recipe": MNIST_RECIPE}
        for tag, bits in [("1bit", "1"), ("2bit", "2")]
    ],
    {"name": "resnet20@fp", "model": "resnet20", "dataset": "cifar10", "bits": "32", "seed": 0,
     "epochs": "budget", "max_epochs": 200, "recipe": RESNET_FP},
    *[
        {"name": f"resnet20@{tag}", "model": "resnet20", "dataset": "cifar10", "bits": bits, "seed": 0,
         "epochs": "budget", "max_epochs": 200, "recipe": RESNET_Q, "init_from": "zoo:resnet20@fp"}
        for tag, bits in [("1bit", "1"), ("2bit", "2"), ("4bit", "4"), ("8bit", "8"), ("12bit", "12"),
                          ("16bit", "16")]
    ],
]


def _folder(name: str) -> str:
    return name.replace("@", "-")


def probe_seconds_per_epoch(job: dict[str, Any], device: str, steps: int = 30) -> float:
    """Seconds one epoch of ``job`` takes here and now (training steps + validation), measured."""
    import torch
    from torch.nn import functional as F

    from annt.data import load_dataset
    from annt.models import create_model
    from annt.quant.bits import parse_bits
    from annt.train.recipes import make_recipe
    from annt.train.trainer import _optimizer, augment_batch

    recipe = make_recipe(job["model"], epochs=1, **job.get("recipe", {}))
    train = load_dataset(job["dataset"], "train", seed=job.get("seed", 0))
    x = train.x[: recipe.batch_size].to(device)
    y = train.y[: recipe.batch_size].to(device)
    model = create_model(job["model"], parse_bits(job["bits"]), in_channels=x.shape[1],
                         num_classes=len(train.classes), image_size=x.shape[2]).to(device).train()
    opt = _optimizer(model, recipe)
    gen = torch.Generator().manual_seed(0)
    teacher = None
    if job.get("teacher"):
        from annt.zoo import load_model

        teacher = load_model(job["teacher"], device).eval()

    def step() -> None:
        xb = augment_batch(x, gen) if recipe.augment else x
        if recipe.adv_method != "none":  # adversarial training crafts every batch's examples first
            from annt.train.adversarial import adversarial_examples, crafting_generator

            xb = adversarial_examples(model, xb, y, recipe, float(recipe.adv_eps), crafting_generator(0, 0, xb.device))
        if teacher is not None:  # distillation costs the teacher's forward pass too
            with torch.no_grad():
                teacher(xb)
        loss = F.cross_entropy(model(xb), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(5):
        step()
    torch.cuda.synchronize() if device.startswith("cuda") else None
    tic = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize() if device.startswith("cuda") else None
    per_step = (time.perf_counter() - tic) / steps
    batches = -(-len(train) // recipe.batch_size)
    return per_step * batches * 1.08  # + validation, checkpoint writes and the epoch's bookkeeping


def worker(job: dict[str, Any], runs: Path, deadline: float, device: str) -> None:
    """Run one job to the end (or as many epochs as the deadline allows)."""
    import torch

    torch.set_num_threads(1)
    torch.backends.cudnn.benchmark = True
    from annt.train import train_model

    epochs = job["epochs"]
    if epochs == "budget":
        per_epoch = probe_seconds_per_epoch(job, device)
        left = deadline - time.time()
        epochs = int(max(1, min(job.get("max_epochs", 200), left * 0.93 // per_epoch)))
        print(json.dumps({"job": job["name"], "probe_s_per_epoch": round(per_epoch, 2), "epochs": epochs}), flush=True)
    result = train_model(
        job["model"], job["dataset"], job["bits"], runs / _folder(job["name"]), epochs=epochs,
        seed=job.get("seed", 0), device=device, progress=False, init_from=job.get("init_from"),
        teacher=job.get("teacher"), evaluate_test=False, **job.get("recipe", {}),
    )
    print(json.dumps({"job": job["name"], "epochs": result.epochs,
                      "validation_accuracy": round(result.validation_accuracy, 4)}), flush=True)


BEST = ("best/model.safetensors", "best/model.json", "metrics.jsonl")
# last/ with the optimizer state: what a run cut by the deadline resumes from in a later call
LAST = ("last/model.safetensors", "last/model.json", "last/train_state.safetensors", "last/train_state.json")


def pack(runs: Path, target: Path, with_last: bool = False) -> None:
    """Tar every run's best/ checkpoint, metrics and log (and last/ if asked) into ``target``."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for run in sorted(p for p in runs.iterdir() if p.is_dir()):
            for rel in BEST + (LAST if with_last else ()):
                f = run / rel
                if f.is_file():
                    with contextlib.suppress(OSError):  # being replaced right now: the next pack takes it
                        tar.add(f, arcname=f"{run.name}/{rel}")
        for log in sorted(runs.glob("*.log")):
            tar.add(log, arcname=log.name)
    # a device call returns files of at most 16 MiB: write parts (join with `cat PACK.* | tar xz`)
    data, chunk = buf.getvalue(), 15 * 2**20
    for stale in target.parent.glob(target.name + ".*"):
        if stale.suffix != ".tmp":
            stale.unlink()
    for i in range(0, max(len(data), 1), chunk):
        tmp = target.parent / f"{target.name}.{i // chunk:02d}.tmp"
        tmp.write_bytes(data[i : i + chunk])
        os.replace(tmp, tmp.with_suffix(""))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=Path, default=Path("runs/gpu-zoo"))
    ap.add_argument("--deadline-s", type=float, required=True, help="seconds from now until everything stops")
    ap.add_argument("--pack", type=Path, default=None, help="tar.gz written every 30 s and at the end")
    ap.add_argument("--pack-last", action="store_true", help="also pack last/ with the optimizer state (to resume elsewhere)")
    ap.add_argument("--plan", type=Path, default=None, help="JSON list of jobs (default: the built-in zoo plan)")
    ap.add_argument("--only", default=None, help="comma-separated job names to run")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--deadline-at", type=float, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.runs.mkdir(parents=True, exist_ok=True)
    if args.worker:
        worker(json.loads(args.worker), args.runs, args.deadline_at, args.device)
        return
    deadline = time.time() + args.deadline_s
    plan = json.loads(args.plan.read_text()) if args.plan else PLAN
    if args.only:
        wanted = set(args.only.split(","))
        plan = [j for j in plan if j["name"] in wanted]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "ANNT_OFFLINE": "1",
           "PYTHONUNBUFFERED": "1"}
    procs = {}
    for job in plan:
        log = open(args.runs / f"{_folder(job['name'])}.log", "w")  # noqa: SIM115 (closed below)
        cmd = [sys.executable, __file__, "--runs", str(args.runs), "--deadline-s", "0", "--device", args.device,
               "--worker", json.dumps(job), "--deadline-at", str(deadline - 15)]
        procs[job["name"]] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env), log)
    stop = threading.Event()

    def packer() -> None:
        while not stop.wait(30):
            if args.pack:
                pack(args.runs, args.pack, args.pack_last)

    thread = threading.Thread(target=packer, daemon=True)
    thread.start()
    while time.time() < deadline and any(p.poll() is None for p, _ in procs.values()):
        time.sleep(2)
    for name, (p, _log) in procs.items():
        if p.poll() is None:
            p.terminate()
            print(f"{name}: stopped at the deadline", flush=True)
    for p, log in procs.values():
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()
        log.close()
    stop.set()
    if args.pack:
        pack(args.runs, args.pack, args.pack_last)
    summary = {name: p.returncode for name, (p, _) in procs.items()}
    print(json.dumps({"returncodes": summary}), flush=True)
    for log in sorted(args.runs.glob("*.log")):
        lines = log.read_text().splitlines()
        metrics = args.runs / log.stem / "metrics.jsonl"
        last = metrics.read_text().splitlines()[-1] if metrics.is_file() and metrics.read_text() else "no epoch"
        print(f"--- {log.stem}: {last} | " + " | ".join(lines[-2:]))


if __name__ == "__main__":
    main()
