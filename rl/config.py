"""The SAC entry point's typed config and its presets.

Defaults are the paper's SAC settings (the authors' code: actor/critic/alpha lr 1e-4, initial
temperature 0.1, tau 0.005, actor and target updates every 2 steps, batch 128, two hidden layers
of 1024, discount 0.99, 1000 random steps, log-std in [-10, 2], target entropy -|A|; 64x64
corner-camera frames, frame stack 1, no action repeat, 500-step episodes, 1M steps).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.cli import RESUME_HELP, flat_dict, nested, option, resume_field, resume_mode
from common.precision import check_precision, precision_field
from data.env import EnvConfig
from rl.encoders import ENCODERS, EXTRA, MMAE_FEATURES, SALIENCY_SCALES, TABLE_I, encoder_names, field_applies
from rl.gaze import GazeConfig

SALIENCY_SOURCES: tuple[str, ...] = ("predictor", "oracle")

#: fields that may differ between a checkpoint and the run resuming it (they only extend a run)
RESUMABLE_FIELDS: frozenset[str] = frozenset(
    {
        "steps",
        "resume",
        "out",
        "log_every",
        "checkpoint_every",
        "checkpoint_minutes",
        "eval_every",
        "eval_episodes",
        "final_eval_episodes",
        "torch_threads",
        "preset",
        "device",
        "precision",
        "max_minutes",
    }
)
#: fields that may differ between the runs of one pack (rl/workspace.py); every other field is shared
PACK_FIELDS: frozenset[str] = frozenset({"seed", "out", "encoder", "mmae", "resume", "preset"})


@dataclass
class SACConfig:
    """Soft actor-critic on a Meta-World pixel task with one of the paper's encoders."""

    # -- what to run ---------------------------------------------------------------------------
    encoder: str = option(
        "cnn_rgb",
        f"encoder, one of {', '.join(encoder_names())}; Table I is {', '.join(TABLE_I)}; "
        + "; ".join(f"{k}: {v}" for k, v in EXTRA.items())
        + "; gaze*: rl/gaze.py",
    )
    steps: int = option(1_000_000, "environment steps in total (summed over --num-envs)")
    seed: int = option(0, "seed of networks, replay sampling, exploration and training envs")
    out: str = option("", "run folder (default runs/sac/<task>/<encoder>/seed<seed>)")
    resume: bool | str = resume_field(RESUME_HELP + " (same config required)")
    preset: str = field(default="", init=False, metadata={"help": "preset the run was started from (set by --preset)"})
    device: str = option("auto", "torch device: auto (cuda if available), cpu, cuda, cuda:1, ...")
    precision: str = precision_field()
    cuda_graphs: bool = option(
        True, "on a GPU, replay each SAC update of the pack from a captured CUDA graph (gaze encoders stay eager)"
    )
    torch_threads: int = option(0, "torch CPU threads (0: torch's default; 1 is fastest on a busy shared CPU)")
    # -- environment (the EnvConfig that data.collect uses: --task, --image-size, --camera, --render-quality, ...) --
    env: EnvConfig = nested(EnvConfig)
    num_envs: int = option(1, "parallel training envs (subprocesses when > 1); one SAC update per env step")
    # -- inputs of pretrained encoders ---------------------------------------------------------
    saliency: str = option(
        "predictor",
        "saliency source for saliency-consuming encoders: predictor (trained model on every frame) or oracle (simulator clicks -> map, for ablations and CPU runs)",
    )
    saliency_model: str = option("", "saliency checkpoint (default runs/saliency/<task>/student.pt, else best.pt)")
    mmae_features: str = option(
        MMAE_FEATURES[0],
        "what a frozen MultiMAE hands SAC: 'standardized' (the pooled tokens per dimension, with the statistics stored in the export at pretraining; the default, measured better on reach-v3: README 'Faithful to the paper') or 'raw' (the paper's mean of all tokens as it is)",
        choices=list(MMAE_FEATURES),
    )
    saliency_scale: str = option(
        "paper",
        "saliency channel of the cnn_saliency and cnn_rgbs rows: 'paper' (the map in [0, 1], the paper's text) or 'authors' (divided by 255 once more, as the authors' public code does)",
        choices=list(SALIENCY_SCALES),
    )
    mmae: str = option(
        "",
        "frozen MultiMAE encoder (default: the task's own, runs/mmae/rgb/<task>/encoder.pt for mmae_rgb, runs/mmae/rgbs/<task>/encoder.pt for mmae_rgbs, mmae_rgbs_po and mmae_rgbs_grid2; a pooled model only when named here)",
    )
    # -- SAC -----------------------------------------------------------------------------------
    hidden_dim: int = option(1024, "width of the two hidden layers of actor and critics")
    feature_dim: int = option(100, "output size of the CNN encoders' projection (Linear + LayerNorm + tanh)")
    batch_size: int = option(128, "SAC minibatch size")
    discount: float = option(0.99, "discount factor")
    actor_lr: float = option(1e-4, "actor learning rate (Adam)")
    critic_lr: float = option(1e-4, "critic (and trained encoder) learning rate (Adam)")
    alpha_lr: float = option(1e-4, "temperature learning rate (Adam)")
    init_temperature: float = option(0.1, "initial entropy temperature alpha")
    target_entropy: float | None = option(None, "target entropy (default -|A| = -4)")
    tau: float = option(0.005, "soft target update rate of the critics")
    actor_update_every: int = option(2, "update actor and temperature every this many SAC updates")
    target_update_every: int = option(2, "soft-update target critics every this many SAC updates")
    log_std_min: float = option(-10.0, "lower bound of the policy's log standard deviation")
    log_std_max: float = option(2.0, "upper bound of the policy's log standard deviation")
    random_steps: int = option(1000, "initial env steps with uniform random actions and no updates")
    replay_size: int = option(1_000_000, "replay capacity in transitions (split evenly across envs)")
    # -- evaluation, logging, checkpoints ------------------------------------------------------
    eval_every: int = option(10_000, "evaluate every this many env steps (0: only at the end)")
    eval_episodes: int = option(
        50, "evaluation episodes (deterministic policy, fresh seeds); success = any success in the episode"
    )
    final_eval_episodes: int = option(
        0,
        "episodes of the evaluation at --steps, the one summary.json reports (0: --eval-episodes)",
    )
    eval_envs: int = option(0, "parallel evaluation envs (0: same as --num-envs)")
    log_every: int = option(1000, "write a metrics.csv row every this many env steps")
    checkpoint_every: int = option(
        50_000, "save a resumable checkpoint at the first episode boundary after every this many env steps"
    )
    checkpoint_minutes: float = option(
        20.0,
        "also save one at the first episode boundary after this many minutes since the last (0: by steps "
        "only): a kill without warning (a session's hard end) loses at most this much training",
    )
    max_minutes: float = option(
        0.0,
        "pause at the first episode boundary after this many minutes of training, checkpoints written (0: no limit); continue with --resume (or --resume auto)",
    )
    # -- Gaze on the Prize (rl/gaze.py): --gaze-k, --gaze-contrast-weight, ... -------------------
    gaze: GazeConfig = nested(GazeConfig, prefix="gaze_")

    @property
    def last_eval_episodes(self) -> int:
        """Episodes of the evaluation at --steps: --final-eval-episodes, else --eval-episodes."""
        return self.final_eval_episodes or self.eval_episodes

    def eval_envs_for(self, episodes: int) -> int:
        """Evaluation envs of each run for an evaluation of `episodes`: --eval-envs (0: --num-envs), never more
        than the episodes (the same for every evaluation of that length: which env plays which episode is fixed)."""
        return min(self.eval_envs or self.num_envs, episodes)

    @property
    def eval_envs_per_run(self) -> int:
        """The most evaluation envs a run holds at once (its largest evaluation's)."""
        return self.eval_envs_for(max(self.eval_episodes, self.last_eval_episodes))

    def validate(self) -> "SACConfig":
        self.env.validate()
        self.gaze.validate()
        self.resume = resume_mode(self.resume)
        check_precision(self.precision)
        if self.encoder not in ENCODERS:
            raise ValueError(f"unknown encoder {self.encoder!r}; valid encoders: {', '.join(sorted(encoder_names()))}")
        if self.mmae_features not in MMAE_FEATURES:
            raise ValueError(f"mmae-features must be one of {', '.join(MMAE_FEATURES)}, got {self.mmae_features!r}")
        if self.saliency_scale not in SALIENCY_SCALES:
            raise ValueError(f"saliency-scale must be one of {', '.join(SALIENCY_SCALES)}, got {self.saliency_scale!r}")
        if self.saliency not in SALIENCY_SOURCES:
            raise ValueError(f"saliency must be one of {', '.join(SALIENCY_SOURCES)}, got {self.saliency!r}")
        if self.saliency == "oracle" and self.saliency_model:
            raise ValueError(
                "--saliency-model is read only with --saliency predictor; drop it or use --saliency predictor"
            )
        for name in ("actor_lr", "critic_lr", "alpha_lr", "init_temperature", "discount", "tau"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name.replace('_', '-')} must be a finite number > 0, got {value}")
        if self.target_entropy is not None and not math.isfinite(self.target_entropy):
            raise ValueError(f"target-entropy must be finite, got {self.target_entropy}")
        positive = (
            "steps",
            "num_envs",
            "hidden_dim",
            "feature_dim",
            "batch_size",
            "replay_size",
            "eval_episodes",
            "log_every",
            "checkpoint_every",
            "actor_update_every",
            "target_update_every",
        )
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        for name in ("max_minutes", "checkpoint_minutes"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                raise ValueError(f"{name.replace('_', '-')} must be a finite number >= 0, got {getattr(self, name)}")
        for name in ("random_steps", "eval_every", "eval_envs", "final_eval_episodes", "torch_threads"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        if not 0.0 < self.discount <= 1.0 or not 0.0 < self.tau <= 1.0:
            raise ValueError("discount and tau must be in (0, 1]")
        if self.log_std_min >= self.log_std_max:
            raise ValueError("log-std-min must be below log-std-max")
        if self.batch_size > self.replay_size:
            raise ValueError(
                f"--batch-size {self.batch_size} exceeds --replay-size {self.replay_size}: a batch samples "
                "transitions from the replay; lower --batch-size"
            )
        if self.replay_size < 2 * self.num_envs * (self.env.max_episode_steps + 1):
            raise ValueError(
                f"replay-size {self.replay_size} is too small: it must hold two episodes per env "
                f"(>= {2 * self.num_envs * (self.env.max_episode_steps + 1)})"
            )
        return self

    def run_dir(self) -> Path:
        return Path(self.out) if self.out else Path("runs/sac") / self.env.task / self.encoder / f"seed{self.seed}"

    def differences(self, stored: dict[str, Any]) -> list[str]:
        """Fields (other than those that only extend a run, and those of other encoders: `field_applies`) where
        `stored` differs from this config."""
        mine = flat_dict(self)
        return [
            f"{k}: checkpoint {stored.get(k)!r} vs now {mine[k]!r}"
            for k in mine
            if k not in RESUMABLE_FIELDS and field_applies(k, self.encoder) and stored.get(k, mine[k]) != mine[k]
        ]


PRESETS: dict[str, dict[str, Any]] = {
    # seconds: CI tests of the whole pipeline
    "micro": dict(
        steps=300,
        hidden_dim=64,
        feature_dim=32,
        batch_size=16,
        random_steps=100,
        replay_size=1000,
        max_episode_steps=100,
        eval_every=0,
        eval_episodes=1,
        log_every=100,
        checkpoint_every=100,
        saliency="oracle",
        torch_threads=1,
    ),
    # the RL share of `make demo` on a 2-core CPU (~2 minutes with a pixel encoder)
    "demo": dict(
        steps=2000,
        hidden_dim=256,
        batch_size=64,
        random_steps=500,
        replay_size=10_000,
        eval_every=0,
        eval_episodes=2,
        log_every=250,
        checkpoint_every=1000,
        torch_threads=1,
    ),
    # a meaningful CPU run: the paper's settings with a 256-wide MLP (1024 costs ~7x per update here)
    "cpu": dict(
        steps=100_000,
        hidden_dim=256,
        replay_size=100_000,
        eval_every=10_000,
        eval_episodes=50,
        checkpoint_every=20_000,
        torch_threads=1,
    ),
    # the paper's budget (for a GPU)
    "paper": dict(steps=1_000_000, hidden_dim=1024, replay_size=1_000_000, eval_every=10_000, eval_episodes=50),
}
