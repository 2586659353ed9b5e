"""The precision switch: what `auto` picks, and that the bf16 path of every stage computes what the
float32 path does within bf16's precision, with float32 kept where the issue asks for it.

bf16 keeps 8 bits of mantissa: one rounding is off by at most 2^-9 (0.2 %) relative. Matmuls and
convolutions round their inputs and accumulate in float32, so an output of a few layers is off by a few
times that; the tolerances below (2-5 % relative, on norms or losses) say "the same computation in
bf16", and a wrong computation (another input, a missing layer, a swapped run) is off by tens of %.
These hold with and without native bf16 units (on AVX2-only CPUs PyTorch's generic kernels compute bf16,
with the same input rounding and float32 accumulation).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from common import cpuinfo, precision
from common.cli import from_flat, parse_config
from common.precision import autocast, full_precision, resolve_precision
from common.runs import device_description
from rl.agent import SAC
from rl.config import PRESETS, SACConfig

from tiny import TINY_MMAE, TINY_SAC


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def test_auto_picks_bf16_only_where_the_cpu_has_bf16_units(monkeypatch, capsys, tmp_path):
    monkeypatch.delenv(precision.AUTO_ENV)  # conftest pins auto to fp32 for the rest of the suite
    amx = tmp_path / "amx"
    amx.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_tile amx_bf16\n")
    zen = tmp_path / "zen"
    zen.write_text("processor\t: 0\nflags\t\t: fpu avx avx2 fma\n")
    assert precision.cpu_bf16_units(str(amx)) == ("amx_bf16", "avx512_bf16")
    assert precision.cpu_bf16_units(str(zen)) == ()
    assert precision.cpu_bf16_units(str(tmp_path / "missing")) == ()

    monkeypatch.setattr(precision, "cpu_bf16_units", lambda: ("amx_bf16",))
    assert resolve_precision("auto", "cpu") == "bf16"
    monkeypatch.setattr(precision, "cpu_bf16_units", lambda: ())
    monkeypatch.setattr(precision, "_announced", set())
    assert resolve_precision("auto", "cpu") == "fp32" and resolve_precision("auto", "cpu") == "fp32"
    assert capsys.readouterr().out.count("runs fp32 here") == 1  # said once per process, on stdout (not an error)
    assert resolve_precision("bf16", "cpu") == "bf16" and resolve_precision("fp32", "cpu") == "fp32"
    with pytest.raises(ValueError, match="auto, bf16, fp32"):
        resolve_precision("fp16", "cpu")
    with pytest.raises(ValueError, match="resolve"):
        autocast("auto", "cpu")


def test_a_cpu_run_records_the_cpu_model_and_its_bf16_units(monkeypatch):
    """Two machines named alike (an AMD EPYC Zen 4, one without bf16 units: a Zen 3) are told apart in every run's
    summary.json and report."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(cpuinfo, "cpu_model", lambda: "AMD EPYC")
    monkeypatch.setattr(cpuinfo, "cpu_bf16_units", lambda: ("avx512_bf16",))
    zen4 = device_description()
    monkeypatch.setattr(cpuinfo, "cpu_bf16_units", lambda: ())
    zen3 = device_description()
    assert zen4.startswith("CPU AMD EPYC (") and "bf16 units: avx512_bf16) x" in zen4
    assert zen3 == zen4.replace("avx512_bf16", "none") and ", torch threads " in zen3


def test_the_environment_decides_what_auto_means(monkeypatch):
    monkeypatch.setattr(precision, "cpu_bf16_units", lambda: ("amx_bf16",))
    monkeypatch.setenv(precision.AUTO_ENV, "fp32")
    assert resolve_precision("auto", "cpu") == "fp32" and resolve_precision("bf16", "cpu") == "bf16"
    monkeypatch.setattr(precision, "cpu_bf16_units", lambda: ())
    monkeypatch.setenv(precision.AUTO_ENV, "bf16")
    assert resolve_precision("auto", "cpu") == "bf16"
    monkeypatch.setenv(precision.AUTO_ENV, "fp16")
    with pytest.raises(ValueError, match="VISARL_AUTO_PRECISION='fp16': set it to bf16 or fp32"):
        resolve_precision("auto", "cpu")


