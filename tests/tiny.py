"""The smallest settings the tests train with, one place for all: a SAC run of a few hundred steps on 50-step
episodes, a MultiMAE of width 32 with one block, the CPU table's flags at micro sizes. Tests override single fields:
`{**TINY_SAC, "hidden_dim": 64}`."""

#: SACConfig fields (rl.config) of a run that trains and checkpoints in seconds.
TINY_SAC = dict(
    steps=150,
    random_steps=50,
    max_episode_steps=50,
    batch_size=8,
    hidden_dim=32,
    feature_dim=16,
    replay_size=1000,
    eval_every=0,
    eval_episodes=1,
    log_every=50,
    checkpoint_every=50,
    torch_threads=1,
    saliency="oracle",
)

#: ModelConfig fields (pretrain.model) of a MultiMAE of width 32: one encoder block, one decoder block.
TINY_MMAE = dict(dim=32, depth=1, num_heads=2, decoder_dim=32, decoder_depth=1, decoder_heads=2)

#: pipeline.table's phase A at micro sizes: every stage the table runs, with real outputs between them, in minutes
MICRO_TABLE = [
    *("--phase", "A", "--frames", "1000", "--collect-workers", "1", "--saliency-preset", "micro"),
    *("--pretrain-images", "1000", "--pretrain-preset", "micro"),
    *("--pretrain-extra", "--batch-size 32 --warmup-epochs 0 --threads 1 --no-progress"),
    *("--probe-extra", "--fit-frames 300 --score-frames 200", "--hidden-dim", "64", "--parallel", "2"),
    *("--reach-steps", "1000", "--reach-seeds", "2", "--first-seeds", "1", "--more-seeds", "1", "--max-seeds", "2"),
    *("--eval-every", "500", "--eval-episodes", "1", "--final-eval-episodes", "2", "--eval-envs", "1"),
    *("--checkpoint-every", "500", "--sac-extra", "--batch-size 32 --random-steps 200 --max-episode-steps 100"),
]
