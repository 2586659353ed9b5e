"""The pipeline's check after pretraining: probe every new encoder, print the numbers, keep them, shout on failure.

`probe_gate(run_dir, tasks, modalities)` runs `pretrain.probe` for each task's encoder (the full
inputs, and rgb only for an rgb+saliency model: the PO variant) on that task's frames (its labelled
folder when there is one, as RL sees predicted saliency), writes probe_<inputs>.json beside each
encoder and prints the table. An encoder that reads the hand position worse than the same model at
random init, or whose features lose R^2 in the --store precision (float16), gets a loud warning; a
data set the probe cannot use (too few episodes) is reported and skipped, never fatal.
"""

from __future__ import annotations

from pathlib import Path

from data.shards import ShardError

BANNER = "!" * 100


def encoder_paths(run_dir: str | Path, tasks: list[str]) -> dict[str, Path]:
    """Each task's encoder as the pipeline trains it, `pretrain.multimae --task <task> --out run_dir/<task>`:
    run_dir/<task>/encoder.pt, whatever other tasks the shard root holds (rl.sac reads it by default)."""
    return {t: Path(run_dir) / t / "encoder.pt" for t in tasks}


def probe_gate(
    run_dir: str | Path,
    tasks: list[str],
    modalities: str,
    data_root: str | Path = "data/shards",
    pools: str = "mean,grid2",
    fit_frames: int = 1500,
    score_frames: int = 500,
) -> list[dict]:
    """Probe each task's encoder under `run_dir`; returns the probe results (JSON written beside each encoder)."""
    from pretrain.probe import ProbeConfig, probe

    results = []
    variants = ["rgb,saliency", "rgb"] if "saliency" in modalities else ["rgb"]
    for task, enc in encoder_paths(run_dir, tasks).items():
        labelled = Path(data_root) / f"{task}-sal"
        data = labelled if (labelled / "manifest.json").exists() else Path(data_root) / task
        for inputs in variants:
            cfg = ProbeConfig(
                encoder=str(enc),
                data=str(data),
                inputs=inputs,
                pools=pools,
                fit_frames=fit_frames,
                score_frames=score_frames,
            )
            try:
                res = probe(cfg)
            except (ValueError, ShardError, FileNotFoundError) as err:
                print(f"probe of {enc} ({inputs}) skipped: {err}", flush=True)
                continue
            results.append(res)
            if res["warnings"]:
                print(BANNER, flush=True)
                for w in res["warnings"]:
                    print(f"!!! WARNING: {w}", flush=True)
                print(BANNER, flush=True)
    return results
