"""Quality of Gaze on the Prize's return-guided triplets under a return-to-go discount (issue #24, item 5).

    python -m rl.gaze_triplets --data data/shards/reach-v3 --out results/gaze-discount/reach-v3/triplets.json

With dense rewards and fixed-length episodes, the undiscounted return-to-go (`--gaze-return-discount
1.0`, the paper's choice) mostly counts the steps left, so the "similar state, different return"
pairs that mining finds may be early-vs-late frames rather than success-vs-failure. This measures it
on collected episodes (`python -m data.collect`: a noisy scripted expert mixed with random actions, so
some episodes succeed and some fail) with the code training uses: the keys are the gaze encoder's
trunk features (`GazeEncoder.buffer_entries`; the encoder at random init, or the trunk of a trained
gaze run with `--checkpoint`), a `ReturnBuffer` per discount is filled episode by episode as
`GazeEncoder.on_env_step` fills it (frame t with the reward of the step taken from it; an episode's
last frame, which RL never stores, is left out), and `sample_and_mine` draws the anchors (the same
ones for every discount: same seed, same entries) and mines with the k and margin rule of training.

Per discount: triplets found, P(positive's episode succeeded as the anchor's did), P(negative's episode
did not), P(the positive's episode succeeded and the negative's failed: the contrast success-vs-failure
learning wants, whatever the anchor's outcome), the shares of positives/negatives from the anchor's own episode, the mean step gap
|t_anchor - t_positive| and |t_anchor - t_negative|, and the Spearman correlation between |return
difference| and |step gap| over all mined pairs (anchor-positive and anchor-negative). Chance levels
(two random entries) are given beside them. Prints a markdown table and writes JSON (`--out`).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.stats import spearmanr

from common.cli import from_flat, option, run_command
from common.hub import file_sha256, markdown_table
from common.io import atomic_write_json
from common.runs import code_version
from data.shards import ALLOW_INCOMPLETE_HELP, load_arrays, read_manifest, verified_shards
from rl.encoder_base import image_input
from rl.gaze import GazeConfig, GazeEncoder, make_gaze
from rl.gaze_buffer import ReturnBuffer, sample_and_mine


@dataclass
class TripletsConfig:
    """How often return-guided triplets pair success with success and failure with failure, per discount."""

    data: str = option("data/shards/reach-v3", "shard folder written by data.collect (whole episodes are used)")
    discounts: str = option(
        "1.0,0.99", "return-to-go discounts to compare, comma-separated (1.0: undiscounted, the default; 0.99: SAC's)"
    )
    anchors: int = option(2048, "anchors sampled, the same for every discount (more than the entries: all of them)")
    k: int = option(GazeConfig().k, "nearest neighbours searched per anchor (training's --gaze-k)")
    return_margin: float = option(
        0.0, "return difference that makes a positive/negative (0: automatic, 0.1 x std of the returns, as training)"
    )
    checkpoint: str = option(
        "",
        "agent.pt or checkpoint-<step>.pt of a gaze run whose trunk makes the keys ('': the gaze encoder at random init)",
    )
    seed: int = option(0, "seed of the random-init encoder and of the anchor sampling")
    batch_size: int = option(256, "frames per trunk forward pass")
    threads: int = option(0, "torch CPU threads (0: torch's default)")
    allow_incomplete: bool = option(False, ALLOW_INCOMPLETE_HELP)
    out: str = option("", "JSON path (default: runs/gaze_triplets/<task>/triplets.json)")

    def validate(self) -> "TripletsConfig":
        for d in self.discount_list:
            if not 0 < d <= 1:
                raise ValueError(f"--discounts must lie in (0, 1], got {d}")
        for name in ("anchors", "k", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if not self.return_margin >= 0:
            raise ValueError(f"--return-margin must be >= 0 (0 = automatic), got {self.return_margin}")
        if self.threads < 0:
            raise ValueError(f"--threads must be >= 0, got {self.threads}")
        return self

    @property
    def discount_list(self) -> list[float]:
        try:
            values = [float(w) for w in self.discounts.split(",") if w.strip()]
        except ValueError:
            raise ValueError(f"--discounts takes comma-separated numbers, got {self.discounts!r}") from None
        if not values:
            raise ValueError("--discounts names no discount")
        return values


@dataclass
class Entries:
    """Gaze buffer entries in the order RL adds them (episode by episode), with what the measure compares."""

    feats: np.ndarray  # [N, C, h, w] trunk maps
    keys: np.ndarray  # [N, C] L2-normalised k-NN keys
    pooled: np.ndarray  # [N, P] the gaze head's input
    reward: np.ndarray  # [N] reward of the step taken from this frame
    done: np.ndarray  # [N] the last entry of its episode
    episode: np.ndarray  # [N] episode index
    step: np.ndarray  # [N] step of the frame in its episode
    success: np.ndarray  # [N] whether the entry's episode succeeded


def fill_buffer(entries: Entries, discount: float) -> ReturnBuffer:
    """A ReturnBuffer holding every entry (slot i = entry i), filled one env step at a time as training does."""
    n = len(entries.reward)
    buf = ReturnBuffer(n, entries.feats.shape[1:], entries.keys.shape[1], entries.pooled.shape[1], discount)
    for i in range(n):
        at = slice(i, i + 1)
        buf.add(entries.feats[at], entries.keys[at], entries.pooled[at], entries.reward[at], entries.done[at])
    return buf


def _rate(values: np.ndarray) -> float | None:
    return float(values.mean()) if len(values) else None


def spearman(x: np.ndarray, y: np.ndarray) -> float | None:
    """Spearman's rank correlation (ties averaged); None when either side is constant or has < 2 values."""
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    return float(spearmanr(x, y).statistic)


