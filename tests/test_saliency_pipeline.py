"""Train -> distill -> label -> evaluate -> study on a tiny shard folder with micro presets."""

import json
import os
from dataclasses import replace

import numpy as np
import pytest
import torch

from common.cli import from_flat
from common.io import OutputError
from data.collect import CollectConfig, collect
from data.shards import iter_samples, list_shards, load_arrays, read_manifest, saliency_to_uint8
from saliency import data as sdata
from saliency import distill, evaluate, label, study, train
from saliency.config import DistillConfig, EvalConfig, LabelConfig, StudyConfig, TrainConfig, from_preset
from saliency.predictor import SaliencyPredictor


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    out = tmp_path_factory.mktemp("sal") / "reach-v3"
    collect(
        from_flat(CollectConfig, task="reach-v3", frames=160, shard_size=40, out=str(out), episode_steps=40),
        progress=False,
    )
    return out


@pytest.fixture(scope="module")
def annotations(shards):
    ann = sdata.build_oracle_annotations(shards, 10, seed=0, pool=40)
    path = shards.parent / "ann.npz"
    sdata.save_annotations(path, ann)
    return path


@pytest.fixture(scope="module")
def trained(annotations, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "reach-v3"
    best = train.run(from_preset(TrainConfig, "micro", annotations=str(annotations), out=str(out), threads=1))
    return best


def test_oracle_export_matches_the_shards(shards, annotations):
    ann = sdata.load_annotations(annotations)
    arrays = load_arrays(shards, limit=40)
    idx = [arrays["keys"].index(k) for k in ann.keys]
    assert ann.images.shape == (10, 64, 64, 3) and ann.maps.shape == (10, 64, 64)
    assert np.array_equal(ann.images, arrays["rgb"][idx])
    assert list(ann.annotators) == ["oracle"] * 10 and ann.maps.max() == pytest.approx(1.0)


@pytest.mark.parametrize(
    "arrays, match",
    [
        ({"images": np.zeros((0, 8, 8, 3), np.uint8), "maps": np.zeros((0, 8, 8), np.float32)}, "no annotated frames"),
        ({"images": np.zeros((2, 8, 8, 3), np.uint8), "maps": np.zeros((2, 8, 9), np.float32)}, "do not match"),
        ({"images": np.zeros((2, 8, 8, 3), np.uint8), "maps": np.full((2, 8, 8), 2.0, np.float32)}, r"\[0, 1\]"),
        ({"images": np.zeros((2, 8, 8, 3), np.float32), "maps": np.zeros((2, 8, 8), np.float32)}, "uint8"),
        ({"images": np.zeros((2, 8, 8, 3), np.uint8)}, "lacks"),
    ],
)
def test_bad_annotation_files_are_refused(tmp_path, arrays, match):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=match):
        sdata.load_annotations(path)
    with pytest.raises(FileNotFoundError, match="saliency.data"):
        sdata.load_annotations(tmp_path / "missing.npz")


def test_augmentation_flips_frame_and_map_together_and_jitters_colour():
    y = torch.zeros(16, 1, 8, 8)
    y[:, :, :, :2] = 1.0  # salient left edge
    x = y.repeat(1, 3, 1, 1) * 0.5 + 0.25  # the frame shows the same pattern
    gen = torch.Generator().manual_seed(0)
    xf, yf = sdata.Augment(flip=True, brightness=0, contrast=0, saturation=0, hue=0)(x, y, gen)
    flipped = yf[:, 0, 0, -1] == 1.0
    assert 0 < int(flipped.sum()) < 16  # some flipped, some not
    assert torch.equal((xf[:, :1] > 0.5).float(), yf)  # frame and map flipped together
    xj, yj = sdata.Augment(flip=False)(x, y, gen)
    assert torch.equal(yj, y)  # maps untouched by colour jitter
    assert (xj - x).abs().amax((1, 2, 3)).min() > 1e-3  # every frame changed
    assert xj.min() >= 0 and xj.max() <= 1


def test_training_applies_the_augmentation(annotations, tmp_path, monkeypatch):
    calls = []
    original = sdata.Augment.__call__

    def spy(self, x, y, gen):
        xo, yo = original(self, x, y, gen)
        calls.append((not torch.equal(xo, x), self.flip, self.brightness))
        return xo, yo

    monkeypatch.setattr(sdata.Augment, "__call__", spy)
    train.run(
        from_preset(TrainConfig, "micro", annotations=str(annotations), out=str(tmp_path / "a"), epochs=1, threads=1)
    )
    assert calls and all(changed for changed, _, _ in calls)
    assert calls[0][1:] == (True, 0.3)


def test_train_writes_checkpoint_log_and_refuses_to_clobber(trained, annotations):
    ckpt = torch.load(trained, weights_only=True)
    ann = sdata.load_annotations(annotations)
    assert ckpt["kind"] == "picanet" and set(ckpt["seen_keys"]) == set(ann.keys)
    assert len(ckpt["train_keys"]) == 8  # 80/20 split of 10
    rows = (trained.parent / "train.csv").read_text().strip().splitlines()
    assert rows[0].split(",")[:3] == ["step", "wall_s", "loss"] and "val_f_adaptive" in rows[0]
    assert len(rows) == 1 + 2  # micro: 2 epochs
    with pytest.raises(OutputError, match="--resume"):
        train.run(from_preset(TrainConfig, "micro", annotations=str(annotations), out=str(trained.parent), threads=1))


def test_resume_continues_from_last(annotations, tmp_path):
    out = tmp_path / "r"
    train.run(from_preset(TrainConfig, "micro", annotations=str(annotations), out=str(out), threads=1))
    train.run(
        from_preset(TrainConfig, "micro", annotations=str(annotations), out=str(out), epochs=3, resume=True, threads=1)
    )
    steps = [int(r.split(",")[0]) for r in (out / "train.csv").read_text().strip().splitlines()[1:]]
    assert steps == [1, 2, 3]


