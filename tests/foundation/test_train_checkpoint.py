import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import annt
from annt.errors import AnntError
from annt.models import create_model
from annt.store.checkpoint import load_checkpoint, read_meta, save_checkpoint
from annt.train import train_model

TRAIN_ARGS = dict(epochs=2, train_limit=1500, progress=False, device="cpu")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run")
    train_model("mnist_a", "embedded", "1", out, **TRAIN_ARGS)
    return out


def test_training_writes_best_last_metrics_and_sidecar(trained):
    for sub in ("best", "last"):
        assert (trained / sub / "model.safetensors").is_file()
    lines = (trained / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2]
    meta = read_meta(trained / "best")
    for key in ("model", "bits", "dataset", "epochs", "seed", "validation_accuracy", "test_accuracy",
                "annt_version", "weights_sha256"):
        assert key in meta
    assert meta["model"] == "mnist_a" and meta["bits"] == "1,1,32"
    model = annt.load(trained / "best")
    assert not model.training and model.conv1.w_bits == 1


def test_training_is_reproducible_and_finished_run_is_not_repeated(trained, tmp_path):
    result = train_model("mnist_a", "embedded", "1", tmp_path / "again", **TRAIN_ARGS)
    a = load_file(trained / "last" / "model.safetensors")
    b = load_file(tmp_path / "again" / "last" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    before = (tmp_path / "again" / "last" / "model.safetensors").stat().st_mtime_ns
    again = train_model("mnist_a", "embedded", "1", tmp_path / "again", **TRAIN_ARGS)
    assert (tmp_path / "again" / "last" / "model.safetensors").stat().st_mtime_ns == before
    assert again.epochs == result.epochs == 2


def test_kill_and_resume_matches_uninterrupted_run(tmp_path, kill_and_resume):
    reference = tmp_path / "ref"
    train_model("mnist_a", "embedded", "fp", reference, epochs=3, train_limit=1500, progress=False, device="cpu")
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "annt.cli.main", "train", "--model", "mnist_a", "--dataset", "embedded",
           "--epochs", "3", "--train-limit", "1500", "--out", str(out), "--no-progress", "--device", "cpu"]
    kill_and_resume(cmd, out)
    a = load_file(reference / "last" / "model.safetensors")
    b = load_file(out / "last" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 3


def test_corrupt_checkpoint_is_detected(trained, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(trained / "best", bad)
    weights = bad / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(AnntError, match="corrupt checkpoint"):
        load_checkpoint(bad)
    (bad / "model.json").write_text("{not json")
    with pytest.raises(AnntError, match="corrupt checkpoint sidecar"):
        load_checkpoint(bad)
    with pytest.raises(AnntError, match="does not exist"):
        load_checkpoint(tmp_path / "missing")


def test_checkpoint_round_trip_for_user_module(tmp_path):
    model = create_model("lenet5")
    meta = {"model": "lenet5", "bits": "32,32,32", "dataset": "mnist",
            "geometry": {"channels": 1, "image_size": 28, "num_classes": 10}}
    save_checkpoint(tmp_path / "ck", model, meta)
    loaded = load_checkpoint(tmp_path / "ck")
    x = torch.rand(2, 1, 28, 28)
    assert torch.equal(loaded(x), model.eval()(x))
    assert not any(p.suffix == ".pt" for p in (tmp_path / "ck").iterdir())


def test_user_module_trains_with_fit(tmp_path):
    from annt.data import load_dataset
    from annt.train import fit, make_recipe

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))

        def forward(self, x):
            return self.net(x)

    train = load_dataset("embedded", "train").subset(range(1000))
    val = load_dataset("embedded", "validation")
    history, best = fit(Tiny(), train, val, make_recipe("tiny", epochs=2), tmp_path, {"model": "tiny"},
                        progress=False, device="cpu")
    assert len(history) == 2 and best > 0.5


