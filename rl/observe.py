"""The one observation path of the RL stage: raw vector-env output -> encoder fields -> what replay stores.

Saliency comes from here alone: the trained predictor runs once per env step on the frames of every
run of a pack (`--saliency predictor`), or the envs' oracle wrapper supplies the map
(`--saliency oracle`, rl/envs.py). Frozen encoders run here too, once per env step on all frames
of the runs that share an export, and the replay buffer stores their embeddings. Pictures
(rl/gaze_viz.py) use the same `saliency_source`.

Fields are torch tensors on the agent's device, rows in the vector env's run-major order:
  "pixels": uint8 [N, 3, H, W], "saliency": uint8 [N, 1, H, W], "state": float32 [N, 39],
  "embedding": float32 [N, D] (frozen encoders' output; float32 keeps their small variations).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.precision import full_precision
from data.env import STATE_DIM
from rl.encoders import Encoder


def saliency_command(task: str) -> str:
    return f"python -m saliency.train --annotations data/annotations/{task}.npz"


def choose_saliency_model(task: str, path: str = "") -> tuple[Path, str]:
    """(saliency checkpoint, why it was chosen): `path` (--saliency-model), else the task's student.pt,
    else its PiCANet best.pt, whose fallback the reason says (the student is the fast predictor)."""
    if path:
        return Path(path), "--saliency-model"
    root = Path("runs/saliency") / task
    if (root / "student.pt").exists():
        return root / "student.pt", "default (the task's student)"
    return root / "best.pt", (
        f"default (no {root / 'student.pt'}, so the task's PiCANet: slower; `python -m saliency.distill` makes the student)"
    )


def default_saliency_model(task: str) -> Path:
    return choose_saliency_model(task)[0]


def load_predictor(task: str, path: str = "", device: torch.device | str = "auto", precision: str = "auto"):
    """The saliency predictor of `path` (default: the task's student, else its PiCANet), or a clear error."""
    model = Path(path) if path else default_saliency_model(task)
    if not model.exists():
        raise FileNotFoundError(
            f"saliency predictor {model} does not exist; train one with `{saliency_command(task)}` (writes best.pt; "
            "`python -m saliency.distill` adds student.pt), pass --saliency-model PATH, or use --saliency oracle"
        )
    from saliency.predictor import SaliencyPredictor

    return SaliencyPredictor.load(str(model), device=device, precision=precision), str(model)


def stack_final_obs(final: np.ndarray, rows: np.ndarray) -> dict[str, np.ndarray]:
    """info["final_obs"] (object array of per-env dicts) at `rows` -> a batched dict."""
    items = [final[i] for i in rows]
    return {k: np.stack([it[k] for it in items]) for k in items[0]}


def renders(obs_keys) -> bool:
    """True if observations with these keys need rendered frames (pixel env workers)."""
    return "pixels" in obs_keys or "saliency" in obs_keys


class Observer:
    """Raw observations of a pack's envs -> encoder fields (saliency predicted here) -> stored fields.

    keys: the fields the pack's encoders read; frozen: per run, its frozen encoder (None for
    trained encoders); runs sharing a frozen export share one module; readers: per run, the fields its own
    encoder reads (default: `keys` for every run), so that the saliency predictor runs on the frames of the runs
    that read saliency alone (a pack of frozen encoders mixes rgb-only and rgb+saliency runs). precision: the pack's, as requested
    (auto, bf16 or fp32), for the saliency predictor, which resolves auto by its own rule (PiCANet on CUDA runs fp32:
    saliency.predictor.inference_precision). Frozen encoders run in float32 whatever the precision: a frozen MultiMAE's features move
    little from frame to frame, and bf16's rounding moves them as much (`python bench/frozen_precision.py`).
    """

    def __init__(
        self,
        keys: tuple[str, ...],
        frozen: list[Encoder | None],
        cfg: Any,
        device: torch.device,
        envs_per_run: int,
        precision: str = "fp32",
        readers: list[tuple[str, ...]] | None = None,
    ):
        self.keys, self.device, self.envs_per_run, self.precision = tuple(keys), device, envs_per_run, precision
        self.runs = len(frozen)
        self.readers = [tuple(r) for r in readers] if readers is not None else [self.keys] * self.runs
        self.saliency_runs = np.array([r for r, read in enumerate(self.readers) if "saliency" in read], np.int64)
        self.predictor = None
        self.saliency_model = ""
        self.saliency_chosen_by = ""  # why that file: --saliency-model, or which default (rl/provenance.py records it)
        if "saliency" in self.keys:
            if cfg.saliency == "predictor":
                model, self.saliency_chosen_by = choose_saliency_model(cfg.env.task, cfg.saliency_model)
                self.predictor, self.saliency_model = load_predictor(cfg.env.task, str(model), device, precision)
                print(f"saliency model: {model} ({self.saliency_chosen_by}), {self.predictor.precision}", flush=True)
            else:
                self.saliency_model = cfg.saliency
        self.pixels = renders(self.keys)
        self.oracle = "saliency" in self.keys and self.predictor is None
        # frozen modules, deduplicated by export, with the runs each one embeds
        self.frozen: list[tuple[Encoder, np.ndarray]] = []
        self.embedding_dim = 0
        groups: dict[str, list[int]] = {}
        modules: dict[str, Encoder] = {}
        for run, enc in enumerate(frozen):
            if enc is not None:
                key = getattr(enc, "source", "") or str(run)
                groups.setdefault(key, []).append(run)
                modules.setdefault(key, enc)
                self.embedding_dim = enc.out_dim
        self.frozen = [(modules[key].to(device), np.array(runs)) for key, runs in groups.items()]
        self.stores_embedding = bool(self.frozen)

    def fields(self, raw: dict[str, np.ndarray], run_of_row: np.ndarray | None = None) -> dict[str, torch.Tensor]:
        """Encoder fields [N, ...] of a batch of raw observations, on the device. run_of_row [N]: each row's run;
        given, predicted saliency is zeros on the rows of runs that do not read it (`readers`)."""
        obs: dict[str, torch.Tensor] = {}
        if self.pixels:
            obs["pixels"] = torch.from_numpy(np.asarray(raw["pixels"])).to(self.device).permute(0, 3, 1, 2).contiguous()
        if "saliency" in self.keys:
            if self.predictor is not None:
                pixels = np.asarray(raw["pixels"])
                rows = np.isin(run_of_row, self.saliency_runs) if run_of_row is not None else np.ones(len(pixels), bool)
                predicted = np.zeros(pixels.shape[:3], np.float32)  # [N, H, W]
                if rows.any():
                    predicted[rows] = self.predictor(pixels if rows.all() else pixels[rows])  # float in [0, 1]
                sal = torch.from_numpy(predicted).to(self.device).clamp_(0, 1).mul_(255).round_().to(torch.uint8)
            else:
                sal = torch.from_numpy(np.asarray(raw["saliency"])).to(self.device)
            obs["saliency"] = sal[:, None].contiguous()
        if "state" in self.keys:
            obs["state"] = torch.from_numpy(np.asarray(raw["state"], np.float32).reshape(-1, STATE_DIM)).to(self.device)
        return obs

    @torch.no_grad()
    def store(self, obs: dict[str, torch.Tensor], run_of_row: np.ndarray) -> dict[str, torch.Tensor]:
        """What the buffer keeps: the embedding for frozen encoders (computed once), else the fields.

        run_of_row [N]: the run each row belongs to (which frozen encoder embeds it).
        """
        if not self.stores_embedding:
            return obs
        n = next(iter(obs.values())).shape[0]
        emb = torch.empty(n, self.embedding_dim, device=self.device)
        with full_precision(self.device):
            for module, runs in self.frozen:
                rows = torch.from_numpy(np.flatnonzero(np.isin(run_of_row, runs))).to(self.device)
                if len(rows) == n:
                    emb.copy_(module(obs))
                elif len(rows):
                    emb[rows] = module({k: v[rows] for k, v in obs.items()}).float()
        return {"embedding": emb}

    def observe(
        self, raw: dict[str, np.ndarray], run_of_row: np.ndarray
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """(fields, stored) of raw observations."""
        obs = self.fields(raw, run_of_row)
        return obs, self.store(obs, run_of_row)

    def final_stored(
        self, info: dict[str, Any], done: np.ndarray, next_stored: dict[str, torch.Tensor], run_of_row: np.ndarray
    ) -> dict[str, torch.Tensor] | None:
        """What the buffer keeps of the last observation of every episode that just ended (SAME_STEP
        autoreset puts it in info["final_obs"]): full-size fields, the ended rows filled; None if none ended."""
        if not done.any():
            return None
        ended = np.flatnonzero(done)
        final = self.store(self.fields(stack_final_obs(info["final_obs"], ended), run_of_row[ended]), run_of_row[ended])
        out = {k: torch.zeros_like(v) for k, v in next_stored.items()}
        rows = torch.from_numpy(ended).to(self.device)
        for k in out:
            out[k][rows] = final[k]
        return out

    def per_run(self, flat: dict[str, torch.Tensor], envs_per_run: int | None = None) -> dict[str, torch.Tensor]:
        """[R*E, ...] -> [R, E, ...] (views)."""
        e = envs_per_run or self.envs_per_run
        return {k: v.view(self.runs, e, *v.shape[1:]) for k, v in flat.items()}

    def specs(self, image_size: int) -> dict[str, tuple[tuple[int, ...], Any]]:
        return replay_fields(self.keys, self.embedding_dim if self.stores_embedding else 0, image_size)


def replay_fields(keys: tuple[str, ...], embedding_dim: int, image_size: int) -> dict[str, tuple[tuple[int, ...], Any]]:
    """What the replay buffer stores per slot, {field: (shape, dtype)}: a frozen encoder's embedding
    (`embedding_dim` > 0), else the encoder's fields `keys` as observed."""
    if embedding_dim:
        return {"embedding": ((embedding_dim,), np.float32)}
    shapes = {
        "pixels": ((3, image_size, image_size), np.uint8),
        "saliency": ((1, image_size, image_size), np.uint8),
        "state": ((STATE_DIM,), np.float32),
    }
    return {k: shapes[k] for k in keys}