def triplet_quality(mined: dict[str, np.ndarray], entries: Entries, returns: np.ndarray) -> dict[str, Any]:
    """What mined triplets (buffer indices = entry indices) pair up: success, episode and step of anchor vs
    positive and vs negative, and how the return gap of the pairs follows their step gap."""
    a, p, n = mined["anchor"], mined["positive"], mined["negative"]
    ok, episode, step = entries.success, entries.episode, entries.step
    gap_p, gap_n = np.abs(step[a] - step[p]), np.abs(step[a] - step[n])
    pairs_return = np.abs(np.concatenate([returns[a] - returns[p], returns[a] - returns[n]]))
    return {
        "triplets": len(a),
        "pos_frac": float(mined["has_pos"].mean()),
        "neg_frac": float(mined["has_neg"].mean()),
        "p_pos_same_success": _rate(ok[p] == ok[a]),
        "p_neg_other_success": _rate(ok[n] != ok[a]),
        "p_pos_success": _rate(ok[p]),
        "p_neg_failure": _rate(~ok[n]),
        # what success-vs-failure contrast wants whatever the anchor's outcome: the positive's episode
        # succeeded and the negative's failed (inverted: the reverse)
        "p_success_ordered": _rate(ok[p] & ~ok[n]),
        "p_success_inverted": _rate(~ok[p] & ok[n]),
        "p_pos_same_episode": _rate(episode[p] == episode[a]),
        "p_neg_same_episode": _rate(episode[n] == episode[a]),
        "step_gap_pos": _rate(gap_p),
        "step_gap_neg": _rate(gap_n),
        "spearman_return_step": spearman(pairs_return, np.concatenate([gap_p, gap_n]).astype(float)),
        "anchor_success_share": _rate(ok[a]),
    }


def measure(entries: Entries, discount: float, anchors: int, k: int, return_margin: float, seed: int) -> dict[str, Any]:
    """Fill a buffer with `entries` under `discount`, mine as one contrastive update would (anchors drawn
    with a generator seeded by `seed`), and score the triplets (`triplet_quality`)."""
    buf = fill_buffer(entries, discount)
    batch = sample_and_mine(buf, np.random.default_rng(seed), anchors, k, return_margin)
    if batch is None:
        raise ValueError("fewer than 2 buffer entries have a return: collect at least one whole episode")
    return {
        "discount": discount,
        "anchors": len(batch.sampled),
        "return_margin": batch.margin,
        **triplet_quality(batch.mined, entries, buf.returns[: buf.size]),
    }


def chance_levels(entries: Entries) -> dict[str, float]:
    """The same measures for two entries drawn at random (with replacement): what mining is compared to."""
    share = float(entries.success.mean())
    steps = np.sort(entries.step.astype(np.float64))
    n = len(steps)
    # sum over ordered pairs of |t_i - t_j| = 2 * sum_j t_j (2j - n + 1) over the sorted steps
    gap = 2 * float((steps * (2 * np.arange(n) - n + 1)).sum()) / n**2
    return {"p_same_success": share**2 + (1 - share) ** 2, "step_gap": gap, "success_share": share}


