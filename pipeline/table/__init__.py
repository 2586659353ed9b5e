"""`python -m pipeline.table [--phase A|B|C|D|E|all] [--root ~/visarl-runs/cpu_table] [--dry-run | --status | --report DIR | --background]`:
the four-task Table I experiment on a CPU (issue #30), one resumable command.

Phases, in this order (`--phase all`), each ending in a table kept under `results/cpu-table/`:

- **A** reach-v3: frames, oracle annotations, PiCANet + student, labels, the rgb+saliency MultiMAE; mmae_rgbs_po
  and mmae_rgbs x 3 seeds (they need no rgb-only encoder: on the Zen 3's rates at hidden 1024 the PO-vs-ViSaRL
  answer at 3 seeds comes ~8 h after that MultiMAE, not ~27 h after it behind the rgb one, nor ~11 h with state's
  seeds beside them; ~4.6 h at 256);
  the rgb MultiMAE and the three probes; mmae_rgb and state x 3; then every row to 10 seeds at 100k steps. Each
  grid starts a seed's runs longest first (`longest_first`).
- **B** drawer-open-v3, faucet-open-v3, door-open-v3: the state pilot (1 seed, the table's SAC
  settings) in `--pilot-chunk` steps until the budget rule (`choose_budget`) decides each task's step
  budget; their frames, saliency, MultiMAEs and probes; then the mmae_rgbs pilot to that budget (evaluated as the
  table's runs are: the budget rule reads only the state pilot).
- **C** the three at their budgets, 3 seeds per row (a four-task aggregate exists from then on), then 5.
- **D** cnn_rgb, cnn_rgbs and gaze on faucet-open-v3 and door-open-v3, 3 seeds; then mmae_rgbs_grid2
  (ViSaRL read through the probe's better pool) on the same tasks and seeds.
- **E** more seeds of the four rows on the three tasks, up to `--max-seeds`, while compute remains.

Every step is a project command (data.collect, annotate_app.oracle/export, saliency.train/distill/
evaluate/label, pretrain.multimae --resume auto, pretrain.probe, rl.grid, pipeline.keep) run with the
root as working folder, so the stage's default paths hold (runs/saliency/<task>/student.pt,
runs/mmae/<rgbs|rgb>/<task>/encoder.pt). A step is skipped when its outputs exist (a complete shard
manifest, run summaries at the asked steps, a pretraining's encoder.pt and train.csv at its last step, a probe
file, the kept files) and, for training and keep
steps, this command recorded it finished in `<root>/table.json`; otherwise it runs, and the resumable ones
continue where they stopped. The plan is derived again after every step, so the command is safe to
rerun at the start of every session. A table run goes to its budget in one grid call, its evaluations with
`--eval-episodes`, its last one with `--final-eval-episodes` (rl.sac's option of that name).

Each run's raw results are kept as soon as it finishes (a pack's runs end together), while its grid goes on
(`keeping_finished`). Each grid's pack size (`--pack 0`, `best_pack`) is the one whose forecast ends the grid soonest
at this CPU's measured pack gains, the smallest within 5 % of that, so that runs are kept sooner where packing gains
little. After each (task,
row) finishes its seeds, `pipeline.keep` copies its raw results to
`results/cpu-table/<task>/<row>/` (pilots: `results/cpu-table-pilot/`, so the report never mixes
them into the table; probes: `results/cpu-table/mmae/`); committing is left to the person: the
command prints the git line. As soon as each of a task's MultiMAE pretrainings ends, its frozen encoder (with its
pretraining logs; the first with the saliency student that labelled its frames) is copied to `--carry`
(`artifacts/cpu-table/`), committed beside the results: a new root (a new machine) takes the settings in
`results/cpu-table/settings.json`, copies in the kept runs and the carried models, and goes on with what is left
instead of annotating, training the saliency models and pretraining those encoders again.
`--status` prints where each task and row stands, how far the running step has got and a forecast of the open
steps (`forecast_text`); `--background` starts the run detached and niced (pipeline.background) with its output
appended to `<root>/table.log`; when one started so still runs it says so and starts nothing, and it is refused
while a copy started otherwise holds the root.

Modules, each importing only those above it (`carry` names `Folder` in type hints only):

- `config`: `TableConfig`, the rows and phases, the FROZEN settings a root records, where runs go;
- `budget`: the budget rule (`choose_budget`);
- `runlogs`: reading what the runs wrote (CSV logs, a SAC run's or a pretraining's steps and rate);
- `carry`: what the committed folders keep of a root (carried models, kept runs restored into a new root);
- `folder`: what a root holds (`Folder`: table.json, settings, budgets, run folders);
- `commands`: the steps (`Step`) and the project commands they run;
- `forecast`: the wall-time estimate and the forecast of the open steps from measured rates (`RATES`, `best_pack`);
- `plan`: the steps of the selected phases for what the root holds (`Planner`), a task's kept preparation;
- `status`, `report`: `--status` and `--report`;
- `runner`: the step loop, keeping finished runs while a grid goes on, `--dry-run`, `--background` and `main`.
"""