def test_every_command_takes_the_switch(capsys):
    from pretrain.config import PretrainConfig
    from pretrain.probe import ProbeConfig
    from rl.grid import GridConfig
    from saliency.config import DistillConfig, EvalConfig, LabelConfig, TrainConfig

    for cls in (
        SACConfig,
        GridConfig,
        PretrainConfig,
        ProbeConfig,
        TrainConfig,
        DistillConfig,
        LabelConfig,
        EvalConfig,
    ):
        assert from_flat(cls).precision == "auto", cls.__name__
    assert parse_config(SACConfig, ["--precision", "bf16"]).precision == "bf16"
    with pytest.raises(SystemExit) as exit_info:
        parse_config(SACConfig, ["--precision", "half"])
    assert exit_info.value.code == 2 and "--precision" in capsys.readouterr().err


def test_bf16_region_keeps_float32_islands():
    x, w = torch.randn(4, 8), torch.randn(8, 3)
    with autocast("bf16", "cpu"):
        assert (x @ w).dtype == torch.bfloat16
        with full_precision("cpu"):
            assert (x @ w).dtype == torch.float32
    with autocast("fp32", "cpu"):
        assert (x @ w).dtype == torch.float32


def _agent(precision_name: str, hidden: int = 64) -> SAC:
    cfg = from_flat(SACConfig, hidden_dim=hidden)
    torch.manual_seed(0)
    return SAC(None, 32, 4, cfg, runs=2, precision=precision_name)


def test_sac_update_in_bf16_matches_fp32_and_keeps_float32_state():
    g = torch.Generator().manual_seed(1)
    batch = {
        "obs": {"embedding": torch.randn(2, 64, 32, generator=g)},
        "next_obs": {"embedding": torch.randn(2, 64, 32, generator=g)},
        "action": torch.rand(2, 64, 4, generator=g) * 2 - 1,
        "reward": torch.rand(2, 64, generator=g) * 10,
        "terminal": torch.zeros(2, 64),
    }
    noise = torch.randn(2, 2, 64, 4, generator=g)
    full, half = _agent("fp32"), _agent("bf16")
    with half.autocast():  # the output layers stay float32: Q-values and log-probabilities
        q = half.critic(batch["obs"]["embedding"], batch["action"])
        action, logp = half.actor(batch["obs"]["embedding"], noise[0])
    assert q.dtype == logp.dtype == action.dtype == torch.float32
    for _ in range(2):  # the second update steps the actor and temperature too
        m_full, m_half = full.update(batch, noise), half.update(batch, noise)
    for key in ("critic_loss", "q_mean", "actor_loss", "alpha_loss", "entropy"):
        assert m_half[key].dtype == torch.float32
        torch.testing.assert_close(m_half[key], m_full[key], rtol=0.03, atol=0.03, msg=key)
    for (name, p), p_full in zip(half.named_parameters(), full.parameters()):
        assert p.dtype == torch.float32, name  # master weights
        moved = (p_full - _agent("fp32").state_dict()[name]).norm()
        if moved > 0:  # the update itself agrees (Adam's normalised steps: ~lr per weight)
            assert (p - p_full).norm() < 0.25 * moved, name
    for state in half.critic_opt.state.values():
        assert state["exp_avg"].dtype == state["exp_avg_sq"].dtype == torch.float32


def test_multimae_encoder_in_bf16_matches_fp32():
    from pretrain.model import ModelConfig, MultiMAE

    cfg = ModelConfig(dim=64, depth=2, num_heads=2, decoder_dim=32, decoder_depth=1, decoder_heads=2)
    torch.manual_seed(0)
    model = MultiMAE(cfg, decoders=False)
    x, s = torch.rand(16, 3, 64, 64), torch.rand(16, 1, 64, 64)
    full = model.encode(model.tokenize({"rgb": x, "saliency": s})).mean(1)  # [16, 64]: RL's mean pool
    with autocast("bf16", "cpu"):
        half = model.encode(model.tokenize({"rgb": x, "saliency": s})).mean(1)
    other = model.encode(model.tokenize({"rgb": x.flip(0), "saliency": s.flip(0)})).mean(1)  # other frames
    assert relative(half, full) < 0.03 and relative(other, full) > 10 * relative(half, full)


