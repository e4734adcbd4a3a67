"""Hostile inputs, table-driven: every case must end in exit code N, one ``annt: error:`` line
naming the problem, and no change to anything that was on disk before.

Cases call the CLI in-process (``annt.cli.main.main``) on small damaged copies of pristine
artifacts (a zoo checkpoint, an 8-image adversarial set, a finished 4-image study).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from annt.cli.main import main
from annt.inputs.hashing import file_digest
from annt.store.adversarial_set import set_seal
from annt.store.checkpoint import seal_of

from .conftest import snapshot, tiny_spec

EMB = "mnist-embedded"


@dataclass
class Ctx:
    tmp: Path
    pristine: Path
    arrays: dict[str, np.ndarray]
    data: Path | None = None  # for cases that need data: a folder whose mnist/ holds the IDX files


@dataclass
class Case:
    id: str
    build: Callable[[Ctx], list[str]]
    code: int
    match: str
    needs_data: bool = False
    new_files_ok: bool = False  # only for commands that write a new folder before failing (report)


CASES: list[Case] = []


def case(id: str, code: int, match: str, needs_data: bool = False):
    def add(build: Callable[[Ctx], list[str]]) -> Callable[[Ctx], list[str]]:
        CASES.append(Case(id, build, code, match, needs_data))
        return build

    return add


def argv_case(id: str, argv: list[str], code: int, match: str) -> None:
    CASES.append(Case(id, lambda c, a=argv: list(a), code, match))


# ============================================================ command-line arguments
ATTACK = ["attack", "--checkpoint", "zoo:mnist_a@fp", "--attack", "fgsm", "--dataset", EMB, "--samples", "4"]
TRAIN = ["train", "--model", "mnist_a", "--dataset", EMB, "--epochs", "1", "--train-limit", "50", "--out", "t"]

for seed in ("-1", "4294967296", "99999999999999999999", "1e3", "abc", ""):
    argv_case(f"cli-attack-seed-{seed or 'empty'}", [*ATTACK, "--seed", seed, "--out", "s.npz"], 2, "--seed")
    argv_case(f"cli-train-seed-{seed or 'empty'}", [*TRAIN, "--seed", seed], 2, "--seed")
for lr in ("1e300", "nan", "inf", "-inf", "x", "0", "-0.1", "11"):
    code = 2 if lr in ("nan", "inf", "-inf", "x") else 1
    argv_case(f"cli-train-lr-{lr}", [*TRAIN, "--lr", lr], code, "lr")
for ms in ("-1", "0", "5,,8", "8,5", "a", ",", "3,3"):
    argv_case(f"cli-train-milestones-{ms}", [*TRAIN, "--lr-milestones", ms], 2, "milestones|epochs")
for bits in ("", "true", "3x", "0", "33", "1,2", "1,1,1,1", "17", "-1"):
    argv_case(f"cli-train-bits-{bits or 'empty'}", [*TRAIN, "--bits", bits], 1, "bitwidth")
for opt, value in (("--momentum", "inf"), ("--weight-decay", "nan"), ("--dropout", "1e400"),
                   ("--momentum", "1.5"), ("--weight-decay", "5"), ("--dropout", "-0.1"),
                   ("--distill-temperature", "1e9"), ("--random-shift", "99"), ("--epochs", "0"),
                   ("--batch-size", "-4")):
    argv_case(f"cli-train{opt}-{value}", [*TRAIN, opt, value], 2 if opt in ("--epochs", "--batch-size")
              or value in ("inf", "nan", "1e400") else 1, opt.lstrip("-").replace("-", "_") + "|" + opt)
for param, match in (
    ("eps=nan", "eps"), ("eps=inf", "eps"), ("eps=-1", "eps"), ("eps=.nan", "eps"), ("eps", "key=value"),
    ("=0.1", "key=value"), ("eps=abc", "eps"), ("eps=true", "eps"), ("epsilon=0.1", "unknown parameter"),
    ("norm=3", "norm"), ("eps=[1,2]", "eps"), ("eps=" + "9" * 20000, "characters"),
    ("eps=[&a [1,1,1,1,1,1,1,1,1,1],&b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a],&c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b],"
     "&d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]]", "alias bomb"),
    ("eps=!!python/object/apply:os.system ['true']", "eps"),
    ("eps=" + "[" * 4000 + "]" * 4000, "nested too deeply"),
):
    argv_case(f"cli-param-{param[:24]}", [*ATTACK, "--param", param, "--out", "s.npz"], 1, match)
for attack, param in (("boundary", "max_iter=1000000000"), ("cw_l2", "max_iter=10000000"),
                      ("cw_l2", "binary_search_steps=99999999"), ("uap", "max_iter=5000000"),
                      ("boundary", "num_trial=2000000"), ("cw_l2", "learning_rate=inf"),
                      ("jsma", "theta=0"), ("jsma", "gamma=2")):
    argv_case(f"cli-{attack}-{param}", ["attack", "--checkpoint", "zoo:mnist_a@fp", "--attack", attack,
                                        "--param", param, "--out", "s.npz"], 1, param.split("=")[0] + "|max")
for i, (argv, code, match) in enumerate((
    ([*ATTACK, "--samples", "0", "--out", "s.npz"], 2, "samples"),
    ([*ATTACK, "--out", "s.txt"], 1, r"must end in \.npz"),
    ([*ATTACK, "--out", "."], 1, r"must end in \.npz"),
    (["attack", "--checkpoint", "zoo:nope@1bit", "--attack", "fgsm", "--out", "s.npz"], 1, "unknown zoo model"),
    (["attack", "--checkpoint", "zoo:mnist_a@fp", "--attack", "nope", "--out", "s.npz"], 1, "unknown attack"),
    ([*ATTACK, "--device", "tpu9", "--out", "s.npz"], 1, "device"),
    ([*ATTACK, "--backend", "foo", "--out", "s.npz"], 2, "backend"),
    (["evaluate", "--checkpoint", "missing-folder"], 1, "does not exist"),
    (["evaluate", "--checkpoint", "zoo:mnist_a@fp", "--split", "dev"], 2, "split"),
    (["evaluate", "--checkpoint", "zoo:mnist_a@fp", "--dataset", "imagenet"], 1, "unknown dataset"),
    (["evaluate", "--checkpoint", "zoo:mnist_a@fp", "--max-samples", "-5"], 2, "max-samples"),
    (["train", "--model", "resnet999"], 1, "unknown model|resnet999"),
    (["show", "missing.npz"], 1, "does not exist"),
    (["report", "missing-dir"], 1, "not a directory"),
    (["run", "missing.yaml"], 1, "does not exist"),
    (["run", "x.yaml", "--threads", "0"], 2, "threads"),
    (["frobnicate"], 2, "invalid choice"),
)):
    argv_case(f"cli-{argv[0]}-{i}", argv, code, match)


@case("cli-evaluate-out-is-a-file", 1, "not a directory")
def _(c: Ctx) -> list[str]:
    (c.tmp / "taken").write_text("mine")
    return ["evaluate", "--checkpoint", "zoo:mnist_a@fp", "--dataset", EMB, "--out", "taken/sub"]


@case("cli-show-out-not-png", 1, r"must end in \.png")
def _(c: Ctx) -> list[str]:
    _copy_set(c)
    return ["show", "set.npz", "--out", "grid.jpg"]


@case("cli-attack-out-parent-is-file", 1, "not a directory")
def _(c: Ctx) -> list[str]:
    (c.tmp / "taken").write_text("mine")
    return [*ATTACK, "--out", "taken/s.npz"]


# ============================================================ checkpoints
def _copy_ckpt(c: Ctx, name: str = "ckpt") -> Path:
    dest = c.tmp / name
    shutil.copytree(c.pristine / name, dest)
    return dest


def _eval_ckpt(folder: Path, *extra: str) -> list[str]:
    return ["evaluate", "--checkpoint", str(folder), "--dataset", EMB, *extra]


def sidecar_case(id: str, mutate: Callable[[dict], None], match: str, reseal: bool = True) -> None:
    """Edit the sidecar; ``reseal`` re-computes the seal so only the field check can object."""

    def build(c: Ctx) -> list[str]:
        folder = _copy_ckpt(c)
        meta = json.loads((folder / "model.json").read_text())
        mutate(meta)
        if reseal:
            meta["checkpoint_sha256"] = seal_of(meta)
        (folder / "model.json").write_text(json.dumps(meta))
        return _eval_ckpt(folder)

    CASES.append(Case(f"ckpt-{id}", build, 1, match))


def _set(key: str, value):
    def mutate(meta: dict) -> None:
        target = meta
        *parents, last = key.split(".")
        for p in parents:
            target = target[p]
        target[last] = value

    return mutate


def _drop(key: str):
    return lambda meta: meta.pop(key)


for key, value, match in (
    ("model", 1, "model"), ("model", None, "model"), ("model", [], "model"), ("model", "", "model"),
    ("model", "resnet999", "resnet999|unknown model"), ("bits", True, "bits"), ("bits", 3.5, "bits"),
    ("bits", [1], "bits"), ("bits", "3x", "bitwidth"), ("bits", "", "bitwidth"), ("bits", None, "bits"),
    ("geometry", "28", "geometry"), ("geometry", None, "geometry"), ("geometry", [1, 28, 10], "geometry"),
    ("geometry.channels", "1", "geometry.channels"), ("geometry.channels", 0, "geometry.channels"),
    ("geometry.channels", 99, "geometry.channels"), ("geometry.channels", True, "geometry.channels"),
    ("geometry.image_size", -1, "geometry.image_size"), ("geometry.image_size", 1.5, "geometry.image_size"),
    ("geometry.image_size", 10**12, "geometry.image_size"), ("geometry.num_classes", 1, "geometry.num_classes"),
    ("geometry.num_classes", None, "geometry.num_classes"), ("geometry.num_classes", 10**9, "geometry.num_classes"),
    ("dataset", 5, "dataset"), ("classes", "0123456789", "classes"), ("classes", [0, 1], "classes"),
    ("weights_sha256", 5, "weights_sha256"), ("weights_sha256", "zz", "weights_sha256"),
    ("epochs", "ten", "epochs"), ("epochs", -1, "epochs"), ("seed", 1.5, "seed"),
    ("validation_accuracy", "high", "validation_accuracy"), ("test_accuracy", 7, "test_accuracy"),
    ("test_accuracy", True, "test_accuracy"),
    ("geometry.channels", 3, "does not fit|size mismatch"), ("geometry.num_classes", 12, "does not fit"),
    ("geometry.image_size", 32, "does not fit|cannot build|expects"),
):
    sidecar_case(f"type-{key}-{str(value)[:12]}", _set(key, value), match)
for key in ("model", "bits", "geometry"):
    sidecar_case(f"missing-{key}", _drop(key), key)
sidecar_case("unsealed", _drop("checkpoint_sha256"), "unverified.*--trust-unverified", reseal=False)
sidecar_case("no-weights-hash", lambda m: (m.pop("weights_sha256"), m.pop("checkpoint_sha256")), "unverified",
             reseal=False)
for key, value in (("bits", "1,1,32"), ("bits", "2"), ("model", "mnist_b"), ("dataset", "fashion-mnist"),
                   ("geometry.num_classes", 11), ("test_accuracy", 0.1), ("classes", ["a"] * 10)):
    sidecar_case(f"tampered-{key}-{value}"[:40], _set(key, value), "changed after saving", reseal=False)
sidecar_case("tampered-weights-hash", _set("weights_sha256", "0" * 64), "does not match", reseal=False)


def file_case(id: str, damage: Callable[[Path], None], match: str, *extra: str) -> None:
    def build(c: Ctx) -> list[str]:
        folder = _copy_ckpt(c)
        damage(folder)
        return _eval_ckpt(folder, *extra)

    CASES.append(Case(f"ckpt-file-{id}", build, 1, match))


def _truncate(name: str, keep: int):
    def damage(folder: Path) -> None:
        data = (folder / name).read_bytes()
        (folder / name).write_bytes(data[:keep] if keep >= 0 else data[: len(data) + keep])

    return damage


def _flip(name: str, at: int):
    def damage(folder: Path) -> None:
        data = bytearray((folder / name).read_bytes())
        data[at] ^= 0xFF
        (folder / name).write_bytes(bytes(data))

    return damage


def _replace(name: str, content: bytes | None = None, link: str | None = None, mkdir: bool = False):
    def damage(folder: Path) -> None:
        (folder / name).unlink()
        if link:
            os.symlink(link, folder / name)
        elif mkdir:
            (folder / name).mkdir()
        elif content is not None:
            (folder / name).write_bytes(content)

    return damage


file_case("weights-truncated", _truncate("model.safetensors", -100), "does not match")
file_case("weights-empty", _truncate("model.safetensors", 0), "does not match")
file_case("weights-bitflip", _flip("model.safetensors", 5000), "does not match")
file_case("weights-garbage", _replace("model.safetensors", b"\x00garbage" * 100), "does not match")
file_case("weights-dev-zero", _replace("model.safetensors", link="/dev/zero"), "not a regular file")
file_case("weights-dir", _replace("model.safetensors", mkdir=True), "directory")
file_case("weights-missing", _replace("model.safetensors"), "incomplete")
file_case("sidecar-missing", _replace("model.json"), "incomplete")
file_case("sidecar-not-json", _replace("model.json", b"{not json"), "corrupt checkpoint sidecar")
file_case("sidecar-array", _replace("model.json", b"[1, 2]"), "JSON object")
file_case("sidecar-empty", _replace("model.json", b""), "corrupt checkpoint sidecar")
file_case("sidecar-binary", _replace("model.json", b"\xff\xfe\x00\x01"), "UTF-8|corrupt")
file_case("sidecar-dev-zero", _replace("model.json", link="/dev/zero"), "not a regular file")
file_case("sidecar-dir", _replace("model.json", mkdir=True), "directory")
file_case("sidecar-huge", _replace("model.json", b" " * (17 << 20)), "limit")
file_case("sidecar-dangling-link", _replace("model.json", link="/nonexistent/x"), "incomplete|does not exist")
file_case("sidecar-deeply-nested", _replace("model.json", b"[" * 200_000 + b"]" * 200_000), "nested too deeply")
file_case("weights-garbage-trusted", lambda f: (_replace("model.safetensors", b"junk" * 50)(f),
                                                _drop_hashes(f)), "corrupt checkpoint", "--trust-unverified")


def _drop_hashes(folder: Path) -> None:
    meta = json.loads((folder / "model.json").read_text())
    meta.pop("weights_sha256"), meta.pop("checkpoint_sha256")
    (folder / "model.json").write_text(json.dumps(meta))


# ============================================================ adversarial sets
def _copy_set(c: Ctx) -> Path:
    for suffix in (".npz", ".json"):
        shutil.copy(c.pristine / f"set{suffix}", c.tmp / f"set{suffix}")
    return c.tmp / "set.npz"


def write_set(path: Path, arrays: dict[str, np.ndarray], meta: dict | None = None) -> Path:
    """A set with a valid sidecar (hash and seal), whatever its contents: checks must look inside."""
    np.savez(path, **arrays)
    meta = {"dataset": EMB, **(meta or {})}
    meta["npz_sha256"] = file_digest(path)
    meta["sha256"] = set_seal(meta)
    path.with_suffix(".json").write_text(json.dumps(meta))
    return path


def _eval_set(path: Path, *extra: str) -> list[str]:
    return ["evaluate", "--checkpoint", "zoo:mnist_a@fp", "--adversarial", str(path), "--dataset", EMB, *extra]


def content_case(id: str, mutate: Callable[[dict], None], match: str, command: str = "evaluate") -> None:
    def build(c: Ctx) -> list[str]:
        arrays = {k: v.copy() for k, v in c.arrays.items()}
        mutate(arrays)
        path = write_set(c.tmp / "bad.npz", arrays)
        if command == "show":
            return ["show", str(path), "--out", str(c.tmp / "g.png"), "--dataset", EMB]
        return _eval_set(path)

    CASES.append(Case(f"set-{command}-{id}", build, 1, match))


def _put(key: str, fn):
    def mutate(arrays: dict) -> None:
        arrays[key] = fn(arrays[key])

    return mutate


def _nan(x):
    x = x.copy()
    x.flat[0] = np.nan
    return x


def _inf(x):
    x = x.copy()
    x.flat[3] = np.inf
    return x


CONTENT = [
    ("images-nan", _put("images", _nan), "NaN or infinite"),
    ("images-inf", _put("images", _inf), "NaN or infinite"),
    ("images-above-1", _put("images", lambda x: x * 2 + 0.5), r"\[0,1\]"),
    ("images-negative", _put("images", lambda x: x - 0.5), r"\[0,1\]"),
    ("images-uint8", _put("images", lambda x: (x * 255).astype(np.uint8)), "uint8"),
    ("images-int64", _put("images", lambda x: x.astype(np.int64)), "dtype"),
    ("images-bool", _put("images", lambda x: x > 0.5), "dtype"),
    ("images-0d", _put("images", lambda x: np.float32(0.5)), "shape"),
    ("images-empty", _put("images", lambda x: x[:0]), "no images"),
    ("images-2d", _put("images", lambda x: x.reshape(len(x), -1)), "shape"),
    ("images-5d", _put("images", lambda x: x[:, None]), "shape"),
    ("images-huge-side", _put("images", lambda x: np.zeros((1, 1, 1, 5000), np.float32)), "exceeds"),
    ("images-cifar-shape", _put("images", lambda x: np.zeros((len(x), 3, 32, 32), np.float32)), "expects 1x28x28"),
    ("images-fewer", _put("images", lambda x: x[:3]), "vector of 3|lengths|labels"),
    ("labels-float", _put("labels", lambda y: y.astype(np.float32)), "labels must be integers"),
    ("labels-negative", _put("labels", lambda y: y - 100), "labels must lie"),
    ("labels-too-large", _put("labels", lambda y: y + 10**6), "labels must lie"),
    ("labels-class-10", _put("labels", lambda y: np.full_like(y, 10)), "10 classes"),
    ("labels-short", _put("labels", lambda y: y[:2]), "labels must be a vector"),
    ("labels-0d", _put("labels", lambda y: np.int64(3)), "labels must be a vector"),
    ("labels-bool", _put("labels", lambda y: y > 3), "labels must be integers"),
    ("labels-bad-onehot", _put("labels", lambda y: np.full((len(y), 10), 2)), "one-hot"),
    ("index-float", _put("image_index", lambda v: v.astype(np.float64)), "image_index must be integers"),
    ("index-negative", _put("image_index", lambda v: v - 10**6), "image_index must lie"),
    ("index-long", _put("image_index", lambda v: np.concatenate([v, v])), "image_index must be a vector"),
    ("success-short", _put("success", lambda v: v[:1]), "success must be a vector"),
    ("success-float", _put("success", lambda v: v.astype(np.float32) + 0.5), "success must be booleans"),
    ("success-two", _put("success", lambda v: np.full(len(v), 2)), "success must be booleans"),
    ("costs-short", _put("iterations", lambda v: v[:1]), "iterations must be"),
    ("costs-float", _put("iterations", lambda v: v.astype(np.float32)), "iterations must be"),
    ("missing-images", lambda a: a.pop("images"), "lacks arrays"),
    ("missing-labels", lambda a: a.pop("labels"), "lacks arrays"),
    ("missing-index", lambda a: a.pop("image_index"), "lacks arrays"),
    ("object-member", lambda a: a.update(extra_x=np.array([{"a": 1}], dtype=object)), "corrupt|pickle"),
]
for id, mutate, match in CONTENT:
    content_case(id, mutate, match)
for id, mutate, match in CONTENT[:6] + CONTENT[14:17]:
    content_case(id, mutate, match, command="show")


def set_file_case(id: str, damage: Callable[[Path], None], match: str, trust: bool = False,
                  command: str = "evaluate") -> None:
    def build(c: Ctx) -> list[str]:
        path = _copy_set(c)
        damage(path)
        if command == "show":
            return ["show", str(path), "--out", str(c.tmp / "g.png"), "--dataset", EMB,
                    *(["--trust-unverified"] if trust else [])]
        return _eval_set(path, *(["--trust-unverified"] if trust else []))

    CASES.append(Case(f"set-file-{command}-{id}{'-trusted' if trust else ''}", build, 1, match))


def _bytes(fn):
    def damage(path: Path) -> None:
        path.write_bytes(fn(path.read_bytes()))

    return damage


def _unsidecar(path: Path) -> None:
    path.with_suffix(".json").unlink()


def _bytes_nosidecar(fn):
    def damage(path: Path) -> None:
        _bytes(fn)(path)
        _unsidecar(path)

    return damage


def _flip_at(frac: float):
    def fn(b: bytes) -> bytes:
        a = bytearray(b)
        a[int(len(a) * frac)] ^= 0x55
        return bytes(a)

    return fn


DAMAGE = [
    ("truncated-half", lambda b: b[: len(b) // 2]),
    ("truncated-tail", lambda b: b[:-30]),
    ("garbled-middle", _flip_at(0.5)),
    ("garbled-start", _flip_at(0.01)),
    ("not-a-zip", lambda b: b"this is plain text, not an npz file\n" * 20),
    ("empty", lambda b: b""),
    ("zeros", lambda b: bytes(len(b))),
]
for id, fn in DAMAGE:
    set_file_case(id, _bytes(fn), "does not match|corrupt")
    if id != "garbled-start":  # a flipped byte in a zip header's padding is harmless without a hash
        set_file_case(id, _bytes_nosidecar(fn), "corrupt", trust=True)
for id, fn in DAMAGE[:3]:
    set_file_case(id, _bytes(fn), "does not match|corrupt", command="show")
set_file_case("no-sidecar", _unsidecar, "unverified.*--trust-unverified")
set_file_case("no-sidecar", _unsidecar, "unverified", command="show")
set_file_case("dev-zero", lambda p: (p.unlink(), os.symlink("/dev/zero", p)), "not a regular file")
set_file_case("dev-zero", lambda p: (p.unlink(), os.symlink("/dev/zero", p), _unsidecar(p)),
              "not a regular file", trust=True)
set_file_case("dir", lambda p: (p.unlink(), p.mkdir()), "directory")
set_file_case("sidecar-not-json", lambda p: p.with_suffix(".json").write_text("{oops"), "corrupt adversarial set sidecar")
set_file_case("sidecar-deep", lambda p: p.with_suffix(".json").write_text("[" * 100_000 + "]" * 100_000),
              "nested too deeply")
set_file_case("sidecar-list", lambda p: p.with_suffix(".json").write_text("[]"), "JSON object")
set_file_case("sidecar-dev-zero", lambda p: (p.with_suffix(".json").unlink(),
                                             os.symlink("/dev/zero", p.with_suffix(".json"))), "not a regular file")


def _edit_set_meta(key, value):
    def damage(path: Path) -> None:
        side = path.with_suffix(".json")
        meta = json.loads(side.read_text())
        meta[key] = value
        side.write_text(json.dumps(meta))

    return damage


for key, value in (("dataset", "cifar10"), ("attack", "jsma"), ("weights_sha256", "0" * 64), ("count", 99)):
    set_file_case(f"sidecar-edited-{key}", _edit_set_meta(key, value), "changed after saving")
set_file_case("sidecar-no-hash", lambda p: (_edit_set_meta("sha256", None)(p), _drop_set_hash(p)), "unverified")


def _drop_set_hash(path: Path) -> None:
    side = path.with_suffix(".json")
    meta = json.loads(side.read_text())
    meta.pop("sha256"), meta.pop("npz_sha256")
    side.write_text(json.dumps(meta))


@case("set-swapped-npz", 1, "does not match")
def _(c: Ctx) -> list[str]:
    path = _copy_set(c)
    arrays = dict(c.arrays)
    arrays["labels"] = (arrays["labels"] + 1) % 10
    np.savez(path, **arrays)  # another valid set under the old sidecar
    return _eval_set(path)


@case("set-zip-bomb-declared", 1, "unpacks to")
def _(c: Ctx) -> list[str]:
    """Members whose zip directory declares more than the limit are refused before inflating."""
    path = c.tmp / "bomb.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in ("images", "labels", "image_index", "success", "x"):
            zf.writestr(f"{name}.npy", b"\x00" * 1000)
    data = bytearray(path.read_bytes())
    at = data.find(b"PK\x01\x02")
    while at >= 0:  # each central-directory entry: uncompressed size at offset 24 -> 4 GiB
        data[at + 24 : at + 28] = (2**32 - 1).to_bytes(4, "little")
        at = data.find(b"PK\x01\x02", at + 4)
    path.write_bytes(bytes(data))
    return ["show", str(path), "--trust-unverified", "--out", str(c.tmp / "g.png")]


@case("set-member-not-npy", 1, "not an .npy")
def _(c: Ctx) -> list[str]:
    path = c.tmp / "odd.npz"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("images.pkl", b"\x80\x04K\x01.")
    return _eval_set(path, "--trust-unverified")


# ============================================================ datasets (npz:DIR, image-folder:DIR, IDX)
def _npz_dir(c: Ctx, x_train=None, y_train=None, x_test=None, y_test=None, n: int = 20) -> Path:
    d = c.tmp / "npzdata"
    d.mkdir(exist_ok=True)
    x = np.zeros((n, 28, 28), np.uint8)
    y = np.arange(n, dtype=np.int64) % 10
    np.savez(d / "train.npz", x=x if x_train is None else x_train, y=y if y_train is None else y_train)
    np.savez(d / "test.npz", x=x if x_test is None else x_test, y=y if y_test is None else y_test)
    return d


def npz_case(id: str, match: str, **arrays) -> None:
    def build(c: Ctx) -> list[str]:
        d = _npz_dir(c, **arrays)
        return ["evaluate", "--checkpoint", "zoo:mnist_a@fp", "--dataset", f"npz:{d}"]

    CASES.append(Case(f"npz-{id}", build, 1, match))


npz_case("y-float", "y must be integers", y_test=np.zeros(20, np.float32))
npz_case("y-huge", "y must lie in 0..9999", y_test=np.full(20, 10**12, np.int64))
npz_case("y-huge-train", "y must lie in 0..9999", y_train=np.full(20, 2**62, np.int64))
npz_case("y-negative", "y must lie", y_test=np.full(20, -1, np.int64))
npz_case("y-short", "y must be a vector", y_test=np.zeros(5, np.int64))
npz_case("y-2d", "y must be a vector", y_test=np.zeros((20, 1), np.int64))
npz_case("x-nan", "NaN", x_test=np.full((20, 28, 28), np.nan, np.float32))
npz_case("x-float-range", r"\[0,1\]", x_test=np.full((20, 28, 28), 255.0, np.float32))
npz_case("x-5d", "x must be", x_test=np.zeros((20, 1, 28, 28, 1), np.uint8))
npz_case("x-2-channels", "x must be", x_test=np.zeros((20, 28, 28, 2), np.uint8))
npz_case("x-int64", "dtype", x_test=np.zeros((20, 28, 28), np.int64))
npz_case("x-empty", "no images", x_test=np.zeros((0, 28, 28), np.uint8), y_test=np.zeros(0, np.int64))
npz_case("x-cifar-shape", "expects 1x28x28", x_test=np.zeros((20, 32, 32, 3), np.uint8))
npz_case("x-label-10", "10 classes", y_test=np.full(20, 10, np.int64))


@case("npz-missing-y", 1, "must hold arrays")
def _(c: Ctx) -> list[str]:
    d = _npz_dir(c)
    np.savez(d / "test.npz", x=np.zeros((3, 28, 28), np.uint8))
    return ["evaluate", "--checkpoint", "zoo:mnist_a@fp", "--dataset", f"npz:{d}"]


@case("npz-truncated", 1, "corrupt npz dataset")
def _(c: Ctx) -> list[str]:
    d = _npz_dir(c)
    data = (d / "test.npz").read_bytes()
    (d / "test.npz").write_bytes(data[: len(data) // 2])
    return ["evaluate", "--checkpoint", "zoo:mnist_a@fp", "--dataset", f"npz:{d}"]


@case("npz-dev-zero", 1, "not a regular file")
def _(c: Ctx) -> list[str]:
    d = _npz_dir(c)
    (d / "test.npz").unlink()
    os.symlink("/dev/zero", d / "test.npz")
    return ["evaluate", "--checkpoint", "zoo:mnist_a@fp", "--dataset", f"npz:{d}"]


@case("npz-two-test-files", 1, "one \\*train.npz and one \\*test.npz")
def _(c: Ctx) -> list[str]:
    d = _npz_dir(c)
    shutil.copy(d / "test.npz", d / "b_test.npz")
    return ["evaluate", "--checkpoint", "zoo:mnist_a@fp", "--dataset", f"npz:{d}"]


@case("npz-pickled", 1, "corrupt npz dataset")
def _(c: Ctx) -> list[str]:
    d = _npz_dir(c)
    np.savez(d / "test.npz", x=np.array([object()], dtype=object), y=np.zeros(1, np.int64))
    return ["evaluate", "--checkpoint", "zoo:mnist_a@fp", "--dataset", f"npz:{d}"]


def _folder(c: Ctx, size=(28, 28)) -> Path:
    root = c.tmp / "imgs"
    for split in ("train", "test"):
        for cls in ("0", "1"):
            (root / split / cls).mkdir(parents=True)
            for i in range(2):
                Image.new("L", size, color=i * 100).save(root / split / cls / f"{i}.png")
    return root


def folder_case(id: str, damage: Callable[[Path], None], match: str) -> None:
    def build(c: Ctx) -> list[str]:
        root = _folder(c)
        damage(root)
        return ["evaluate", "--checkpoint", "zoo:mnist_a@fp", "--dataset", f"image-folder:{root}"]

    CASES.append(Case(f"imgfolder-{id}", build, 1, match))


folder_case("png-bomb", lambda r: Image.new("1", (6000, 6000)).save(r / "test" / "0" / "bomb.png"),
            "decompression bomb|more than the limit")
folder_case("png-garbage", lambda r: (r / "test" / "0" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"x" * 50),
            "unreadable image")
folder_case("png-text", lambda r: (r / "test" / "1" / "t.png").write_text("not an image"), "unreadable image")
folder_case("png-dev-zero", lambda r: os.symlink("/dev/zero", r / "test" / "0" / "z.png"), "not a regular file")
folder_case("mixed-sizes", lambda r: Image.new("L", (30, 30)).save(r / "test" / "1" / "big.png"), "mixes image sizes")
folder_case("no-test", lambda r: shutil.rmtree(r / "test"), "does not exist")
folder_case("no-classes", lambda r: [shutil.rmtree(p) for p in (r / "test").iterdir()], "no class sub-folders")
folder_case("class-mismatch", lambda r: (r / "test" / "2").mkdir(), "class folders differ|holds no|differ")
folder_case("wrong-size", lambda r: [(p.unlink(), Image.new("L", (32, 32)).save(p))
                                      for p in (r / "test").rglob("*.png")], "expects 1x28x28")


def idx_case(id: str, damage: Callable[[Path], None], match: str) -> None:
    def build(c: Ctx) -> list[str]:
        root = c.tmp / "data"
        (root / "mnist").mkdir(parents=True)
        for f in (c.data / "mnist").glob("*.gz"):
            os.symlink(f, root / "mnist" / f.name)
        damage(root / "mnist")
        return ["evaluate", "--checkpoint", "zoo:mnist_a@fp", "--dataset", "mnist", "--data-dir", str(root)]

    CASES.append(Case(f"idx-{id}", build, 1, match, needs_data=True))


def _relink(name: str, target: str):
    return lambda d: ((d / name).unlink(), os.symlink(target, d / name))


idx_case("dev-zero", _relink("t10k-images-idx3-ubyte.gz", "/dev/zero"), "not a regular file")
idx_case("dev-urandom", _relink("train-labels-idx1-ubyte.gz", "/dev/urandom"), "not a regular file")
idx_case("missing-offline", lambda d: (d / "t10k-labels-idx1-ubyte.gz").unlink(), "missing data file|ANNT_OFFLINE")
idx_case("truncated", lambda d: ((d / "t10k-labels-idx1-ubyte.gz").unlink(),
                                 (d / "t10k-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b\x08")), "checksum mismatch")
idx_case("dir", lambda d: ((d / "t10k-labels-idx1-ubyte.gz").unlink(), (d / "t10k-labels-idx1-ubyte.gz").mkdir()),
         "directory")


# ============================================================ study specs
def spec_case(id: str, edit: Callable[[dict, Ctx], dict | str], match: str, check: bool = True) -> None:
    def build(c: Ctx) -> list[str]:
        spec = edit(tiny_spec(c.pristine / "ckpt_emb"), c)
        path = c.tmp / "spec.yaml"
        if isinstance(spec, bytes):
            path.write_bytes(spec)
        else:
            path.write_text(spec if isinstance(spec, str) else yaml.safe_dump(spec))
        return ["run", str(path), "--out", str(c.tmp / "out"), "--quiet", *(["--check"] if check else [])]

    CASES.append(Case(f"spec-{id}{'' if check else '-run'}", build, 1, match))


def _with(**kv):
    return lambda s, c: {**s, **kv}


def _model(**kv):
    return lambda s, c: {**s, "models": [{**s["models"][0], **kv}]}


def _attack(**kv):
    return lambda s, c: {**s, "attacks": [{**s["attacks"][0], **kv}]}


BOMB = ("a: &a [1,1,1,1,1,1,1,1,1,1]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
        "d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]\n"
        "f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e,*e]\nname: [*f,*f,*f,*f,*f,*f,*f,*f,*f]\n")
for check in (True, False):
    spec_case("seed-negative", _with(seed=-1), "seed", check)
    spec_case("seed-2**32", _with(seed=2**32), "seed", check)
    spec_case("seed-2**70", _with(seed=2**70), "seed", check)
    spec_case("train-seed-huge", lambda s, c: {**s, "models": [{"name": "mnist_a", "bits": ["fp"],
                                                                 "train": {"seed": 2**40, "epochs": 1}}]},
              "seed", check)
    spec_case("alias-bomb", lambda s, c: BOMB, "alias bomb", check)
    spec_case("data-dir-missing", lambda s, c: {**s, "datasets": ["mnist"], "data_dir": str(c.tmp / "nodata"),
                                                "models": [{"name": "mnist_a", "bits": ["fp"],
                                                            "train": {"epochs": 1}}]},
              "datasets\\[0\\].*(missing|not found)", check)
spec_case("seed-float", _with(seed=1.5), "seed")
spec_case("seed-text", _with(seed="x"), "seed")
spec_case("bits-true", _model(bits=[True]), "bits")
spec_case("bits-yes", lambda s, c: yaml.safe_dump(s).replace("- fp", "- yes"), "bits")
spec_case("bits-empty", _model(bits=[""]), "bitwidth")
spec_case("bits-float", _model(bits=[3.5]), "bits")
spec_case("bits-0", _model(bits=[0]), "bitwidth")
spec_case("samples-0", _with(samples=0), "samples")
spec_case("runs-0", _with(runs=0), "runs")
spec_case("runs-text", _with(runs="three"), "runs")
spec_case("threads-huge", _with(threads=10**6), "threads")
spec_case("eps-nan", lambda s, c: yaml.safe_dump(s).replace("eps: 0.1", "eps: .nan"), "eps")
spec_case("eps-inf", lambda s, c: yaml.safe_dump(s).replace("eps: 0.1", "eps: .inf"), "eps")
spec_case("eps-negative-sci", lambda s, c: yaml.safe_dump(s).replace("eps: 0.1", "eps: -1e-3"), "eps")
spec_case("max-iter-huge", _attack(name="boundary", params={"max_iter": 10**9}), "max_iter")
spec_case("cw-steps-huge", _attack(name="cw_l2", params={"binary_search_steps": 10**8}), "binary_search_steps")
for key, value in (("lr", 1e300), ("lr", -1), ("lr", ".nan"), ("lr_milestones", [-1]), ("lr_milestones", [0, 5]),
                   ("momentum", 2), ("epochs", 0), ("batch_size", 0), ("weight_decay", 1e10)):
    spec_case(f"train-{key}-{value}", lambda s, c, k=key, v=value: yaml.safe_dump(
        {**s, "models": [{"name": "mnist_a", "bits": ["fp"], "train": {"epochs": 1, k: v}}]}).replace("'.nan'", ".nan"),
        key)
spec_case("python-tag", lambda s, c: "name: !!python/object/apply:os.system ['true']\n", "invalid YAML|tag")
spec_case("deeply-nested", lambda s, c: "name: " + "[" * 50_000 + "]" * 50_000 + "\n", "nested too deeply")
spec_case("invalid-yaml", lambda s, c: "name: [unclosed\n", "invalid YAML")
spec_case("not-a-mapping", lambda s, c: "- 1\n- 2\n", "mapping")
spec_case("empty", lambda s, c: "", "empty")
spec_case("binary", lambda s, c: b"\xff\xfe\x00garbage", "not a text file")
spec_case("huge", lambda s, c: "# " + "x" * (2 << 20) + "\n", "limit")
spec_case("unknown-key", _with(colour="blue"), "unknown key")
spec_case("unknown-dataset", _with(datasets=["imagenet"]), "unknown dataset")
spec_case("checkpoint-missing", _model(checkpoint="/nonexistent/ckpt"), "does not exist")


def _ckpt_variant(mutate: Callable[[dict], None], reseal: bool):
    def edit(s: dict, c: Ctx) -> dict:
        folder = c.tmp / "ck"
        shutil.copytree(c.pristine / "ckpt_emb", folder)
        meta = json.loads((folder / "model.json").read_text())
        mutate(meta)
        if reseal:
            meta["checkpoint_sha256"] = seal_of(meta)
        (folder / "model.json").write_text(json.dumps(meta))
        return {**s, "models": [{**s["models"][0], "checkpoint": str(folder)}]}

    return edit


spec_case("checkpoint-unsealed", _ckpt_variant(lambda m: m.pop("checkpoint_sha256"), False), "unverified")
spec_case("checkpoint-bits-edited", _ckpt_variant(lambda m: m.update(bits="32,32,32 "), False), "changed after saving")
spec_case("checkpoint-bits-type", _ckpt_variant(lambda m: m.update(bits=True), True), "bits")
spec_case("checkpoint-weights-hash", _ckpt_variant(lambda m: m.update(weights_sha256="1" * 64), True), "does not match")
spec_case("checkpoint-other-dataset", _ckpt_variant(lambda m: m.update(dataset="cifar10"), True), "trained on")
# (mnist-embedded is a sample of MNIST: an MNIST model may be evaluated on it, not on Fashion-MNIST)
spec_case("zoo-other-dataset", lambda s, c: {**_model(checkpoint="zoo:mnist_a@fp")(s, c), "datasets": ["fashion-mnist"]},
          "trained on")
spec_case("spec-dev-zero", lambda s, c: "", "not a regular file")  # replaced below
CASES[-1] = Case("spec-dev-zero", lambda c: (os.symlink("/dev/zero", c.tmp / "z.yaml"),
                                             ["run", str(c.tmp / "z.yaml"), "--check"])[1], 1, "not a regular file")


# ============================================================ output folders and results databases
def _foreign_db(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)")
        conn.execute("INSERT INTO invoices (total) VALUES (12.5)")
    conn.close()


@case("out-foreign-sqlite-run", 1, "not a usable results database.*another program")
def _(c: Ctx) -> list[str]:
    _foreign_db(c.tmp / "out" / "results.sqlite")
    (c.tmp / "spec.yaml").write_text(yaml.safe_dump(tiny_spec(c.pristine / "ckpt_emb")))
    return ["run", str(c.tmp / "spec.yaml"), "--out", str(c.tmp / "out"), "--quiet"]


@case("out-foreign-sqlite-meta-table", 1, "not a usable results database")
def _(c: Ctx) -> list[str]:
    db = c.tmp / "out" / "results.sqlite"
    db.parent.mkdir()
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE meta (key TEXT, value TEXT)")
    conn.close()
    (c.tmp / "spec.yaml").write_text(yaml.safe_dump(tiny_spec(c.pristine / "ckpt_emb")))
    return ["run", str(c.tmp / "spec.yaml"), "--out", str(c.tmp / "out"), "--quiet"]


@case("out-garbage-db-run", 1, "not a usable results database")
def _(c: Ctx) -> list[str]:
    (c.tmp / "out").mkdir()
    (c.tmp / "out" / "results.sqlite").write_bytes(b"garbage, not sqlite" * 50)
    (c.tmp / "spec.yaml").write_text(yaml.safe_dump(tiny_spec(c.pristine / "ckpt_emb")))
    return ["run", str(c.tmp / "spec.yaml"), "--out", str(c.tmp / "out"), "--quiet"]


@case("out-db-dev-zero", 1, "not a regular file")
def _(c: Ctx) -> list[str]:
    (c.tmp / "out").mkdir()
    os.symlink("/dev/zero", c.tmp / "out" / "results.sqlite")
    (c.tmp / "spec.yaml").write_text(yaml.safe_dump(tiny_spec(c.pristine / "ckpt_emb")))
    return ["run", str(c.tmp / "spec.yaml"), "--out", str(c.tmp / "out"), "--quiet"]


@case("run-threads-huge", 1, "threads must be in 1..1024")
def _(c: Ctx) -> list[str]:
    (c.tmp / "spec.yaml").write_text(yaml.safe_dump(tiny_spec(c.pristine / "ckpt_emb")))
    return ["run", str(c.tmp / "spec.yaml"), "--out", str(c.tmp / "out"), "--threads", "1000000000", "--check"]


@case("run-workers-huge", 1, "workers must be in 1..4096")
def _(c: Ctx) -> list[str]:
    (c.tmp / "spec.yaml").write_text(yaml.safe_dump(tiny_spec(c.pristine / "ckpt_emb")))
    return ["run", str(c.tmp / "spec.yaml"), "--out", str(c.tmp / "out"), "--workers", "1000000", "--check"]


@case("run-executor-unknown", 2, "--executor")
def _(c: Ctx) -> list[str]:
    (c.tmp / "spec.yaml").write_text(yaml.safe_dump(tiny_spec(c.pristine / "ckpt_emb")))
    return ["run", str(c.tmp / "spec.yaml"), "--out", str(c.tmp / "out"), "--executor", "threads", "--check"]


@case("run-ray-address-without-ray", 1, "--ray-address needs --executor ray")
def _(c: Ctx) -> list[str]:
    (c.tmp / "spec.yaml").write_text(yaml.safe_dump(tiny_spec(c.pristine / "ckpt_emb")))
    return ["run", str(c.tmp / "spec.yaml"), "--out", str(c.tmp / "out"), "--executor", "processes",
            "--ray-address", "127.0.0.1:1", "--check"]


@case("out-foreign-sqlite-run-processes", 1, "not a usable results database.*another program")
def _(c: Ctx) -> list[str]:
    (c.tmp / "out").mkdir()
    with sqlite3.connect(c.tmp / "out" / "results.sqlite") as conn:
        conn.execute("CREATE TABLE accounts (id INTEGER, balance REAL)")
    conn.close()
    (c.tmp / "spec.yaml").write_text(yaml.safe_dump(tiny_spec(c.pristine / "ckpt_emb")))
    return ["run", str(c.tmp / "spec.yaml"), "--out", str(c.tmp / "out"), "--quiet", "--workers", "2"]


@case("report-damaged-progression", 1, "corrupt progression file")
def _(c: Ctx) -> list[str]:
    out = _study(c)
    with sqlite3.connect(out / "results.sqlite") as conn:
        conn.execute("INSERT INTO progressions (cell, dataset, model, bits, bits_tag, label, path, iterations)"
                     " VALUES ('x', 'mnist-embedded', 'mnist_a', '32,32,32', 'fp', 'b', 'prog.npz', '[0]')")
        conn.execute("INSERT INTO study_cells (study, cell) SELECT id, 'x' FROM studies")
    conn.close()
    (out / "prog.npz").write_bytes(b"PK\x03\x04 truncated")
    return ["report", str(out), "--out", str(c.tmp / "rep")]


CASES[-1].new_files_ok = True


@case("out-is-a-file", 1, "not a directory")
def _(c: Ctx) -> list[str]:
    (c.tmp / "out").write_text("mine")
    (c.tmp / "spec.yaml").write_text(yaml.safe_dump(tiny_spec(c.pristine / "ckpt_emb")))
    return ["run", str(c.tmp / "spec.yaml"), "--out", str(c.tmp / "out"), "--check"]


@case("report-foreign-sqlite", 1, "not a usable results database")
def _(c: Ctx) -> list[str]:
    _foreign_db(c.tmp / "out" / "results.sqlite")
    return ["report", str(c.tmp / "out")]


@case("report-garbage-db", 1, "not a usable results database")
def _(c: Ctx) -> list[str]:
    (c.tmp / "out").mkdir()
    (c.tmp / "out" / "results.sqlite").write_text("hello")
    return ["report", str(c.tmp / "out")]


@case("report-no-db", 1, "no results database")
def _(c: Ctx) -> list[str]:
    (c.tmp / "out").mkdir()
    return ["report", str(c.tmp / "out")]


def _study(c: Ctx) -> Path:
    out = c.tmp / "study"
    shutil.copytree(c.pristine / "study" / "out", out)
    return out


def _study_set(out: Path) -> Path:
    return next((out / "sets").rglob("*.npz"))


@case("report-damaged-set", 1, "corrupt adversarial set|does not match")  # new_files_ok set below
def _(c: Ctx) -> list[str]:
    out = _study(c)
    s = _study_set(out)
    s.write_bytes(s.read_bytes()[:100])
    return ["report", str(out), "--out", str(c.tmp / "rep")]


CASES[-1].new_files_ok = True


@case("report-out-is-file", 1, "not a directory")
def _(c: Ctx) -> list[str]:
    out = _study(c)
    (c.tmp / "rep").write_text("mine")
    return ["report", str(out), "--out", str(c.tmp / "rep")]


# ============================================================ the table's runner
def _one_line_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line, got {len(lines)}: {err[:2000]}"
    assert lines[0].startswith("annt: error: "), lines[0][:500]
    assert "Traceback" not in err
    assert len(lines[0]) < 2000, f"line of {len(lines[0])} characters"
    return lines[0]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_input(case: Case, pristine, set_arrays, tmp_path, monkeypatch, capsys, request):
    # the MNIST IDX files (real, or in a fresh clone mnist-embedded's images as IDX files)
    data = request.getfixturevalue("mnist_files") if case.needs_data else None
    monkeypatch.chdir(tmp_path)
    argv = case.build(Ctx(tmp_path, pristine, set_arrays, data))
    capsys.readouterr()
    before = snapshot(tmp_path)
    pristine_before = snapshot(pristine)
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse's usage errors exit(2) after printing their one line
        rc = exc.code
    captured = capsys.readouterr()
    assert rc == case.code, f"exit {rc}, stderr: {captured.err[:1000]}"
    line = _one_line_error(captured.err)
    assert re.search(case.match, line), line
    after = snapshot(tmp_path)
    if case.new_files_ok:
        after = {k: v for k, v in after.items() if k in before}
    assert after == before, "a file was written or changed"
    assert snapshot(pristine) == pristine_before


def test_suite_is_large_enough():
    assert len(CASES) >= 150
    assert len({c.id for c in CASES}) == len(CASES), "case ids must be unique"
