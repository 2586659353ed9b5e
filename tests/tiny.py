"""The smallest settings the tests train with, one place for all: a SAC run of a few hundred steps on 50-step
episodes, a MultiMAE of width 32 with one block. Tests override single fields: `{**TINY_SAC, "hidden_dim": 64}`."""

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