def test_observer_runs_frozen_encoders_in_float32_in_a_bf16_pack(tmp_path):
    from pretrain.frozen import encoder_blob, identity_statistics
    from pretrain.model import ModelConfig, MultiMAE
    from rl.encoders import build_encoder
    from rl.observe import Observer

    cfg = ModelConfig(**TINY_MMAE)
    path = tmp_path / "encoder.pt"
    torch.save(encoder_blob(MultiMAE(cfg, decoders=False), identity_statistics(cfg)), path)
    sac = from_flat(SACConfig, encoder="mmae_rgbs", mmae=str(path), saliency="oracle")
    enc = build_encoder(sac, 64, runs=1)
    raw = {
        "pixels": np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8),
        "saliency": np.random.default_rng(1).integers(0, 256, (3, 64, 64), dtype=np.uint8),
    }
    stored = {}
    for name in ("fp32", "bf16"):
        observer = Observer(enc.obs_keys, [enc], sac, torch.device("cpu"), 3, precision=name)
        stored[name] = observer.observe(raw, np.zeros(3, np.int64))[1]["embedding"]
    # frozen encoders run in float32 whatever the pack's precision (rl/observe.py: bf16's rounding is the size of
    # a frozen MultiMAE's frame-to-frame spread, bench/frozen_precision.py)
    assert stored["bf16"].dtype == torch.float32 and torch.equal(stored["bf16"], stored["fp32"])
    with autocast("bf16", "cpu"):  # also inside a caller's autocast region
        inside = Observer(enc.obs_keys, [enc], sac, torch.device("cpu"), 3, precision="bf16").observe(
            raw, np.zeros(3, np.int64)
        )[1]["embedding"]
    assert torch.equal(inside, stored["fp32"])


def test_saliency_predictor_in_bf16_matches_fp32():
    from saliency.predictor import SaliencyPredictor
    from saliency.student import StudentConfig, StudentNet

    torch.manual_seed(0)
    net = StudentNet(StudentConfig(width=8))
    frames = np.random.default_rng(0).integers(0, 256, (6, 64, 64, 3), dtype=np.uint8)
    maps = {p: SaliencyPredictor(net, "student", precision=p)(frames) for p in ("fp32", "bf16")}
    assert maps["bf16"].dtype == np.float32 and maps["bf16"].shape == (6, 64, 64)
    assert np.abs(maps["bf16"] - maps["fp32"]).max() < 0.02  # sigmoid outputs in [0, 1]


def test_picanet_on_cuda_keeps_fp32_under_auto_and_never_goes_channels_last(monkeypatch):
    """Measured on an H200: PiCANet is slower in bf16 on CUDA, 11x with channels_last (BENCHMARKS "On a GPU")."""
    from saliency.picanet import PiCANet, PiCANetConfig
    from saliency.predictor import channels_last, inference_precision
    from saliency.student import StudentConfig, StudentNet

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)  # what a Hopper GPU answers
    monkeypatch.delenv(precision.AUTO_ENV, raising=False)  # conftest pins auto to fp32
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    picanet, student = PiCANet(PiCANetConfig(input_size=64, width=0.25)), StudentNet(StudentConfig(width=8))
    assert inference_precision(picanet, "auto", cuda) == "fp32"
    assert inference_precision(picanet, "bf16", cuda) == "bf16"  # asked for by name, it is what runs
    assert inference_precision(student, "auto", cuda) == "bf16"
    assert not channels_last(picanet, "bf16", cuda)
    assert channels_last(student, "bf16", cuda) and channels_last(picanet, "bf16", cpu)
    assert not channels_last(student, "fp32", cpu)
    monkeypatch.setenv(precision.AUTO_ENV, "bf16")  # a forced auto is obeyed, as for every model
    assert inference_precision(picanet, "auto", cuda) == "bf16"


def test_a_pack_hands_the_saliency_model_its_requested_precision_not_the_resolved_one(monkeypatch, tmp_path):
    """The pack resolves `auto` for SAC (bf16 on a bf16 CPU or GPU); the saliency model resolves it by its own rule
    (PiCANet on CUDA stays fp32), so it is handed what was asked for; a precision asked by name passes as it is."""
    import rl.observe
    from rl.workspace import Pack

    class Stop(Exception):
        pass

    handed = []

    def load_predictor(task, path, device, precision):
        handed.append(precision)
        raise Stop

    monkeypatch.setattr(rl.observe, "load_predictor", load_predictor)
    monkeypatch.setenv(precision.AUTO_ENV, "bf16")  # the pack's auto resolves to bf16, as on a bf16 machine
    for asked in ("auto", "fp32"):
        cfg = from_flat(
            SACConfig,
            encoder="cnn_rgbs",
            saliency="predictor",
            hidden_dim=32,
            torch_threads=1,
            precision=asked,
            out=str(tmp_path / asked),
        )
        with pytest.raises(Stop):
            Pack([cfg])
        assert cfg.precision == ("bf16" if asked == "auto" else "fp32")  # what SAC runs and config.json records
    assert handed == ["auto", "fp32"]


