"""Pretraining runs on real (tiny) shard folders: outputs, exact resume, DDP on 2 CPU processes, bad input."""

from __future__ import annotations

import csv
import json
import os
import signal
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from common.cli import from_flat, parse_config
from data.shards import ShardError, iter_samples, list_shards, read_manifest, write_manifest, write_shard_entry
from pretrain.config import PRESETS, PretrainConfig
from pretrain.data import load_frames, select_folders, split_episodes
from pretrain.frozen import FrozenEncoder, read_encoder_file
from pretrain.model import MultiMAE
from pretrain.train import Trainer, main, run

MICRO = {**PRESETS["micro"], "limit": 0, "val_fraction": 0.25, "threads": 1, "progress": False}


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    """data/shards-like root: reach-v3 (160 frames, 4 episodes) and its labelled copy with saliency."""
    from data.collect import CollectConfig, collect  # here, so DDP worker processes skip importing Meta-World

    root = tmp_path_factory.mktemp("shards")
    collect(
        from_flat(
            CollectConfig,
            task="reach-v3",
            frames=160,
            out=str(root / "reach-v3"),
            shard_size=80,
            episode_steps=40,
            seed=0,
        )
    )
    labelled = root / "reach-v3-sal"
    entries = []
    for shard in list_shards(root / "reach-v3"):
        samples = [
            (s["key"], {**s, "saliency": (s["rgb"][..., 0] > 128).astype("float32")}) for s in iter_samples(shard)
        ]
        entries.append(write_shard_entry(labelled / shard.name, samples))  # its own checksums, as saliency.label writes
    write_manifest(
        labelled,
        {**read_manifest(root / "reach-v3"), "shards": entries, "labelled_from": "reach-v3", "saliency_model": "test"},
    )
    return root


def _cfg(shards: Path, out: Path, **kw) -> PretrainConfig:
    return from_flat(PretrainConfig, data=str(shards), out=str(out), **{**MICRO, **kw})


def _losses(run_dir: Path) -> dict[int, float]:
    return {int(r["step"]): float(r["loss"]) for r in csv.DictReader(open(run_dir / "train.csv"))}


def test_labelled_folder_replaces_its_source(shards):
    assert [p.name for p in select_folders(shards)] == ["reach-v3-sal"]
    assert [p.name for p in select_folders(shards / "reach-v3")] == ["reach-v3"]


def test_bare_command_defaults():
    cfg = parse_config(PretrainConfig, ["--data", "data/shards"], presets=PRESETS)
    assert cfg.model.modalities == ("rgb", "saliency") and cfg.saliency == "predicted"
    assert cfg.run_dir == Path("runs/mmae/rgbs")
    assert (cfg.model.dim, cfg.model.depth, cfg.model.num_heads, cfg.model.decoder_depth, cfg.batch_size) == (
        256,
        4,
        4,
        3,
        512,
    )
    # the paper's masking ratio 0.75: 32 of 128 tokens visible with saliency, 16 of 64 for rgb alone
    assert cfg.model.visible_tokens == 32 and (cfg.model.input_norm, cfg.augment, cfg.crop_scale) == (
        "imagenet",
        "crop",
        0.2,
    )
    rgb = parse_config(PretrainConfig, ["--modalities", "rgb", "--preset", "cpu"], presets=PRESETS)
    assert rgb.run_dir == Path("runs/mmae/rgb") and rgb.preset == "cpu" and rgb.epochs == PRESETS["cpu"]["epochs"]
    assert rgb.model.visible_tokens == 16
    old = parse_config(
        PretrainConfig, ["--modalities", "rgb", "--num-visible", "32", "--input-norm", "none", "--augment", "none"]
    )
    assert old.model.visible_tokens == 32 and old.model.input_norm == "none"


