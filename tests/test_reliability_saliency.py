"""Issue #15, saliency: checked shards in labelling, finite hyperparameters, diverged training never saved,
checkpoint loads that never advise an unsafe retry."""

import io
import math
import os
import pickle
import shutil

import numpy as np
import pytest
import torch

from common.cli import from_flat
from common.io import CheckpointError, NonFiniteError, atomic_torch_save, safe_torch_load
from data.collect import CollectConfig, collect
from data.shards import ShardError, load_arrays, read_manifest, write_manifest
from saliency import label, train
from saliency.config import DistillConfig, LabelConfig, TrainConfig, from_preset
from saliency.data import Annotations, save_annotations
from saliency.predictor import SaliencyPredictor, save_checkpoint
from saliency.student import StudentConfig, StudentNet


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    out = tmp_path_factory.mktemp("rsal") / "reach-v3"
    collect(
        from_flat(CollectConfig, task="reach-v3", frames=60, shard_size=20, episode_steps=20, out=str(out)),
        progress=False,
    )
    return out


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    torch.manual_seed(0)
    return save_checkpoint(
        tmp_path_factory.mktemp("model") / "student.pt", StudentNet(StudentConfig(width=4, input_size=64)), "student"
    )


@pytest.fixture
def annotations(tmp_path):
    rng = np.random.default_rng(0)
    ann = Annotations(
        rng.integers(0, 255, (8, 64, 64, 3), dtype=np.uint8),
        rng.random((8, 64, 64)).astype(np.float32),
        np.array([f"k{i}" for i in range(8)]),
        np.array(["oracle"] * 8),
    )
    return save_annotations(tmp_path / "ann.npz", ann)


def _label(student, src, out, **kw):
    return label.run(
        from_preset(LabelConfig, "micro", model=str(student), data=str(src), out=str(out), threads=1, **kw)
    )


def _malicious(path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo owned > /dev/null",))

    path.write_bytes(pickle.dumps({"format": "visarl-saliency/1", "kind": "student", "x": Evil()}))
    return path


# -- labelling reads checked shards and writes its own checksums -------------------------------------------
def test_labelling_refuses_missing_damaged_and_incomplete_sources(shards, student, tmp_path):
    src = shutil.copytree(shards, tmp_path / "reach-v3")
    (src / "shard-00002.tar").unlink()
    with pytest.raises(ShardError, match=r"shard-00002.tar: missing.*python -m data.collect"):
        _label(student, src, tmp_path / "a")
    shutil.copy(shards / "shard-00002.tar", src / "shard-00002.tar")
    data = bytearray((src / "shard-00001.tar").read_bytes())
    data[5000] ^= 0xFF
    (src / "shard-00001.tar").write_bytes(bytes(data))
    with pytest.raises(ShardError, match=r"shard-00001.tar: checksum mismatch"):
        _label(student, src, tmp_path / "b")
    assert not (tmp_path / "b" / "manifest.json").exists()  # nothing claims to be a complete labelled folder
    shutil.copy(shards / "shard-00001.tar", src / "shard-00001.tar")
    m = read_manifest(src)
    write_manifest(src, {**m, "status": "in_progress", "shards": m["shards"][:2]})
    with pytest.raises(ShardError, match="incomplete collection.*--allow-incomplete"):
        _label(student, src, tmp_path / "c")
    out = _label(student, src, tmp_path / "c", allow_incomplete=True)
    assert read_manifest(out)["status"] == "in_progress"  # downstream readers must opt in too
    with pytest.raises(ShardError, match="incomplete collection"):
        load_arrays(out)


def test_labelled_manifest_has_its_own_checksums_and_damaged_labels_are_redone(shards, student, tmp_path):
    out = _label(student, shards, tmp_path / "reach-v3-sal")
    m, src = read_manifest(out), read_manifest(shards)
    assert [s["frames"] for s in m["shards"]] == [s["frames"] for s in src["shards"]]
    assert all(a["sha256"] != b["sha256"] for a, b in zip(m["shards"], src["shards"]))
    good = load_arrays(out, need_saliency=True)["saliency"]
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("shard-*.tar")}
    data = bytearray((out / "shard-00001.tar").read_bytes())
    data[3000] ^= 0xFF
    (out / "shard-00001.tar").write_bytes(bytes(data))
    with pytest.raises(ShardError, match=r"shard-00001.tar: checksum mismatch.*python -m saliency.label"):
        load_arrays(out)
    _label(student, shards, out)
    after = {p.name: p.stat().st_mtime_ns for p in out.glob("shard-*.tar")}
    assert (
        after["shard-00000.tar"] == before["shard-00000.tar"] and after["shard-00002.tar"] == before["shard-00002.tar"]
    )
    assert np.array_equal(load_arrays(out, need_saliency=True)["saliency"], good)


