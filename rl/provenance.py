"""What a SAC run read besides its config: the frozen encoder and the saliency model, by resolved path and sha256.

Two runs with equal configs can still have loaded different files (a default path re-trained in
between, a folder copied elsewhere); `run_inputs` names the files a run loaded, and rl/workspace.py
writes it under "inputs" into the run's config.json and summary.json:

    "inputs": {"frozen_encoder": {"path": "/abs/runs/mmae/rgbs/reach-v3/encoder.pt", "sha256": "...",
                                  "inputs": ["rgb", "saliency"], "pool": "mean", "chosen_by": "--mmae"},
               "saliency_model": {"path": "/abs/runs/saliency/reach-v3/student.pt", "sha256": "...",
                                  "chosen_by": "default (the task's student)"}}

A field is null when the run reads no such input; `"saliency_model": {"source": "oracle"}` for the
oracle's maps. "chosen_by" says why that file: the flag, or which default (a saliency model falls back
from the task's student.pt to its PiCANet best.pt; the run's first lines say so too). `rl.evaluate`
loads the recorded files again and refuses one whose sha256 differs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from common.hub import file_sha256

#: the key of config.json and summary.json that holds a run's inputs
INPUTS_KEY = "inputs"


def file_record(path: str | Path) -> dict[str, str]:
    """{"path": resolved path, "sha256": digest of its bytes} of a model file."""
    return {"path": str(Path(path).resolve()), "sha256": file_sha256(path)}


def run_inputs(observer: Any, run: int = 0) -> dict[str, Any]:
    """The inputs run `run` of a pack loaded, from its `rl.observe.Observer` (frozen encoders and saliency live there).

    A frozen encoder records itself when it is loaded (`MMAEEncoder.provenance`); the saliency model is
    hashed here, from the path the observer loaded."""
    frozen = next(
        (
            dict(module.provenance)
            for module, runs in observer.frozen
            if run in runs.tolist() and getattr(module, "provenance", None)
        ),
        None,
    )
    saliency: dict[str, str] | None = None
    reads = "saliency" in observer.readers[run]  # a pack mate's saliency model is not this run's input
    if reads and observer.predictor is not None:
        saliency = {
            **file_record(observer.saliency_model),
            "chosen_by": observer.saliency_chosen_by,
            "precision": observer.predictor.precision,  # its own: PiCANet on CUDA runs fp32 in a bf16 pack
        }
    elif reads:
        saliency = {"source": "oracle"}
    return {"frozen_encoder": frozen, "saliency_model": saliency}


def check_inputs(recorded: dict[str, Any] | None, loaded: dict[str, Any], where: str) -> None:
    """ValueError when a file loaded now is not the one the run recorded (by sha256); `where` names the record."""
    for key, flag in (("frozen_encoder", "--mmae"), ("saliency_model", "--saliency-model")):
        then, now = (recorded or {}).get(key) or {}, loaded.get(key) or {}
        if then.get("sha256") and now.get("sha256") and then["sha256"] != now["sha256"]:
            raise ValueError(
                f"{where} records {key.replace('_', ' ')} {then['path']} with sha256 {then['sha256'][:12]}..., but "
                f"{now['path']} has sha256 {now['sha256'][:12]}...: the run was trained with another file; pass "
                f"{flag} with the file it recorded"
            )
