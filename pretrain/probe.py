"""Linear probe of a frozen MultiMAE encoder: does it keep hand, object and goal positions?

    python -m pretrain.probe --encoder runs/mmae/rgbs/encoder.pt --data data/shards/reach-v3
    python -m pretrain.probe --encoder runs/mmae/rgbs/encoder.pt --data data/shards/reach-v3 --inputs rgb   # PO

Ridge regression from frozen features to the stored Meta-World state (hand xyz = state[0:3],
object xyz = state[4:7], goal xyz = state[36:39]); fitted on frames of some episodes, scored by
R^2 on frames of other episodes (held-out object/goal placements). R^2 of a position is pooled
over its coordinates, 1 - sum(SSE) / sum(SST), so a coordinate that barely moves cannot dominate.
The ridge penalty is chosen per position by 5-fold cross-validation over fit episodes; features
are standardised on the fit frames first.

Rows: the pretrained encoder for every pool (mean of all tokens = the paper, global token, 2x2
and 4x4 grids of mean patch tokens), the same architecture at random init, and raw pixels
downsampled to 16x16x3. The "stored" columns score the features after a round trip through
a storage precision (--store, e.g. float16; RL's replay buffer is float32), as RL receives them from
`FrozenEncoder.load(path, inputs=..., pool=...)` (standardised with the export's statistics when
it has them; so does RL unless `--mmae-features raw`). Writes a table to stdout and a JSON next to the encoder (probe_<inputs>.json), and
refreshes the encoder's model card when it has a hub copy (pretrain.export).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from common.cli import flat_dict, option, run_command
from common.io import atomic_write_json
from common.precision import autocast, check_precision, precision_field, resolve_precision
from common.progress import progress
from common.runs import code_version, device_description
from data.preprocess import frames_to_tensor
from data.shards import ShardError, read_manifest
from pretrain.data import Frames, load_frames, select_folders
from pretrain.export import refresh_card
from pretrain.frozen import FrozenEncoder
from pretrain.model import POOLS
from pretrain.probe_table import TARGET_NAMES, fmt_r2, format_row, table_header

#: position name -> slice of the 39-d Meta-World state
TARGETS = dict(zip(TARGET_NAMES, (slice(0, 3), slice(4, 7), slice(36, 39))))  # state columns of each position
ALPHAS = (1e-2, 1e-1, 1.0, 10.0, 100.0, 1e3, 1e4, 1e5)
STORE_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
#: R^2 differences below this are within the probe's noise (seeds, frame samples): the gate ignores them
TOLERANCE = 0.01


@dataclass
class ProbeConfig:
    """Linear-probe R^2 of hand, object and goal positions from a frozen MultiMAE encoder's features."""

    encoder: str = option("runs/mmae/rgbs/encoder.pt", "encoder.pt written by pretrain.multimae")
    data: str = option(
        "data/shards/reach-v3",
        "shard folder (or root of folders) with stored states; a labelled folder replaces its source",
    )
    task: str = option("", "only folders of this task (when --data holds several)")
    inputs: str = option(
        "", "encoder inputs: '' = every pretrained modality, 'rgb' = the PO variant of an rgb+saliency model"
    )
    pools: str = option("mean,global,grid2,grid4", f"pools to probe, comma-separated, of {', '.join(POOLS)}")
    saliency: str = option(
        "auto",
        "saliency input: predicted (saliency.label), oracle (stored clicks) or auto (predicted when the folders are labelled)",
        choices=["auto", "predicted", "oracle"],
    )
    fit_frames: int = option(3000, "frames to fit the ridge on (from fit episodes)")
    score_frames: int = option(1000, "frames to score on (from held-out episodes)")
    held_out: float = option(0.25, "share of episodes held out for scoring")
    store: str = option("float16", "replay-buffer precision the 'stored' columns simulate", choices=list(STORE_DTYPES))
    pixels: int = option(16, "side of the raw-pixel baseline (frames downsampled to N x N x 3)")
    seed: int = option(0, "seed of the episode split, frame sampling and the random-init encoder")
    threads: int = option(0, "torch CPU threads (0 = torch default)")
    device: str = option("cpu", "device for the encoder forward passes")
    precision: str = precision_field()
    out: str = option("", "JSON path (default: probe_<inputs>.json next to the encoder)")

    def validate(self) -> "ProbeConfig":
        check_precision(self.precision)
        bad = [p for p in self.pool_list if p not in POOLS]
        if bad or not self.pool_list:
            raise ValueError(f"--pools must be a comma-separated subset of {', '.join(POOLS)}, got {self.pools!r}")
        if self.fit_frames < 10 or self.score_frames < 10:
            raise ValueError("--fit-frames and --score-frames must be >= 10")
        if not 0 < self.held_out < 1:
            raise ValueError(f"--held-out must be in (0, 1), got {self.held_out}")
        if self.pixels < 1:
            raise ValueError("--pixels must be >= 1")
        return self

    @property
    def pool_list(self) -> list[str]:
        return [p.strip() for p in self.pools.split(",") if p.strip()]