def test_micro_run_writes_checkpoint_encoder_logs_and_figures(shards, tmp_path):
    run_dir = run(_cfg(shards, tmp_path / "rgbs"))
    rows = list(csv.DictReader(open(run_dir / "train.csv")))
    info = json.loads((run_dir / "data.json").read_text())
    assert (
        100 <= info["train_frames"] <= 140 and info["held_out_frames"] == 160 - info["train_frames"]
    )  # 1 of 4 episodes held out
    steps_per_epoch = info["train_frames"] // 16
    assert [int(r["step"]) for r in rows] == list(range(1, 2 * steps_per_epoch + 1))
    assert info["total_steps"] == 2 * steps_per_epoch  # what pipeline.table's status measures progress against
    assert json.loads((run_dir / "config.json").read_text())["micro_batch"] == 16  # on a CPU: min(128, batch)
    assert {"loss_rgb", "loss_saliency", "loss_rgb_norm", "lr", "img_per_s"} <= set(rows[0])
    ev = list(csv.DictReader(open(run_dir / "eval.csv")))
    assert len(ev) == 2 and ev[0]["held_out"] == "True" and int(ev[0]["eval_frames"]) == 16
    assert float(ev[-1]["rgb_mse_mean_patch"]) > 0
    assert (run_dir / "figures" / "recon_epoch0002.png").stat().st_size > 5000
    assert (run_dir / "loss_curve.png").stat().st_size > 5000
    ckpt = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert ckpt["step"] == 2 * steps_per_epoch
    enc = FrozenEncoder.load(run_dir / "encoder.pt", standardize=False)
    assert (
        enc.inputs == ("rgb", "saliency")
        and enc.meta["step"] == ckpt["step"]
        and enc.model.cfg.input_norm == "imagenet"
    )
    model = MultiMAE(enc.model.cfg)
    model.load_state_dict(ckpt["model"])
    x, s = torch.rand(2, 3, 64, 64), torch.rand(2, 1, 64, 64)
    assert torch.allclose(enc(x, s), model.encode(model.tokenize({"rgb": x, "saliency": s})).mean(1), atol=1e-6)
    # by default features are standardised: zero mean, unit std over the training frames measured at
    # export, for every input set and pool (out_dim follows the pool)
    train, _ = split_episodes(load_frames(shards, "predicted")[0], MICRO["val_fraction"], seed=0)
    b = train.batch(torch.arange(len(train)), ("rgb", "saliency"), 64, "cpu")
    for inputs in (None, ("rgb",)):
        for pool, k in (("mean", 1), ("global", 1), ("grid2", 4), ("grid4", 16)):
            enc_p = FrozenEncoder.load(run_dir / "encoder.pt", inputs=inputs, pool=pool)
            z = enc_p(b["rgb"], b["saliency"])
            assert enc_p.standardized and enc_p.out_dim == k * 64 and z.shape == (len(train), k * 64)
            assert z.mean(0).abs().max() < 1e-3 and (z.std(0) - 1).abs().max() < 1e-3, (inputs, pool)
    with pytest.raises(ValueError, match="already holds a run"):
        Trainer(_cfg(shards, run_dir))


def test_resume_gives_the_same_next_step_loss(shards, tmp_path, monkeypatch):
    full = run(_cfg(shards, tmp_path / "full", modalities="rgb"))
    step = Trainer.train_step

    def sigterm_after_step_4(self, idx):
        out = step(self, idx)
        if self.step == 4:
            os.kill(os.getpid(), signal.SIGTERM)  # as a cluster scheduler would
        return out

    monkeypatch.setattr(Trainer, "train_step", sigterm_after_step_4)
    part = run(_cfg(shards, tmp_path / "part", modalities="rgb"))  # checkpoints and stops mid-epoch 0
    monkeypatch.undo()
    assert max(_losses(part)) == 4 and torch.load(part / "checkpoint.pt", weights_only=True)["step"] == 4
    run(_cfg(shards, tmp_path / "part", modalities="rgb", resume=True))
    a, b = _losses(full), _losses(part)
    assert sorted(a) == sorted(b)
    assert b[5] == pytest.approx(a[5], rel=1e-6, abs=0)  # the next step after resuming
    assert all(b[k] == pytest.approx(a[k], rel=1e-5) for k in a)


def test_a_hard_kill_mid_epoch_loses_at_most_checkpoint_minutes(shards, tmp_path, monkeypatch):
    """A session that ends with SIGKILL gives no SIGTERM checkpoint: --checkpoint-minutes saves within the epoch."""
    full = run(_cfg(shards, tmp_path / "full", modalities="rgb"))
    step = Trainer.train_step

    def killed_after_step_3(self, idx):
        if self.step == 3:
            raise KeyboardInterrupt  # stands in for SIGKILL: nothing after this step runs
        return step(self, idx)

    monkeypatch.setattr(Trainer, "train_step", killed_after_step_3)
    for minutes, saved in ((0, None), (1e-9, 3)):  # 0: only epoch ends save; tiny: every step saves
        out = tmp_path / f"killed-{minutes}"
        with pytest.raises(KeyboardInterrupt):
            run(_cfg(shards, out, modalities="rgb", checkpoint_minutes=minutes))
        ckpt = out / "checkpoint.pt"
        assert (torch.load(ckpt, weights_only=True)["step"] if ckpt.exists() else None) == saved
    monkeypatch.undo()
    part = run(_cfg(shards, out, modalities="rgb", resume=True))
    a, b = _losses(full), _losses(part)
    assert sorted(a) == sorted(b) and all(b[k] == pytest.approx(a[k], rel=1e-5) for k in a)