def test_cli_errors_are_single_lines(tmp_path):
    env = {**os.environ, "ANNT_OFFLINE": "1"}
    cases = [
        ["train", "--model", "nope"],
        ["train", "--model", "mnist_a", "--bits", "3x"],
        ["train", "--model", "mnist_a", "--bits", "0"],
        ["train", "--model", "mnist_a", "--bits", "33"],
        ["train", "--model", "mnist_a", "--dataset", "nope"],
        ["train", "--model", "mnist_a", "--dataset", "mnist", "--data-dir", str(tmp_path / "empty")],
        ["evaluate", "--checkpoint", str(tmp_path / "missing")],
        ["attack", "--checkpoint", str(tmp_path / "missing"), "--attack", "fgsm", "--out", str(tmp_path / "a.npz")],
        ["train", "--model", "mnist_a", "--dataset", "embedded", "--init-from", str(tmp_path / "missing")],
        ["train", "--model", "lenet5", "--dataset", "embedded", "--init-from", "zoo:mnist_a@fp"],
        ["train", "--model", "mnist_a", "--dataset", "embedded", "--lr-schedule", "linear"],
        ["train", "--model", "mnist_a", "--dataset", "embedded", "--distill-weight", "2"],
        ["train", "--model", "mnist_a", "--dataset", "embedded", "--lr", "-1"],
    ]
    for args in cases:
        r = subprocess.run([sys.executable, "-m", "annt.cli.main", *args], capture_output=True, text=True, env=env)
        assert r.returncode != 0, args
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("annt: error:"), (args, r.stderr)
        assert "Traceback" not in r.stderr


def test_learning_rate_schedules():
    from annt.train.recipes import checked_recipe, make_recipe
    from annt.train.trainer import _lr_at

    step = make_recipe("mnist_a", lr=1.0, epochs=10, lr_milestones=[4, 8])
    assert [_lr_at(step, e) for e in (0, 3.9, 4, 8)] == pytest.approx([1.0, 1.0, 0.1, 0.01])
    cosine = make_recipe("mnist_a", lr=2.0, epochs=10, lr_schedule="cosine")
    assert [_lr_at(cosine, e) for e in (0, 5, 10)] == pytest.approx([2.0, 1.0, 0.0], abs=1e-12)
    with pytest.raises(ValueError):
        make_recipe("mnist_a", lr_schedule="linear")
    with pytest.raises(AnntError, match="lr_schedule"):
        checked_recipe("mnist_a", lr_schedule="linear")


def test_init_from_starts_at_the_checkpoint_weights_any_bitwidth(trained, tmp_path):
    """Warm start: epoch-0 weights are the source's, and the sidecar records where they came from."""
    source = read_meta(trained / "best")
    train_model("mnist_a", "embedded", "2", tmp_path / "ft", epochs=1, train_limit=200, progress=False,
                device="cpu", init_from=trained / "best", lr=1e-12)
    tuned = load_file(tmp_path / "ft" / "last" / "model.safetensors")
    start = load_file(trained / "best" / "model.safetensors")
    assert all(torch.allclose(tuned[k], start[k], atol=1e-6) for k in start if "running" not in k)
    meta = read_meta(tmp_path / "ft" / "best")
    assert meta["bits"] == "2,2,32"
    assert meta["init_from"]["weights_sha256"] == source["weights_sha256"]


def test_distillation_loss_is_kl_of_softened_outputs():
    from annt.train.trainer import _distill_loss

    t = torch.tensor([[2.0, 0.0, -1.0]])
    assert _distill_loss(t, t, 4.0).item() == pytest.approx(0.0, abs=1e-7)
    s = torch.tensor([[0.0, 1.0, 0.0]])
    p, q = torch.softmax(t / 2, 1), torch.softmax(s / 2, 1)
    expected = 4 * (p * (p.log() - q.log())).sum().item()  # T^2 * KL(teacher || student), by hand
    assert _distill_loss(s, t, 2.0).item() == pytest.approx(expected, rel=1e-5)


def test_training_with_a_teacher_records_it_and_needs_one(trained, tmp_path):
    from annt.train import fit, make_recipe

    train_model("mnist_a", "embedded", "2", tmp_path / "kd", epochs=1, train_limit=300, progress=False,
                device="cpu", teacher=trained / "best")
    meta = read_meta(tmp_path / "kd" / "best")
    assert meta["recipe"]["distill_weight"] == 0.5
    assert meta["teacher"]["weights_sha256"] == read_meta(trained / "best")["weights_sha256"]
    with pytest.raises(AnntError, match="teacher"):
        fit(create_model("mnist_a", "2"), None, None, make_recipe("mnist_a", distill_weight=0.5),  # type: ignore[arg-type]
            tmp_path / "x", {})


def test_resume_with_other_settings_names_them(trained):
    with pytest.raises(AnntError, match=r"lr was 0\.001, now 0\.5"):
        train_model("mnist_a", "embedded", "1", trained, **{**TRAIN_ARGS, "epochs": 3}, lr=0.5)


