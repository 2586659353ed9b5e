"""Synthetic CPU-table roots for the tests of pipeline.table: configs, finished runs and pretrainings, prepared
tasks."""

import contextlib
import json
import subprocess
import sys
from pathlib import Path

from pipeline.table.commands import PROBES
from pipeline.table.config import STATE_FILE, TableConfig, flag_value
from pipeline.table.folder import Folder
from pipeline.table.plan import Planner
from rl import outcome

ROWS = ["state", "mmae_rgb", "mmae_rgbs_po", "mmae_rgbs"]


def evals(*pairs):
    """eval.csv rows as csv.DictReader gives them (strings)."""
    return [{"step": str(step), "success_rate": str(success)} for step, success in pairs]


def config(tmp_path: Path, **kw) -> TableConfig:
    """A table on folders under tmp_path; one run per pack unless `pack` is given (--pack 0 sizes packs at this CPU's
    rates: test_pipeline_table_status.py's `test_pack_0_sizes_each_grids_packs_by_the_forecast`)."""
    return TableConfig(
        root=str(tmp_path / "root"),
        results=str(tmp_path / "results"),
        carry=str(tmp_path / "carry"),
        **{"pack": 1, **kw},
    ).validate()


def folders(tmp_path: Path) -> list[str]:
    """The flags of `config`'s folders."""
    return [
        "--root",
        str(tmp_path / "root"),
        "--results",
        str(tmp_path / "results"),
        "--carry",
        str(tmp_path / "carry"),
    ]


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def finish_run(run_dir: Path, steps: int, success: float = 0.5, task: str = "reach-v3") -> None:
    """A SAC run folder as rl.workspace leaves it: config, eval.csv, summary at `steps`."""
    encoder, seed = run_dir.parent.name, int(run_dir.name.removeprefix("seed"))
    write(run_dir / "config.json", json.dumps({"encoder": encoder, "seed": seed, "task": task}))
    write(
        run_dir / "eval.csv",
        "step,wall_s,success_rate\n" + "".join(f"{s},1.0,{success}\n" for s in range(25_000, steps + 1, 25_000)),
    )
    write(
        run_dir / "summary.json",
        json.dumps(
            {
                "task": task,
                "encoder": encoder,
                "seed": seed,
                "steps": steps,
                "success_rate": success,
                "eval_episodes": 50,
            }
        ),
    )


def finish_pretraining(run: Path, step: int = 1_000, total: int = 1_000) -> None:
    """The logs of a pretrain.multimae run at `step` of `total` steps (its encoder.pt is the caller's)."""
    write(run / "config.json", json.dumps({"batch_size": 512, "epochs": 22}))
    write(run / "data.json", json.dumps({"train_frames": 47_510, "total_steps": total}))
    write(run / "train.csv", f"step,wall_s,img_per_s\n{step},100,51.2\n")


def prepared(cfg: TableConfig, task: str) -> None:
    """Every preparation step of `task` done: outputs there and recorded in table.json."""
    root = Path(cfg.root)
    write(root / f"shards/{task}/manifest.json", json.dumps({"status": "complete", "shards": []}))
    write(
        root / f"shards/{task}-sal/manifest.json",
        json.dumps({"status": "complete", "shards": [], "labelled_from": task}),
    )
    for rel in (
        f"annotations/{task}/oracle/a.json",
        f"annotations/{task}.npz",
        f"runs/saliency/{task}/best.pt",
        f"runs/saliency/{task}/student.pt",
        f"runs/saliency/{task}/eval/metrics.json",
        f"runs/mmae/rgbs/{task}/encoder.pt",
        f"runs/mmae/rgb/{task}/encoder.pt",
    ):
        write(root / rel, "x")
    for name in ("rgbs", "rgb"):
        finish_pretraining(root / f"runs/mmae/{name}/{task}")
    for name, _, label in PROBES:
        write(root / f"runs/mmae/{name}/{task}/probe_{label}.json", json.dumps({"rows": [], "model": name}))
    state_path = root / STATE_FILE
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    done = state.setdefault("done", {})
    for step in Planner(Folder(cfg)).plan():
        if step.key.startswith(f"{task}: ") and step.marker and not any(w in step.key for w in ("keep", "carry")):
            done[step.key] = {"seconds": 1.0}
    write(state_path, json.dumps(state))


def modules(steps) -> list[str]:
    return [s.argv[1] if s.argv else "(in process)" for s in steps]


def keep_in_process(argv, cwd, **kw):
    """subprocess.run for `python -m pipeline.keep ...` in this process (a new interpreter takes ~15 s to import it),
    and for the random policy's `python -m rl.evaluate --policy random ...`: its report file, written as rl.evaluate
    names it (tests/test_rl_evaluate.py plays the real one; 50 episodes of 500 steps take a minute)."""
    from pipeline.keep import main as keep_main

    if argv[:3] == [sys.executable, "-m", "rl.evaluate"]:
        seed, episodes = int(flag_value(argv, "--seed")), int(flag_value(argv, "--episodes"))
        task = flag_value(argv, "--task")
        report = {"policy": "random", "task": task, "seed": seed, "success_rate": 0.0, "return_mean": 500.0}
        report["episodes"] = [{"episode": k, "success": 0.0, "return": 500.0} for k in range(episodes)]
        write(Path(cwd) / flag_value(argv, "--out") / outcome.random_policy_file(seed, episodes), json.dumps(report))
        return subprocess.CompletedProcess(argv, 0)
    assert argv[:3] == [sys.executable, "-m", "pipeline.keep"], argv
    with contextlib.chdir(cwd):
        keep_main(argv[3:])
    return subprocess.CompletedProcess(argv, 0)


def fail_commands(argv, cwd, **kw):
    """subprocess.run that fails every command: a run stops at its first step that is not in process."""
    return subprocess.CompletedProcess(argv, 1)