# -- from shards ------------------------------------------------------------------------------
def episodes_of(meta: list[dict[str, Any]], keys: list[str], episode_steps: int) -> list[np.ndarray]:
    """Frame indices of each whole episode (steps 0..episode_steps), in step order; cut ones are left out."""
    groups: dict[tuple[str, int], list[int]] = {}
    for i, (m, key) in enumerate(zip(meta, keys)):
        groups.setdefault((key.split("-")[0], int(m["episode"])), []).append(i)
    whole = []
    for _, frames in sorted(groups.items()):
        frames = sorted(frames, key=lambda i: meta[i]["step"])
        if [meta[i]["step"] for i in frames] == list(range(episode_steps + 1)):
            whole.append(np.array(frames))
    return whole


def load_gaze_encoder(cfg: TripletsConfig, image_size: int) -> tuple[GazeEncoder, str]:
    """The encoder whose trunk makes the keys, and a description of it."""
    if cfg.checkpoint:
        from rl.evaluate import load_agent

        loaded = load_agent(Path(cfg.checkpoint).parent, checkpoint=cfg.checkpoint)
        if not isinstance(loaded.encoder, GazeEncoder):
            raise ValueError(f"--checkpoint {cfg.checkpoint} trained encoder {loaded.cfg.encoder!r}: pass a gaze run")
        if loaded.cfg.env.image_size != image_size:
            raise ValueError(
                f"--checkpoint {cfg.checkpoint} sees {loaded.cfg.env.image_size} px frames, {cfg.data} holds "
                f"{image_size} px: collect with --image-size {loaded.cfg.env.image_size}"
            )
        return loaded.encoder, f"{loaded.cfg.encoder} trunk of {loaded.checkpoint} (step {loaded.step})"
    from rl.config import PRESETS, SACConfig

    sac = from_flat(SACConfig, {**PRESETS["cpu"], "encoder": "gaze", "seed": cfg.seed, "image_size": image_size})
    torch.manual_seed(cfg.seed)  # as training seeds before building its encoder
    return make_gaze(sac, image_size).eval(), f"gaze at random init (seed {cfg.seed}, cpu preset)"


@torch.no_grad()
def entries_from_shards(cfg: TripletsConfig) -> tuple[Entries, dict[str, Any]]:
    """Buffer entries of every whole episode in `cfg.data`, keyed by the gaze trunk; and what was read."""
    manifest = read_manifest(cfg.data)
    data = load_arrays(cfg.data, allow_incomplete=cfg.allow_incomplete)
    meta, rgb = data["meta"], data["rgb"]
    steps = int(manifest.get("episode_steps") or max(m["step"] for m in meta))
    episodes = episodes_of(meta, data["keys"], steps)
    if len(episodes) < 2:
        raise ValueError(
            f"{cfg.data} holds {len(episodes)} whole {steps}-step episode(s), 2 or more are needed: collect with "
            f"--shard-size a multiple of {steps + 1} (episodes never cross shards) and --frames at least twice it"
        )
    encoder, described = load_gaze_encoder(cfg, rgb.shape[1])
    # frame t of an episode is stored with the reward of the step taken from it: meta[t + 1]["reward"]
    frames = np.concatenate([e[:-1] for e in episodes])  # [N]
    reward = np.concatenate([[meta[i]["reward"] for i in e[1:]] for e in episodes]).astype(np.float32)
    success = np.concatenate([np.full(len(e) - 1, meta[e[-1]]["success"] > 0) for e in episodes])
    episode = np.repeat(np.arange(len(episodes)), steps)
    done = np.zeros(len(frames), bool)
    done[steps - 1 :: steps] = True
    parts = []
    for start in range(0, len(frames), cfg.batch_size):
        pixels = torch.from_numpy(rgb[frames[start : start + cfg.batch_size]]).permute(0, 3, 1, 2)[None]
        feat = encoder.trunk(image_input(pixels))  # [1, B, C, h, w]
        parts.append([x[0] for x in encoder.buffer_entries(feat)])
    feats, keys, pooled = (np.concatenate(x) for x in zip(*parts))
    entries = Entries(
        feats=feats.astype(np.float16),
        keys=keys,
        pooled=pooled,
        reward=reward,
        done=done,
        episode=episode,
        step=np.tile(np.arange(steps), len(episodes)),
        success=success,
    )
    read = {
        "task": manifest.get("task"),
        "episodes": len(episodes),
        "episode_steps": steps,
        "successful_episodes": int(sum(meta[e[-1]]["success"] > 0 for e in episodes)),
        "frames_read": len(meta),
        "frames_left_out": len(meta) - sum(len(e) for e in episodes),
        "collection": manifest.get("flags", ""),
        "data_digest": data_digest(cfg),
        "keys": described,
    }
    return entries, read