# -- hyperparameters and divergence -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "entry, flag", [("train", "--lr"), ("train", "--weight-decay"), ("distill", "--lr"), ("distill", "--val-frac")]
)
@pytest.mark.parametrize("value", ["inf", "nan", "-inf"])
def test_non_finite_hyperparameters_are_one_line_errors_with_status_2(entry, flag, value, capsys):
    from saliency import distill

    main = {"train": train.main, "distill": distill.main}[entry]
    with pytest.raises(SystemExit) as exit_:
        main([f"{flag}={value}"])  # "--lr -inf" would read -inf as a flag
    err = capsys.readouterr().err
    assert (
        exit_.value.code == 2
        and err
        == f"error: argument {flag}: must be a finite number, got '{value}' (see python -m saliency.{entry} --help)\n"
    )


def test_non_finite_values_set_in_code_are_refused_by_validate():
    with pytest.raises(ValueError, match="--lr must be a finite number"):
        from_preset(TrainConfig, "micro", lr=math.inf)
    with pytest.raises(ValueError, match="--color-jitter must be a finite number"):
        DistillConfig(color_jitter=math.nan).validate()


def test_ignored_flag_is_refused(capsys):
    with pytest.raises(SystemExit) as exit_:
        train.main(["--resume", "--backbone-weights", "vgg16_bn.pth"])
    assert exit_.value.code == 2 and "--backbone-weights has no effect with --resume" in capsys.readouterr().err


def test_nan_loss_stops_training_and_keeps_the_last_good_checkpoints(annotations, tmp_path, monkeypatch):
    real, calls = train.deep_supervised_bce, {"n": 0}

    def diverging(sides, target):  # 6 training maps, batch 4: 2 steps per epoch; epoch 2 diverges
        calls["n"] += 1
        loss = real(sides, target)
        return loss * math.nan if calls["n"] > 2 else loss

    monkeypatch.setattr(train, "deep_supervised_bce", diverging)
    run = tmp_path / "run"
    cfg = from_preset(
        TrainConfig, "micro", annotations=str(annotations), out=str(run), epochs=3, eval_every=1, threads=1
    )
    with pytest.raises(NonFiniteError, match=r"loss is nan at epoch 2, batch 1.*last.pt \(epoch 1\)"):
        train.run(cfg)
    for name in ("last.pt", "best.pt"):
        ckpt = torch.load(run / name, weights_only=True)
        assert ckpt["epoch"] == 1 and all(
            torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point()
        )


def test_real_divergence_exits_with_one_line_and_saves_nothing(annotations, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        train.main(
            [
                "--preset",
                "micro",
                "--annotations",
                str(annotations),
                "--out",
                str(tmp_path / "run"),
                "--lr",
                "1e30",
                "--epochs",
                "3",
                "--threads",
                "1",
            ]
        )
    err = capsys.readouterr().err
    assert (
        exit_.value.code == 2 and err.startswith("error: training diverged: the loss is nan") and err.count("\n") == 1
    )
    assert not list((tmp_path / "run").glob("*.pt"))


def test_non_finite_weights_are_never_written(tmp_path):
    path = tmp_path / "encoder.pt"
    atomic_torch_save({"state_dict": {"w": torch.ones(3)}}, path)
    before = path.read_bytes()
    with pytest.raises(
        NonFiniteError, match=r"refusing to write .*encoder.pt: 1 tensor\(s\) hold NaN or inf \(state_dict.w\)"
    ):
        atomic_torch_save({"state_dict": {"w": torch.tensor([1.0, math.nan, 2.0])}}, path)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["encoder.pt"]
    model = StudentNet(StudentConfig(width=4, input_size=64))
    with torch.no_grad():
        next(model.parameters()).fill_(math.inf)
    with pytest.raises(NonFiniteError):
        save_checkpoint(tmp_path / "student.pt", model, "student")
    assert not (tmp_path / "student.pt").exists()


# -- checkpoint loads ---------------------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_load_errors_never_advise_weights_only_false(tmp_path, student, shards, capsys):
    evil = _malicious(tmp_path / "evil.pt")
    with pytest.raises(CheckpointError) as err:
        safe_torch_load(evil)
    text = str(err.value)
    assert "refuses" in text and "weights_only" not in text and "\n" not in text
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes(student.read_bytes()[:2000])
    with pytest.raises(CheckpointError, match=r"damaged\.pt: it is damaged or not a PyTorch checkpoint") as err:
        SaliencyPredictor.load(damaged, "cpu")
    assert "weights_only" not in str(err.value)
    from saliency import evaluate

    with pytest.raises(SystemExit) as exit_:
        evaluate.main(["--model", str(evil), "--data", str(shards), "--device", "cpu"])
    out = capsys.readouterr().err
    assert (
        exit_.value.code == 2
        and out.startswith(f"error: cannot load saliency checkpoint {evil}")
        and out.count("\n") == 1
    )
    assert "weights_only" not in out and "owned" not in out


def test_safe_load_reads_plain_checkpoints(tmp_path):
    buf = io.BytesIO()
    torch.save({"w": torch.arange(3.0), "step": 4}, buf)
    (tmp_path / "ok.pt").write_bytes(buf.getvalue())
    blob = safe_torch_load(tmp_path / "ok.pt")
    assert blob["step"] == 4 and torch.equal(blob["w"], torch.arange(3.0))
    with pytest.raises(CheckpointError, match="not found"):
        safe_torch_load(tmp_path / "nope.pt")