# -- ridge ------------------------------------------------------------------------------------
def r2_pooled(pred: torch.Tensor, y: torch.Tensor) -> float:
    """1 - sum over coordinates of SSE / sum of SST (about y's own mean); NaN when y is constant."""
    sst = (y - y.mean(0)).pow(2).sum()
    if sst <= 1e-12 * max(1, y.numel()):
        return float("nan")
    return float(1 - (pred - y).pow(2).sum() / sst)


#: spreads below this share of the median feature's are floored there before dividing (see _standardizer)
SPREAD_FLOOR = 0.01


def _standardizer(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and spread per feature of the fit frames. Constant features keep spread 1; spreads below
    SPREAD_FLOOR x the median live spread are floored there: a raw pixel that the arm crosses in a
    handful of fit frames (spread ~1e-5) would otherwise become a unit-variance input whose values on
    unseen frames reach thousands: such pixels sent the raw-pixel baseline's hand R^2 to -4.9 (0.98
    floored). Features of ordinary spread, however scaled, are standardised as before."""
    mean, std = x.mean(0), x.std(0)
    live = std > 1e-12 * (1 + mean.abs())
    floor = SPREAD_FLOOR * std[live].median() if live.any() else 0.0
    return mean, torch.where(live, std.clamp(min=floor), torch.ones_like(std))


class Ridge:
    """Ridge regression on standardised features (fit-set statistics), closed form through one
    eigendecomposition of the smaller Gram matrix (d x d, or n x n when features outnumber frames)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        x, y = x.double(), y.double()
        self.mu, self.sd = _standardizer(x)
        self.y_mean = y.mean(0)
        z, yc = (x - self.mu) / self.sd, y - self.y_mean  # [n, d], [n, t]
        self.primal = z.shape[1] <= z.shape[0]
        if self.primal:  # Z^T Z = V diag(lam) V^T; w = V (lam + a)^-1 V^T Z^T y
            self.lam, self.v = torch.linalg.eigh(z.T @ z)
            self.vty = self.v.T @ (z.T @ yc)  # [d, t]
        else:  # Z Z^T = U diag(lam) U^T; w = Z^T U (lam + a)^-1 U^T y
            self.lam, u = torch.linalg.eigh(z @ z.T)
            self.v, self.vty = z.T @ u, u.T @ yc  # [d, n], [n, t]
        self.lam = self.lam.clamp(min=0)

    def predict(self, x: torch.Tensor, alpha: float) -> torch.Tensor:
        w = self.v @ (self.vty / (self.lam + alpha)[:, None])  # [d, t]
        return ((x.double() - self.mu) / self.sd) @ w + self.y_mean


def choose_alphas(
    x: torch.Tensor, y: dict[str, torch.Tensor], groups: torch.Tensor, folds: int = 5
) -> dict[str, float]:
    """Per target, the ridge penalty of ALPHAS with the best R^2 over `folds` folds of whole episodes."""
    episodes = torch.unique(groups)
    folds = max(2, min(folds, len(episodes)))
    fold_of = {
        int(e): i % folds
        for i, e in enumerate(episodes[torch.randperm(len(episodes), generator=torch.Generator().manual_seed(0))])
    }
    fold = torch.tensor([fold_of[int(g)] for g in groups])
    y_all = torch.cat(list(y.values()), 1)  # [n, 3 * targets]
    scores = {name: torch.zeros(len(ALPHAS)) for name in y}
    for f in range(folds):
        tr, te = fold != f, fold == f
        if tr.sum() < 2 or te.sum() < 2:
            continue
        ridge = Ridge(x[tr], y_all[tr])
        for a_i, alpha in enumerate(ALPHAS):
            pred = ridge.predict(x[te], alpha)
            col = 0
            for name, t in y.items():
                r2 = r2_pooled(pred[:, col : col + t.shape[1]], t[te].double())
                scores[name][a_i] += 0.0 if math.isnan(r2) else r2
                col += t.shape[1]
    return {name: ALPHAS[int(torch.argmax(s))] for name, s in scores.items()}


