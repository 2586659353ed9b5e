"""Train SAC on a Meta-World task with one of the paper's encoders: the single-run entry, a pack of one.

    python -m rl.sac --task reach-v3 --encoder cnn_rgb --steps 1000000 --seed 0 [--preset cpu] [--num-envs 4]

Writes runs/sac/<task>/<encoder>/seed<k>/: config.json, metrics.csv (training curve, steps/s),
eval.csv (success rate of the deterministic policy on fresh seeds), tb/ (TensorBoard: training and
evaluation), checkpoint-<step>.pt with replay-<step>/ (saved at episode boundaries; --resume
continues from the newest, --resume auto also starts when there is none), agent.pt (final weights)
and summary.json. One SAC update per env step; frozen encoders run once per env step and the replay
buffer stores their embeddings. Many runs train in one process with `python -m rl.grid --pack N`
(rl/workspace.py).
"""

from __future__ import annotations

from pathlib import Path

from common.cli import run_command
from rl.config import PRESETS, SACConfig
from rl.workspace import train


def run(cfg: SACConfig) -> Path:
    """Train (or resume) one SAC run; returns its run folder."""
    return train([cfg])[0]


def main(argv: list[str] | None = None) -> Path:
    return run_command(SACConfig, run, argv, presets=PRESETS)


if __name__ == "__main__":
    main()