def test_rerunning_a_finished_run_with_resume_trains_nothing_and_loads_no_frames(shards, tmp_path, monkeypatch, capsys):
    """--resume auto on a run at its last step returns at once (no frames loaded, files untouched); a run stopped
    early, one asked for more epochs (another schedule), or one killed during its last export (which the resume then
    writes again) goes through the trainer as before."""
    import pretrain.train as train

    out = tmp_path / "r"
    run(_cfg(shards, out, modalities="rgb"))
    written = lambda: {f: f.stat().st_mtime_ns for f in out.rglob("*") if f.is_file() and f.name != ".lock"}  # noqa: E731
    files = written()

    def no_frames(*a, **k):
        raise AssertionError("loaded the frames of a finished run")

    monkeypatch.setattr(train, "load_split", no_frames)
    assert run(_cfg(shards, out, modalities="rgb", resume="auto")) == out
    assert "already finished at step" in capsys.readouterr().out
    assert written() == files
    with pytest.raises(AssertionError, match="loaded the frames"):  # 2 epochs more: the trainer decides (refuses)
        run(_cfg(shards, out, modalities="rgb", resume="auto", epochs=MICRO["epochs"] + 2))
    data = json.loads((out / "data.json").read_text())
    (out / "data.json").write_text(json.dumps({**data, "folders": [{**data["folders"][0], "frames": 80}]}))
    with pytest.raises(AssertionError, match="loaded the frames"):  # --data holds other frames: the trainer checks
        run(_cfg(shards, out, modalities="rgb", resume="auto"))
    (out / "data.json").write_text(json.dumps(data))
    blob = torch.load(out / "encoder.pt", weights_only=True)
    torch.save({**blob, "step": blob["step"] - 1}, out / "encoder.pt")  # killed before the last export
    with pytest.raises(AssertionError, match="loaded the frames"):
        run(_cfg(shards, out, modalities="rgb", resume="auto"))
    monkeypatch.undo()
    run(_cfg(shards, out, modalities="rgb", resume="auto"))  # no step is left to train: the resume exports it again
    assert torch.load(out / "encoder.pt", weights_only=True)["step"] == blob["step"]
    (out / "encoder.safetensors").write_bytes(b"cut")  # killed between encoder.pt and its hub copy
    monkeypatch.setattr(train, "load_split", no_frames)
    with pytest.raises(AssertionError, match="loaded the frames"):
        run(_cfg(shards, out, modalities="rgb", resume="auto"))
    monkeypatch.undo()
    run(_cfg(shards, out, modalities="rgb", resume="auto"))
    assert read_encoder_file(out / "encoder.safetensors")["step"] == blob["step"]
    stopped = tmp_path / "stopped"
    run(_cfg(shards, stopped, modalities="rgb", max_steps=1))
    monkeypatch.setattr(train, "load_split", no_frames)
    with pytest.raises(AssertionError, match="loaded the frames"):  # not finished: resumes
        run(_cfg(shards, stopped, modalities="rgb", resume="auto"))


def test_checkpoint_of_another_config_is_refused(shards, tmp_path):
    run(_cfg(shards, tmp_path / "r", modalities="rgb", max_steps=1))
    with pytest.raises(ValueError, match="another config.*dim"):
        Trainer(_cfg(shards, tmp_path / "r", modalities="rgb", dim=32, resume=True))
    with pytest.raises(FileNotFoundError, match="checkpoint.pt not found"):
        Trainer(_cfg(shards, tmp_path / "none", resume=True))


