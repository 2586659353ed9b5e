"""`python -m pipeline.report results/<experiment> [more roots] [--out runs/report]`: REPORT.md and its pictures.

Reads only what runs leave on disk: every `summary.json` below the given roots (one per finished
SAC run, beside its `eval.csv`), the `eval.csv` of runs still going (a `config.json` and no
`summary.json` yet), plus pictures the earlier stages write (saliency examples, MultiMAE
reconstructions, gaze overlays), so it works on a run tree (`runs/sac`), on the raw results
committed under `results/<experiment>` (`pipeline.keep` copies them there), and on any mix of
finished and running grids.
Sections: the paper's Table I analog with the paper's numbers beside ours (final evaluation with a
Student-t interval over seeds, and the success over the last 3 evaluations), every seed's value per task,
rliable's aggregates across tasks and seeds (IQM and mean with stratified bootstrap CIs, performance
profiles), the papers' orderings (across tasks the mean per-task gap with a stratified Welch t-interval,
which decides, beside rliable's probability of improvement; Welch t-intervals per task; and how many seeds
the observed spread needs to resolve the paper's gap), settings against their defaults, diverged runs
(counted as success 0 from where they diverged), the runs in progress,
learning curves per task (the paper's Fig. 3, t-interval bands), the linear probe of every frozen
MultiMAE encoder, pictures, and a footer with the budget, seed, device and wall time of every run.
Intervals over seeds are Student-t, never a percentile bootstrap (at 3 seeds that is [min, max],
~74 % coverage); bootstrap intervals appear only in rliable's aggregates and probabilities of improvement, with
their simulated coverage. `--planned-seeds` marks cells short of their planned seeds ('n of N', interim).

Modules, each importing only those above it:

- `config`: `ReportConfig` (the command's settings) and `PlannedSeeds` (--planned-seeds);
- `paper`: the paper's Table I, its averages and the orderings the papers claim;
- `runs`: reading the runs (finished and running), their rows, curves, last evaluations and score matrices;
- `cells`: table cells (Student-t and bootstrap intervals, seed counts against the plan, R^2, plurals, durations);
- `figures`: performance profiles, learning curves, the earlier stages' pictures;
- `tables`: the per-task tables (Table I, seeds, diverged and running runs, curves, probes, preparation, footer,
  clips);
- `claims`: the statistics across tasks (aggregates, the papers' orderings, seeds to resolve them, variant rows);
- `writer`: REPORT.md from its sections (`statistics_sections`, `write_report`) and `main`.
"""
