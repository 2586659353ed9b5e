"""The pipeline's presets, in one place: each names the stage presets and the budgets it runs.

| preset | for | budget |
|---|---|---|
| micro | CI: every stage end to end in a few minutes | tiny models, 200 SAC steps (100 of them updates) |
| demo  | `make demo`: the whole pipeline in <= 20 minutes on a 2-core CPU (16.9 min measured, RESULTS.md) | 2k frames, 1500 SAC steps, 3 evaluations |
| cpu   | a meaningful CPU run (hours) | 20k frames, 100k SAC steps, every encoder |
| paper | the paper's budgets, for GPUs | 200k frames, 200 epochs, 1M SAC steps, 50 eval rollouts, 3 seeds, 4 tasks |
| gpu   | a Table I slice on one GPU node in 9-minute commands (`--tasks` picks the task) | 200k frames, paper-size saliency, 5M images per MultiMAE, 6 encoders x 3 seeds x 250k steps packed |

The paper preset is meant for a cluster: `python -m pipeline --preset paper --backend ray --ray-address auto
--grid-extra '--storage shared' --nproc-per-node 8` (SAC grid as Ray tasks, pretraining under torchrun
on this node's 8 GPUs; BENCHMARKS.md estimates its hours).

The gpu preset pauses after 9 minutes (between stages; SAC at an episode boundary with its
checkpoints) and continues where it stopped when the same command runs again, so it fits a lent
GPU's 10-minute commands: `python -m pipeline --preset gpu [--tasks drawer-open-v3]`, repeated.
MultiMAE gets 25 epochs over 200k frames per model (batch 2048, lr 4e-4: the recipe that beat the
mean-patch baseline on an H100), two models in ~11 minutes at the measured 15.8k img/s.
"""

from __future__ import annotations

from data.tasks import PAPER_TASKS
from rl.grid import ALL_ENCODERS

ALL = ",".join(ALL_ENCODERS)

PRESETS: dict[str, dict] = {
    "micro": dict(
        stage_preset="micro",
        tasks="reach-v3",
        frames=300,
        shard_size=150,
        annotate_n=10,
        encoders=ALL,
        seeds="0",
        sac_steps=200,
        sac_extra="",
        parallel=2,
        probe_frames=150,
    ),
    "demo": dict(
        stage_preset="demo",
        tasks="reach-v3",
        frames=2000,
        shard_size=500,
        annotate_n=30,
        # the CNN-trunk runs are the long ones (~2-4 steps/s with updates here): they start first
        # evaluations every 500 steps: the README's learning curve has points, not one dot
        encoders="gaze,cnn_rgb,mmae_rgbs,mmae_rgb",
        seeds="0",
        sac_steps=1500,
        sac_extra="--eval-every 500",
        parallel=2,
        probe_frames=600,  # the probe after pretraining took 130-180 s per model at 1500
    ),
    "cpu": dict(
        stage_preset="cpu",
        tasks="reach-v3",
        frames=20_000,
        shard_size=1000,
        annotate_n=30,
        encoders=ALL,
        seeds="0",
        sac_steps=100_000,
        sac_extra="",
        parallel=2,
    ),
    "paper": dict(
        stage_preset="paper",
        tasks=",".join(PAPER_TASKS),
        frames=200_000,
        shard_size=1000,
        annotate_n=30,
        encoders=ALL,
        seeds="0,1,2",
        sac_steps=1_000_000,
        sac_extra="--eval-episodes 50",
        parallel=4,
    ),
    "gpu": dict(
        stage_preset="paper",
        tasks="reach-v3",
        frames=200_000,
        shard_size=2000,
        annotate_n=30,
        workers=0,
        encoders="cnn_rgb,cnn_rgbs,mmae_rgb,mmae_rgbs_po,mmae_rgbs,gaze",
        seeds="0,1,2",
        sac_steps=250_000,
        sac_extra="--eval-episodes 50 --eval-envs 10 --eval-every 25000 --checkpoint-every 25000",
        pack=24,
        parallel=4,
        pretrain_extra="--epochs 25 --batch-size 2048 --lr 4e-4 --warmup-epochs 2",
        max_minutes=9.0,
    ),
}