def test_bad_input_errors(shards, tmp_path, monkeypatch, capsys):
    with pytest.raises(ShardError, match=r"saliency\.label.*--saliency oracle"):
        Trainer(_cfg(shards / "reach-v3", tmp_path / "a"))  # unlabelled frames, predicted saliency
    (tmp_path / "empty").mkdir()
    with pytest.raises(ShardError, match="no shard folders"):
        Trainer(_cfg(tmp_path / "empty", tmp_path / "b"))
    with pytest.raises(SystemExit):  # the CLI prints the error, no traceback
        main(["--data", str(tmp_path / "empty"), "--out", str(tmp_path / "c")])
    assert "error:" in capsys.readouterr().err
    monkeypatch.setenv("WORLD_SIZE", "3")
    with pytest.raises(ValueError, match="--batch-size 16 is not divisible across 3 processes"):
        Trainer(_cfg(shards, tmp_path / "d"))
    monkeypatch.delenv("WORLD_SIZE")
    with pytest.raises(ValueError, match=r"--batch-size 4096 exceeds the \d+ training frames"):
        Trainer(_cfg(shards, tmp_path / "e", batch_size=4096))
    with pytest.raises(ValueError, match="--modalities"):
        _cfg(shards, tmp_path / "f", modalities="depth").validate()


def _ddp_worker(rank: int, cfg: PretrainConfig, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank))
    # a rendezvous file, not a port: a free port found now may be taken by the time the ranks bind it (the suite's
    # other worker runs Ray and servers beside this test); the Trainer keeps a process group that exists
    torch.distributed.init_process_group("gloo", init_method=f"file://{out}/rendezvous", rank=rank, world_size=2)
    trainer = Trainer(cfg)
    first_batch = trainer.train_frames.index[trainer.epoch_indices(0)[0]].clone()  # positions among all frames
    trainer.fit()
    flat = torch.cat([p.detach().flatten() for p in trainer.model.parameters()])
    torch.save({"params": flat, "first_batch": first_batch}, f"{out}/rank{rank}.pt")
    torch.distributed.destroy_process_group()


