"""The pipeline's presets and its time budget (the GPU slice runs as repeated 9-minute commands)."""

from __future__ import annotations

import pytest

from pipeline.presets import PRESETS
from pipeline.run import PipelineConfig, main


def test_gpu_preset_is_the_table_i_slice():
    gpu = PipelineConfig(**PRESETS["gpu"]).validate()
    assert gpu.encoders.split(",") == ["cnn_rgb", "cnn_rgbs", "mmae_rgb", "mmae_rgbs_po", "mmae_rgbs", "gaze"]
    assert gpu.seeds == "0,1,2" and gpu.frames == 200_000 and gpu.sac_steps >= 250_000 and gpu.workers == 0
    assert 0 < gpu.max_minutes < 10 and gpu.pack >= 9  # the nine frozen-encoder runs share one process
    assert "--eval-episodes 50" in gpu.sac_extra
    assert gpu.probe_frames == 1500 and PipelineConfig(**PRESETS["demo"]).probe_frames < 1000  # the demo's budget
    with pytest.raises(ValueError, match="probe-frames must be >= 30"):
        PipelineConfig(probe_frames=5).validate()


def test_a_spent_budget_pauses_before_the_next_stage_and_keeps_everything(tmp_path, capsys):
    main(["--preset", "micro", "--root", str(tmp_path), "--max-minutes", "1e-9"])
    out = capsys.readouterr().out
    assert "PAUSED" in out and "run the same command again" in out and "before collect reach-v3" in out
    assert (tmp_path / "runs/pipeline/config.json").exists() and not (tmp_path / "data/shards").exists()
    with pytest.raises(SystemExit):
        main(["--preset", "micro", "--root", str(tmp_path), "--workers", "-1"])