def test_pretraining_step_in_bf16_matches_fp32(tmp_path):
    from pretrain.model import ModelConfig, MultiMAE

    cfg = ModelConfig(dim=64, depth=2, num_heads=2, decoder_dim=64, decoder_depth=1, decoder_heads=2)
    torch.manual_seed(0)
    model = MultiMAE(cfg)
    inputs = {"rgb": torch.rand(8, 3, 64, 64), "saliency": torch.rand(8, 1, 64, 64)}
    losses = {}
    for name in ("fp32", "bf16"):
        with autocast(name, "cpu"):
            loss, parts, preds, _ = model(inputs, generator=torch.Generator().manual_seed(3))
        assert loss.dtype == torch.float32  # losses are reduced in float32
        loss.backward()
        losses[name] = (loss.detach(), [p.grad.clone() for p in model.parameters()])
        model.zero_grad()
    torch.testing.assert_close(losses["bf16"][0], losses["fp32"][0], rtol=0.02, atol=0)
    grads_half = torch.cat([g.flatten() for g in losses["bf16"][1]])
    grads_full = torch.cat([g.flatten() for g in losses["fp32"][1]])
    assert relative(grads_half, grads_full) < 0.05


def test_a_bf16_run_records_its_precision(tmp_path):
    from rl.workspace import train

    cfg = from_flat(
        SACConfig, **{**TINY_SAC, "steps": 100}, encoder="state", precision="bf16", out=str(tmp_path / "run")
    )
    (run_dir,) = train([cfg])
    assert json.loads((run_dir / "config.json").read_text())["precision"] == "bf16"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["precision"] == "bf16" and 0.0 <= summary["success_rate"] <= 1.0


def test_a_bf16_gaze_run_learns_past_its_random_steps(tmp_path):
    """The gaze encoder's trunk runs under autocast when acting: what its return buffer stores (maps, k-NN keys for
    faiss) is float32 all the same, through the learning phase and the triplet updates."""
    from rl.encoders import ENCODERS, image_input
    from rl.workspace import train

    cfg = from_flat(
        SACConfig,
        **{
            **PRESETS["micro"],
            "encoder": "gaze",
            "steps": 120,
            "random_steps": 40,
            "batch_size": 8,
            "max_episode_steps": 20,
            "replay_size": 500,
            "log_every": 60,
            "checkpoint_every": 60,
            "gaze_buffer_size": 200,
            "gaze_anchors": 16,
            "precision": "bf16",
            "out": str(tmp_path / "gaze"),
        },
    )
    (run_dir,) = train([cfg])
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["precision"] == "bf16" and summary["steps"] == 120
    enc = ENCODERS["gaze"](cfg, 64)
    pixels = torch.randint(0, 256, (1, 2, 3, 64, 64), dtype=torch.uint8)  # [R, N, 3, H, W]
    with autocast("bf16", "cpu"):
        feat = enc.trunk(image_input(pixels))  # [R, N, C, h, w]
    assert feat.dtype == torch.bfloat16
    maps, keys, pooled = enc.buffer_entries(feat)
    assert maps.dtype == keys.dtype == pooled.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(keys, axis=-1), 1.0, rtol=1e-5)  # L2-normalised k-NN keys


def test_cpu_bf16_pretraining_builds_unfused_attention_and_leaves_timm_as_it_was():
    from timm.layers import use_fused_attn

    from pretrain.model import ModelConfig, MultiMAE, attention_kernels

    before = use_fused_attn()
    with attention_kernels(False):
        model = MultiMAE(ModelConfig(**TINY_MMAE))
    assert use_fused_attn() == before  # restored: models built later in the process are not affected
    attention = [m for m in model.modules() if hasattr(m, "fused_attn")]
    assert attention and not any(m.fused_attn for m in attention)  # timm's blocks and our cross-attention