def test_init_from_fp_resnet_into_quantized_resnet_keeps_extra_layers_fresh(tmp_path):
    """The quantized ResNet has one extra BN per block; shared tensors are copied, those are listed."""
    from annt.train.trainer import _warm_start

    geometry = dict(in_channels=3, num_classes=10, image_size=32)
    fp = create_model("resnet20", "fp", **geometry)
    save_checkpoint(tmp_path / "fp", fp, {"model": "resnet20", "bits": "32,32,32", "dataset": "cifar10",
                                          "geometry": {"channels": 3, "image_size": 32, "num_classes": 10}})
    q = create_model("resnet20", "2", **geometry)
    info = _warm_start(q, "resnet20", tmp_path / "fp")
    assert torch.equal(q.conv0.weight, fp.conv0.weight)
    assert info["kept_fresh"] and all(".bn2." in k for k in info["kept_fresh"])
    assert info["not_used"] == []
    with pytest.raises(AnntError, match="size mismatch"):
        _warm_start(create_model("resnet20", "fp", **{**geometry, "num_classes": 5}), "resnet20", tmp_path / "fp")


def test_random_shift_moves_each_image_by_at_most_n_pixels():
    """A shift by (dy, dx) with zero fill: each output is the input moved, never flipped or scaled."""
    from annt.train.trainer import augment_batch, random_crop

    x = torch.zeros(64, 1, 12, 12)
    x[:, 0, 5, 6] = 1.0  # one bright pixel, far enough from the border to survive any shift by 2
    gen = torch.Generator().manual_seed(0)
    out = random_crop(x, gen, 2)
    assert out.shape == x.shape and torch.equal(out.sum((1, 2, 3)), x.sum((1, 2, 3)))
    rows, cols = out[:, 0].amax(2).argmax(1), out[:, 0].amax(1).argmax(1)
    assert set((rows - 5).tolist()) == set(range(-2, 3)) and set((cols - 6).tolist()) == set(range(-2, 3))
    assert torch.equal(random_crop(x, gen, 0), x)
    wide = torch.zeros(64, 1, 16, 30)
    wide[:, 0, 8, 5] = 1.0  # shifted: column 1..9; mirrored and shifted: column 24 +- 4
    cols = augment_batch(wide, torch.Generator().manual_seed(0))[:, 0].amax(1).argmax(1)
    assert cols.min() >= 1 and cols.max() <= 28 and (cols <= 9).any() and (cols >= 20).any()
    assert not ((cols > 9) & (cols < 20)).any()


def test_dropout_and_shift_settings_train_and_are_recorded(tmp_path):
    from annt.train import fit, make_recipe
    from annt.train.trainer import _set_dropout

    model = create_model("mnist_a", "1")
    _set_dropout(model, 0.0)
    assert model.dropout.p == 0.0
    train_model("mnist_a", "embedded", "1", tmp_path / "run", epochs=1, train_limit=300, progress=False,
                device="cpu", dropout=0.0, random_shift=1)
    recipe = read_meta(tmp_path / "run" / "best")["recipe"]
    assert recipe["dropout"] == 0.0 and recipe["random_shift"] == 1
    with pytest.raises(AnntError, match="no dropout layer"):
        fit(create_model("lenet5", "fp"), None, None, make_recipe("lenet5", dropout=0.1),  # type: ignore[arg-type]
            tmp_path / "x", {}, device="cpu")
    with pytest.raises(AnntError, match="random_shift"):
        train_model("mnist_a", "embedded", "1", tmp_path / "bad", random_shift=-1, **TRAIN_ARGS)


def test_warmup_nesterov_and_label_smoothing_settings():
    from annt.train.recipes import checked_recipe, make_recipe
    from annt.train.trainer import _lr_at, _optimizer

    warm = make_recipe("mnist_a", lr=1.0, epochs=10, warmup_epochs=2, lr_schedule="cosine")
    assert _lr_at(warm, 1.0) == pytest.approx(0.5, abs=1e-3)  # linear ramp
    assert [_lr_at(warm, e) for e in (2, 6, 10)] == pytest.approx([1.0, 0.5, 0.0], abs=1e-12)  # cosine after it
    assert 0 < _lr_at(warm, 0) < 1e-3  # the first step is small but not zero
    step = make_recipe("mnist_a", lr=1.0, epochs=10, warmup_epochs=1, lr_milestones=[5])
    assert [_lr_at(step, e) for e in (0.5, 1, 5)] == pytest.approx([0.5, 1.0, 0.1], abs=2e-3)
    model = create_model("mnist_a", "fp")
    sgd = _optimizer(model, make_recipe("resnet20", nesterov=True))
    assert sgd.param_groups[0]["nesterov"] is True
    with pytest.raises(AnntError, match="nesterov"):
        _optimizer(model, make_recipe("mnist_a", nesterov=True))  # adam
    with pytest.raises(AnntError, match="label_smoothing"):
        checked_recipe("mnist_a", label_smoothing=1.5)