def test_ddp_two_gloo_processes_agree_after_a_step(shards, tmp_path):
    """Gradients all-reduced once per step, after the last of each rank's passes: identical weights."""
    cfg = _cfg(shards, tmp_path / "ddp", max_steps=1, micro_batch=3)  # each rank's 8 images in passes of 3, 3, 2
    mp.spawn(_ddp_worker, args=(cfg, str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert torch.equal(r0["params"], r1["params"])  # gradients were averaged: identical weights
    torch.manual_seed(cfg.seed)
    init = torch.cat([p.detach().flatten() for p in MultiMAE(cfg.model).parameters()])
    assert not torch.allclose(init, r0["params"])  # and they moved
    assert len(r0["first_batch"]) == 8 and not set(r0["first_batch"].tolist()) & set(r1["first_batch"].tolist())
    assert torch.load(tmp_path / "ddp" / "checkpoint.pt", weights_only=True)["step"] == 1
    whole = tmp_path / "whole"
    whole.mkdir()
    mp.spawn(_ddp_worker, args=(replace(cfg, out=str(tmp_path / "ddp1"), micro_batch=0), str(whole)), nprocs=2)
    one_pass = torch.load(whole / "rank0.pt", weights_only=True)["params"]
    # the passes' update is the one-pass update under DDP too: measured 3e-4 of the step (AdamW's first step,
    # ~lr * sign(grad), turns rounding in near-zero gradients into whole steps); other masks would differ by far more
    assert (r0["params"] - one_pass).norm() <= 1e-2 * (one_pass - init).norm()


def test_non_finite_hyperparameters_are_refused(capsys):
    for argv in (["--lr", "inf"], ["--crop-scale", "nan"], ["--weight-decay=-inf"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and "finite" in err and "\n" not in err, err
    with pytest.raises(ValueError, match="--lr must be a finite number, got nan"):
        PretrainConfig(lr=float("nan")).validate()  # also when a config is built in Python


def test_nan_loss_stops_keeping_the_last_good_checkpoint(shards, tmp_path, monkeypatch, capsys):
    out = tmp_path / "diverged"
    step = Trainer.train_step

    def diverge_after_epoch_1(self, idx):
        result = step(self, idx)
        if self.step == self.steps_per_epoch + 2:  # two steps into epoch 2, after epoch 1's checkpoint
            with torch.no_grad():
                next(self.model.parameters()).fill_(float("nan"))  # the weights blow up: the next loss is NaN
        return result

    monkeypatch.setattr(Trainer, "train_step", diverge_after_epoch_1)
    with pytest.raises(SystemExit) as exc:
        main(
            [
                "--data",
                str(shards),
                "--out",
                str(out),
                "--preset",
                "micro",
                "--limit",
                "0",
                "--val-fraction",
                "0.25",
                "--threads",
                "1",
                "--no-progress",
                "--epochs",
                "3",
            ]
        )
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    spe = json.loads((out / "data.json").read_text())["train_frames"] // 16
    assert err.startswith("error: training diverged: the loss is not finite at step") and "\n" not in err
    assert f"step {spe + 3}" in err and f"(step {spe})" in err and "are kept" in err
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    assert ckpt["step"] == spe and all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
    enc = FrozenEncoder.load(out / "encoder.pt")
    assert enc.meta["step"] == spe and all(torch.isfinite(p).all() for p in enc.parameters())
    assert max(_losses(out)) <= spe + 2  # nothing logged from the diverged step on


def test_export_refuses_non_finite_weights(shards, tmp_path):
    from common.io import NonFiniteError

    trainer = Trainer(_cfg(shards, tmp_path / "x", modalities="rgb", max_steps=1))
    trainer.fit()
    before = (tmp_path / "x" / "encoder.pt").read_bytes()
    with torch.no_grad():
        trainer.model.norm.weight[0] = float("inf")
    with pytest.raises(NonFiniteError, match="refusing to write .*encoder.pt"):
        trainer.export_encoder()
    assert (tmp_path / "x" / "encoder.pt").read_bytes() == before


def test_peak_lr_follows_multimaes_batch_scaling(shards, tmp_path):
    """lr = blr x batch / 256 (MultiMAE, MAE): the paper's base 1e-4 at batch 512 peaks at 2e-4; --lr overrides."""
    paper = from_flat(PretrainConfig, **PRESETS["paper"])
    assert paper.blr == 1e-4 and paper.batch_size == 512 and paper.peak_lr == pytest.approx(2e-4)
    assert from_flat(PretrainConfig, **{**PRESETS["paper"], "batch_size": 256}).peak_lr == pytest.approx(1e-4)
    assert from_flat(PretrainConfig, **{**PRESETS["paper"], "lr": 3e-4}).peak_lr == 3e-4
    assert from_flat(PretrainConfig, **PRESETS["cpu"]).peak_lr == pytest.approx(5e-4)  # the CPU recipe's tuned peak
    trainer = Trainer(_cfg(shards, tmp_path / "run", batch_size=8))  # micro: blr 1.6e-2 -> 5e-4 at batch 8
    assert trainer.optimizer.param_groups[0]["initial_lr"] == pytest.approx(5e-4)


def test_recon_latest_on_a_full_disk_names_the_file_and_keeps_the_previous_one(shards, tmp_path, monkeypatch):
    """Issue #27: recon_latest.png was rewritten in place, so a full disk left a truncated PNG."""
    import errno
    import io

    from PIL import Image

    from common.io import DiskFullError

    trainer = Trainer(_cfg(shards, tmp_path / "run", max_steps=1))
    latest = trainer.run_dir / "recon_latest.png"
    trainer.figure(1)
    before = latest.read_bytes()
    real_open = io.open

    class FillsUp:
        """A file on a disk that fills up halfway through the write."""

        def __init__(self, file):
            self.file = file

        def write(self, data) -> int:
            self.file.write(bytes(data[: len(data) // 2]))
            self.file.flush()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def __getattr__(self, name):
            return getattr(self.file, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            self.file.close()

    def open_on_a_small_disk(file, mode="r", *args, **kwargs):  # in place (Path.write_bytes) or a temp file's fd
        name = os.readlink(f"/proc/self/fd/{file}") if isinstance(file, int) else str(file)
        handle = real_open(file, mode, *args, **kwargs)
        return FillsUp(handle) if "recon_latest.png" in name and "w" in mode else handle

    monkeypatch.setattr(io, "open", open_on_a_small_disk)
    with pytest.raises(DiskFullError, match=r"no space left on the device writing .*/run/recon_latest.png"):
        trainer.figure(2)
    monkeypatch.undo()
    assert latest.read_bytes() == before  # before: half a PNG
    with Image.open(latest) as image:
        image.load()  # whole: decodes to the end
    assert not list(trainer.run_dir.glob(".recon_latest.png.*"))