def probe_features(
    fit_x: torch.Tensor,
    score_x: torch.Tensor,
    fit_y: dict[str, torch.Tensor],
    score_y: dict[str, torch.Tensor],
    fit_groups: torch.Tensor,
    alphas: dict[str, float] | None = None,
) -> dict[str, dict[str, float]]:
    """Features [n, d] of fit and score frames -> {"r2": {target: R^2}, "alpha": {target: penalty}}
    (penalties chosen by grouped cross-validation unless given)."""
    alphas = alphas or choose_alphas(fit_x, fit_y, fit_groups)
    ridge = Ridge(fit_x, torch.cat(list(fit_y.values()), 1))
    r2, col = {}, 0
    for name, t in score_y.items():
        pred = ridge.predict(score_x, alphas[name])[:, col : col + t.shape[1]]
        r2[name] = r2_pooled(pred, t.double())
        col += t.shape[1]
    return {"r2": r2, "alpha": alphas}


def stored(x: torch.Tensor, dtype: str) -> torch.Tensor:
    """Features after a round trip through the --store precision."""
    return x.to(STORE_DTYPES[dtype]).float()


# -- frames and features ------------------------------------------------------------------------
def split_for_probe(
    frames: Frames, fit_n: int, score_n: int, held_out: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of fit frames and of score frames, from disjoint sets of whole episodes."""
    episodes = torch.unique(frames.group)
    if len(episodes) < 4:
        raise ValueError(f"the probe needs frames of at least 4 episodes (found {len(episodes)}); collect more frames")
    g = torch.Generator().manual_seed(seed)
    episodes = episodes[torch.randperm(len(episodes), generator=g)]
    n_score = min(len(episodes) - 2, max(2, round(len(episodes) * held_out)))
    is_score = torch.isin(frames.group, episodes[:n_score])
    fit_idx, score_idx = torch.nonzero(~is_score).squeeze(1), torch.nonzero(is_score).squeeze(1)
    fit_idx = fit_idx[torch.randperm(len(fit_idx), generator=g)[:fit_n]].sort().values
    score_idx = score_idx[torch.randperm(len(score_idx), generator=g)[:score_n]].sort().values
    return fit_idx, score_idx


@torch.no_grad()
def encode_pools(
    enc: FrozenEncoder,
    frames: Frames,
    idx: torch.Tensor,
    pools: list[str],
    device: torch.device | str,
    batch: int = 256,
    precision: str = "fp32",
    bar: Any = None,
) -> dict[str, torch.Tensor]:
    """Raw (unstandardised) features {pool: [n, k*E]} of frames[idx] (all tokens, no masking), float32 on the
    CPU; the encoder runs at `precision` (resolved; RL's frozen encoders run in fp32 whatever theirs, so bf16 here
    measures what bf16 features would cost). `bar` (common.progress)
    counts the frames."""
    out: dict[str, list[torch.Tensor]] = {p: [] for p in pools}
    for chunk in idx.split(batch):
        b = frames.batch(chunk, enc.inputs, enc.image_size, device)
        with autocast(precision, device):
            tokens = enc.tokens(b["rgb"], b.get("saliency"))  # [b, 1+M*L, E]
        for p in pools:
            out[p].append(enc.model.pool(tokens, p).float().cpu())
        if bar is not None:
            bar.update(len(chunk))
    return {p: torch.cat(v) for p, v in out.items()}


def saliency_source(cfg: ProbeConfig, inputs: tuple[str, ...]) -> str | None:
    if "saliency" not in inputs:
        return None
    if cfg.saliency != "auto":
        return cfg.saliency
    folders = select_folders(cfg.data)
    return "predicted" if all(read_manifest(f).get("labelled_from") for f in folders) else "oracle"


class Readout:
    """The probe's rows: every feature set read out against the same targets, frames and storage precision."""

    def __init__(self, cfg: ProbeConfig, frames: Frames, fit_idx: torch.Tensor, score_idx: torch.Tensor, verbose: bool):
        self.cfg, self.verbose = cfg, verbose
        self.fit_y = {k: frames.state[fit_idx][:, s].double() for k, s in TARGETS.items()}
        self.score_y = {k: frames.state[score_idx][:, s].double() for k, s in TARGETS.items()}
        self.fit_groups = frames.group[fit_idx]
        self.rows: list[dict] = []

    def add(
        self,
        name: str,
        kind: str,
        pool: str,
        fit_x: torch.Tensor,
        score_x: torch.Tensor,
        raw: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> None:
        """Read out one feature set (and `raw`, its unstandardised form, after storage) and add its row."""
        store, fit_y, score_y, groups = self.cfg.store, self.fit_y, self.score_y, self.fit_groups
        row = {"features": name, "kind": kind, "pool": pool, "dim": int(fit_x.shape[1])}
        row.update(probe_features(fit_x, score_x, fit_y, score_y, groups))
        # the same readout (penalties) on the features after the buffer's storage precision
        row["r2_stored"] = probe_features(
            stored(fit_x, store), stored(score_x, store), fit_y, score_y, groups, row["alpha"]
        )["r2"]
        if raw is not None:  # the unstandardised features through the same storage, for comparison
            row["r2_stored_raw"] = probe_features(
                stored(raw[0], store), stored(raw[1], store), fit_y, score_y, groups, row["alpha"]
            )["r2"]
        self.rows.append(row)
        if self.verbose:
            print(format_row(row), flush=True)


def load_state_frames(cfg: ProbeConfig, sal: str | None) -> tuple[Frames, list[dict]]:
    """The probe's frames and folder info; refused unless they carry the 39-d Meta-World states it reads out."""
    frames, info = load_frames(cfg.data, sal, task=cfg.task)
    if frames.state is None or frames.state.shape[1] < 39:
        raise ShardError(f"{cfg.data}: frames carry no 39-d Meta-World states; the probe needs them")
    return frames, info


def read_encoders(
    readout: Readout,
    first: FrozenEncoder,
    frames: Frames,
    fit_idx: torch.Tensor,
    score_idx: torch.Tensor,
    precision: str,
) -> None:
    """Rows of the pretrained encoder `first` and of the same model at random init, for every pool."""
    cfg, path, inputs = readout.cfg, Path(readout.cfg.encoder), first.inputs
    label = "+".join(inputs)
    random_init = FrozenEncoder.random_init(first.model.cfg, inputs, seed=cfg.seed)
    for kind, enc0 in (("pretrained", first), ("random init", random_init)):
        enc0 = enc0.to(cfg.device)
        with progress(
            total=len(fit_idx) + len(score_idx),
            desc=f"probe: {kind} features",
            unit="frame",
            disable=not readout.verbose,
        ) as bar:  # the slow part on a CPU (minutes at paper size); the readouts follow, a row each
            fit_f = encode_pools(enc0, frames, fit_idx, cfg.pool_list, cfg.device, precision=precision, bar=bar)
            score_f = encode_pools(enc0, frames, score_idx, cfg.pool_list, cfg.device, precision=precision, bar=bar)
        for pool in cfg.pool_list:
            if kind == "pretrained":  # standardised with the export's statistics when it has them, as RL's
                # --mmae-features standardized (the default); r2_stored_raw is the raw feature (--mmae-features raw) through --store
                enc = FrozenEncoder.load(path, inputs=inputs, pool=pool)
                shift, scale = enc.shift.cpu(), enc.scale.cpu()
                readout.add(
                    f"pretrained, {label}",
                    kind,
                    pool,
                    (fit_f[pool] - shift) / scale,
                    (score_f[pool] - shift) / scale,
                    (fit_f[pool], score_f[pool]) if enc.standardized else None,
                )
            else:
                readout.add(f"random init, {label}", kind, pool, fit_f[pool], score_f[pool])


def write_result(cfg: ProbeConfig, result: dict, verbose: bool) -> dict:
    """Write `result` with the flags under "config" (what `--config` reads back) to --out, or to
    probe_<inputs>.json beside the encoder, whose card then lists it; returns it with its path."""
    path = Path(cfg.encoder)
    out = Path(cfg.out) if cfg.out else path.parent / f"probe_{'+'.join(result['inputs'])}.json"
    result["config"] = flat_dict(cfg)
    atomic_write_json(out, result)
    if out.parent == path.parent:  # the encoder's model card lists the probes beside it
        refresh_card(path)
    if verbose:
        for w in result["warnings"]:
            print(f"WARNING: {w}", flush=True)
        print(f"probe written to {out} ({result['seconds']:.0f} s)", flush=True)
    result["path"] = str(out)
    return result


def probe(cfg: ProbeConfig, verbose: bool = True) -> dict:
    """Run the probe; returns (and writes) the result dict with one row per feature set."""
    cfg.validate()
    t0 = time.time()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    path = Path(cfg.encoder)
    precision = resolve_precision(cfg.precision, cfg.device)
    first = FrozenEncoder.load(path, inputs=tuple(m for m in cfg.inputs.split(",") if m) or None, device=cfg.device)
    inputs, label = first.inputs, "+".join(first.inputs)
    sal = saliency_source(cfg, inputs)
    frames, info = load_state_frames(cfg, sal)
    fit_idx, score_idx = split_for_probe(frames, cfg.fit_frames, cfg.score_frames, cfg.held_out, cfg.seed)
    readout = Readout(cfg, frames, fit_idx, score_idx, verbose)
    fit_episodes, score_episodes = len(torch.unique(readout.fit_groups)), len(torch.unique(frames.group[score_idx]))
    if verbose:
        print(
            f"probe {path} ({label}) on {cfg.data}: {len(fit_idx)} fit frames from {fit_episodes} episodes, "
            f"{len(score_idx)} score frames from {score_episodes} other episodes; "
            f"saliency {sal or 'not used'}; stored = {cfg.store}",
            flush=True,
        )
        print(table_header(cfg.store), flush=True)
    read_encoders(readout, first, frames, fit_idx, score_idx, precision)
    px = lambda idx: frames_to_tensor(frames.rgb[idx], size=cfg.pixels).flatten(1)  # noqa: E731  [n, 3*N*N]
    readout.add(f"raw pixels {cfg.pixels}x{cfg.pixels}x3", "pixels", "-", px(fit_idx), px(score_idx))
    result = {
        "encoder": str(path),
        "data": str(cfg.data),
        "folders": info,
        "inputs": list(inputs),
        "saliency": sal,
        "fit_frames": len(fit_idx),
        "score_frames": len(score_idx),
        "fit_episodes": fit_episodes,
        "score_episodes": score_episodes,
        "store": cfg.store,
        "seed": cfg.seed,
        "encoder_meta": first.meta,
        "model_config": first.model.cfg.to_dict(),
        "rows": readout.rows,
        "warnings": [],
        "device": device_description() if str(cfg.device) == "cpu" else str(cfg.device),
        "precision": precision,
        "seconds": round(time.time() - t0, 1),
        "code_version": code_version(),
    }
    result["warnings"] = gate_warnings(result)
    return write_result(cfg, result, verbose)


# -- reporting --------------------------------------------------------------------------------
def _row(result: dict, kind: str, pool: str) -> dict | None:
    return next((r for r in result["rows"] if r["kind"] == kind and r["pool"] == pool), None)


def gate_warnings(result: dict) -> list[str]:
    """What the pipeline shouts about: an encoder that reads the hand position worse than its random
    init (by more than TOLERANCE), and storage precision costing more than 0.05 R^2."""
    out = []
    for pool in dict.fromkeys(r["pool"] for r in result["rows"] if r["kind"] == "pretrained"):
        pre, rnd = _row(result, "pretrained", pool), _row(result, "random init", pool)
        if pre and rnd and not pre["r2"]["hand"] >= rnd["r2"]["hand"] - TOLERANCE:
            out.append(
                f"{result['encoder']} ({'+'.join(result['inputs'])}, pool {pool}) reads the hand position worse than the same "
                f"model at random init (R^2 {fmt_r2(pre['r2']['hand'])} vs {fmt_r2(rnd['r2']['hand'])}): pretraining did not help"
            )
        if pre:
            for t in TARGETS:
                a, b = pre["r2"][t], pre["r2_stored"][t]
                if not (math.isnan(a) or math.isnan(b)) and a - b > 5 * TOLERANCE:
                    out.append(
                        f"{result['encoder']} pool {pool}: storing features as {result['store']} drops {t} R^2 from "
                        f"{fmt_r2(a)} to {fmt_r2(b)}; store float32 or standardise the features"
                    )
    return out


def main(argv: list[str] | None = None) -> dict:
    return run_command(ProbeConfig, probe, argv)


if __name__ == "__main__":
    main()