def test_label_smoothing_changes_the_loss_and_is_recorded(tmp_path):
    train_model("mnist_a", "embedded", "fp", tmp_path / "ls", epochs=1, train_limit=200, progress=False,
                device="cpu", label_smoothing=0.2, warmup_epochs=0.5)
    plain = train_model("mnist_a", "embedded", "fp", tmp_path / "plain", epochs=1, train_limit=200,
                        progress=False, device="cpu")
    meta = read_meta(tmp_path / "ls" / "best")
    assert meta["recipe"]["label_smoothing"] == 0.2 and meta["recipe"]["warmup_epochs"] == 0.5
    smoothed = json.loads((tmp_path / "ls" / "metrics.jsonl").read_text().splitlines()[0])["loss"]
    assert smoothed != plain.history[0]["loss"]


def test_resume_of_a_warm_started_run_does_not_need_the_source(trained, tmp_path):
    import shutil

    source = tmp_path / "src"
    shutil.copytree(trained / "best", source)
    run = tmp_path / "ft"
    train_model("mnist_a", "embedded", "2", run, epochs=1, train_limit=200, progress=False, device="cpu",
                init_from=source)
    sha = read_meta(run / "last")["init_from"]["weights_sha256"]
    shutil.rmtree(source)  # gone, as on a fresh machine
    result = train_model("mnist_a", "embedded", "2", run, epochs=2, train_limit=200, progress=False,
                         device="cpu", init_from=source)
    assert result.epochs == 2 and read_meta(run / "last")["init_from"]["weights_sha256"] == sha


def test_training_without_test_evaluation_records_nan(tmp_path):
    result = train_model("mnist_a", "embedded", "fp", tmp_path / "r", epochs=1, train_limit=100,
                         progress=False, device="cpu", evaluate_test=False)
    assert result.test_accuracy != result.test_accuracy  # NaN
    assert "test_accuracy" not in read_meta(tmp_path / "r" / "best")


def test_new_recipe_fields_stay_out_of_study_keys_at_their_defaults():
    """Studies stored before warm-up/Nesterov/label smoothing existed keep their train-cell keys."""
    from annt.train.recipes import make_recipe, recipe_identity

    plain = recipe_identity(make_recipe("resnet20"))
    assert not {"warmup_epochs", "nesterov", "label_smoothing"} & set(plain)
    assert recipe_identity(make_recipe("resnet20", nesterov=True))["nesterov"] is True


def test_validation_split_is_the_same_whatever_the_training_seed(tmp_path, monkeypatch):
    """A run fine-tuned or distilled from a seed-0 model must not validate on its training images."""
    from annt.train import trainer

    asked = []
    real = trainer.load_dataset
    monkeypatch.setattr(trainer, "load_dataset", lambda *a, **k: asked.append((a[1], k.get("seed"))) or real(*a, **k))
    train_model("mnist_a", "embedded", "fp", tmp_path / "s3", epochs=1, train_limit=200, seed=3, progress=False,
                device="cpu", evaluate_test=False)
    assert ("train", 0) in asked and ("validation", 0) in asked
    assert read_meta(tmp_path / "s3" / "best")["recipe"]["validation_seed"] == 0


def test_run_saved_before_validation_seed_resumes_only_on_its_own_split(tmp_path):
    out = tmp_path / "old"
    train_model("mnist_a", "embedded", "fp", out, epochs=1, train_limit=200, seed=3, progress=False, device="cpu",
                evaluate_test=False)
    state = out / "last" / "train_state.json"
    saved = json.loads(state.read_text())
    del saved["info"]["config"]["recipe"]["validation_seed"]  # as written before the field existed
    state.write_text(json.dumps(saved))
    with pytest.raises(AnntError, match="validation_seed was 3, now 0"):
        train_model("mnist_a", "embedded", "fp", out, epochs=2, train_limit=200, seed=3, progress=False, device="cpu")
    again = train_model("mnist_a", "embedded", "fp", out, epochs=2, train_limit=200, seed=3, progress=False,
                        device="cpu", validation_seed=3, evaluate_test=False)
    assert again.epochs == 2


def test_study_cells_of_seeded_runs_keep_their_split_in_the_key():
    from annt.train.recipes import Recipe, recipe_identity

    assert "validation_seed" not in recipe_identity(Recipe(), 0)  # seed 0: the same split as before
    assert recipe_identity(Recipe(), 2)["validation_seed"] == 0  # seed 2 used to split by 2