def data_digest(cfg: TripletsConfig) -> str:
    """sha256 over the shard files' checksums (each shard was checked against its manifest on read)."""
    h = hashlib.sha256()
    for shard in verified_shards(cfg.data, cfg.allow_incomplete):
        h.update(f"{shard.path.name}:{shard.sha256 or file_sha256(shard.path)}\n".encode())
    return h.hexdigest()


# -- report ---------------------------------------------------------------------------------------
COLUMNS = (
    ("discount", "discount", "{}"),
    ("triplets", "triplets", "{}"),
    ("p_pos_same_success", "P(pos same success)", "{:.3f}"),
    ("p_neg_other_success", "P(neg other success)", "{:.3f}"),
    ("p_success_ordered", "P(pos won, neg failed)", "{:.3f}"),
    ("p_pos_same_episode", "P(pos same episode)", "{:.3f}"),
    ("p_neg_same_episode", "P(neg same episode)", "{:.3f}"),
    ("step_gap_pos", "step gap a-p", "{:.1f}"),
    ("step_gap_neg", "step gap a-n", "{:.1f}"),
    ("spearman_return_step", "Spearman(dR, dt)", "{:+.3f}"),
    ("return_margin", "margin", "{:.3g}"),
)


def result_table(result: dict[str, Any]) -> str:
    """The per-discount rows, then chance (two random entries) where a column has one."""
    fmt = lambda spec, v: "-" if v is None else spec.format(v)  # noqa: E731
    rows = [[fmt(spec, row[k]) for k, _, spec in COLUMNS] for row in result["rows"]]
    c = result["chance"]
    chance = {
        "discount": "chance",
        "p_pos_same_success": c["p_same_success"],
        "p_neg_other_success": 1 - c["p_same_success"],
        "p_success_ordered": c["success_share"] * (1 - c["success_share"]),
        "step_gap_pos": c["step_gap"],
        "step_gap_neg": c["step_gap"],
    }
    rows.append(["" if k not in chance else fmt(spec, chance[k]) for k, _, spec in COLUMNS])
    return markdown_table([h for _, h, _ in COLUMNS], rows)


def run(cfg: TripletsConfig) -> dict[str, Any]:
    cfg.validate()
    t0 = time.time()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    entries, read = entries_from_shards(cfg)
    warnings = []
    if read["successful_episodes"] == 0:
        warnings.append(
            "every episode failed: the success columns are trivial; collect longer or more expert episodes "
            "(data.collect --episode-steps, --expert-frac)"
        )
    elif read["successful_episodes"] == read["episodes"]:
        warnings.append(
            "every episode succeeded: the success columns are trivial; collect more random episodes "
            "(data.collect --random-frac, --noise-std-max)"
        )
    rows = [measure(entries, d, cfg.anchors, cfg.k, cfg.return_margin, cfg.seed) for d in cfg.discount_list]
    result = {
        "config": asdict(cfg),
        "seeds": {"encoder": cfg.seed, "anchors": cfg.seed},
        "data": read,
        "entries": len(entries.reward),
        "chance": chance_levels(entries),
        "rows": rows,
        "warnings": warnings,
        "seconds": round(time.time() - t0, 1),
        "code_version": code_version(),
    }
    out = Path(cfg.out or f"runs/gaze_triplets/{read['task']}/triplets.json")
    atomic_write_json(out, result)
    for w in warnings:
        print(f"WARNING: {w}")
    print(
        f"{read['task']}: {read['episodes']} episodes of {read['episode_steps']} steps "
        f"({read['successful_episodes']} successful), {len(entries.reward)} entries; keys: {read['keys']}"
    )
    print(result_table(result))
    print(f"written to {out} ({result['seconds']:.0f} s)")
    return result | {"path": str(out)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    return run_command(TripletsConfig, run, argv)


if __name__ == "__main__":
    main()