def test_label_path_and_predictor_give_identical_maps_and_resume(trained, shards, tmp_path, monkeypatch):
    out = tmp_path / "reach-v3-sal"
    cfg = from_preset(LabelConfig, "micro", model=str(trained), data=str(shards), out=str(out), threads=1)
    # two ranks of a torchrun launch: rank 0 takes shards 0 and 2, rank 1 shards 1 and 3
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    label.run(cfg)
    assert sorted(p.name for p in out.glob("shard-*.tar")) == ["shard-00000.tar", "shard-00002.tar"]
    assert not (out / "manifest.json").exists()  # incomplete: no manifest yet
    monkeypatch.setenv("RANK", "1")
    label.run(cfg)
    manifest = read_manifest(out)
    assert manifest["labelled_from"] == shards.name and manifest["saliency_model"] == str(trained)
    assert manifest["frames"] == read_manifest(shards)["frames"] and "saliency.png" in manifest["fields"]
    src, dst = load_arrays(shards), load_arrays(out, need_saliency=True)
    assert (
        dst["keys"] == src["keys"]
        and np.array_equal(dst["rgb"], src["rgb"])
        and np.array_equal(dst["state"], src["state"])
    )
    assert all(np.array_equal(a, b) for a, b in zip(dst["clicks"], src["clicks"])) and dst["meta"] == src["meta"]
    scenes = [
        (a.get("scene"), b.get("scene"))
        for a, b in zip(iter_samples(out / "shard-00000.tar"), iter_samples(shards / "shard-00000.tar"))
    ]
    assert "scene.npy" in manifest["fields"] and all(a is not None and a.tobytes() == b.tobytes() for a, b in scenes)
    predictor = SaliencyPredictor.load(trained, "cpu")
    assert np.array_equal(dst["saliency"], saliency_to_uint8(predictor(src["rgb"])))  # one preprocessing path
    # a kill after some shards: only the missing shard is redone
    monkeypatch.delenv("WORLD_SIZE")
    monkeypatch.delenv("RANK")
    stamps = {p.name: p.stat().st_mtime_ns for p in list_shards(out)}
    (out / "shard-00001.tar").unlink()
    label.run(cfg)
    assert all(p.stat().st_mtime_ns == stamps[p.name] for p in list_shards(out) if p.name != "shard-00001.tar")
    assert np.array_equal(load_arrays(out, need_saliency=True)["saliency"], dst["saliency"])
    # another model may not add labels to this folder
    other = tmp_path / "other.pt"
    other.write_bytes(trained.read_bytes() + b"\0")
    with pytest.raises(OutputError, match="another --out"):
        label.run(from_preset(LabelConfig, "micro", model=str(other), data=str(shards), out=str(out)))


def test_distill_and_evaluate_exclude_seen_frames(trained, shards, tmp_path, monkeypatch):
    student = distill.run(
        from_preset(
            DistillConfig, "micro", teacher=str(trained), data=str(shards), out=str(tmp_path / "student.pt"), threads=1
        )
    )
    pred = SaliencyPredictor.load(student, "cpu")
    assert pred.kind == "student" and pred.model.cfg.input_size == 64
    teacher_keys = set(torch.load(trained, weights_only=True)["seen_keys"])
    first48 = set(load_arrays(shards, limit=48)["keys"])
    assert pred.seen_keys == teacher_keys | first48
    with pytest.raises(OutputError, match="refusing to overwrite"):
        distill.run(from_preset(DistillConfig, "micro", teacher=str(trained), data=str(shards), out=str(student)))
    finished = student.read_bytes()
    again = from_preset(DistillConfig, "micro", teacher=str(trained), data=str(shards), out=str(student))
    monkeypatch.setattr(distill, "load_arrays", lambda *a, **k: pytest.fail("read the frames of a finished student"))
    assert distill.run(replace(again, resume="auto", threads=1)) == student  # finished: nothing read or retrained
    assert student.read_bytes() == finished
    monkeypatch.undo()
    out = evaluate.run(
        from_preset(EvalConfig, "micro", model=str(student), data=str(shards), out=str(tmp_path / "ev"), threads=1)
    )
    record = json.loads((out / "metrics.json").read_text())
    m = record["metrics"]
    assert m["n"] == 40 and {"f_adaptive", "f_max", "mae", "cc", "nss", "sim", "kld", "auc_judd"} <= set(m)
    assert m["first_key"] == "00003-00000" and m["last_key"] == "00003-00039"  # the last 40 frames, none seen
    assert (out / "fig7.png").read_bytes()[:4] == b"\x89PNG"


def test_study_prints_the_table_v_analog(shards, tmp_path, capsys):
    out = study.run(from_preset(StudyConfig, "micro", data=str(shards), out=str(tmp_path / "study"), threads=1))
    res = json.loads((out / "results.json").read_text())
    assert [r["size"] for r in res["rows"]] == [3, 5]
    assert len({r["steps"] for r in res["rows"]}) == 1  # same optimiser steps for every size
    assert "| 3 |" in capsys.readouterr().out
    os.utime(out / "results.json")
    assert study.run(from_preset(StudyConfig, "micro", data=str(shards), out=str(tmp_path / "study"))) == out  # reused


def test_oracle_ceiling_scores_the_expected_map_against_a_fresh_draw():
    from saliency.ceiling import CeilingConfig, run

    scores = run(CeilingConfig(task="reach-v3", frames=6, samples=3))
    assert scores["n"] == 6 and scores["cc"] > 0.8 and 0.5 < scores["f_max"] <= 1.0 and scores["mae"] < 0.01
