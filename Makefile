# The two commands of the README: `make demo` and `make test`. Both set up everything they need.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export MUJOCO_GL ?= egl

.PHONY: help demo demo-gif test venv sysdeps bench cpu-slice slice-data slice-encoder-rgbs precision-check precision-check-sac slice-encoders slice-probes ablation-features \
	ablation-features-raw ablation-features-standardized gaze-triplets ablation-gaze-discount ablation-gaze-undiscounted \
	ablation-gaze-discounted cpu-table cpu-table-status cpu-table-report background background-stop gpu-bundle check-floors clean-venv

# Long experiments keep their folders outside the checkout: a new session's work tree is laid anew, and the
# git-ignored folders inside it (runs/) are gone; a machine handed on as it was keeps $(HOME).
RUNS_HOME ?= $(HOME)/visarl-runs

# every target with what it does (the `## ...` at the end of its line)
help:  ## this list
	@awk -F ':.*## ' '/^[a-z][a-z0-9-]*:.*## / {printf "  %-24s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

venv: $(STAMP)  ## install the project and its pinned dependencies into .venv

# torch/torchvision first, at the exact pair of constraints.txt (pyproject.toml declares only floors; see README).
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt torch torchvision
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

# The floors of pyproject.toml installed together, as `make venv` installs (torch/torchvision first, then the
# project, under `-c`), each `>=X` pinned `==X` (.ci/floors.py), in a fresh venv; then the tests that touch
# the most dependencies and the micro pipeline (2026-12-03, 2 shared cores: ~5 min install, 3 min tests,
# 17.5 min pipeline).
FLOORS_VENV ?= .venv-floors
FLOORS_TESTS := tests/test_hub.py tests/test_rl_evaluate.py tests/test_common_progress.py \
	tests/test_pipeline_report.py tests/test_pretrain_export.py tests/test_data_collect.py tests/test_data_shards_wds.py
check-floors: sysdeps  ## the lowest versions pyproject.toml allows, in .venv-floors: dependency-heavy tests, micro pipeline
	rm -rf $(FLOORS_VENV)
	$(PYTHON) -m venv $(FLOORS_VENV)
	$(FLOORS_VENV)/bin/python -m pip install -q --upgrade pip
	$(PYTHON) .ci/floors.py > $(FLOORS_VENV)/floors.txt
	$(FLOORS_VENV)/bin/python -m pip install -q -c $(FLOORS_VENV)/floors.txt torch torchvision
	$(FLOORS_VENV)/bin/python -m pip install -q -c $(FLOORS_VENV)/floors.txt -e . pytest
	$(FLOORS_VENV)/bin/python -m pip check
	$(FLOORS_VENV)/bin/python -m pytest -q -x -p no:cacheprovider $(FLOORS_TESTS)
	$(FLOORS_VENV)/bin/python -m pipeline --preset micro --root $(FLOORS_VENV)/micro

# System packages the tests need: Debian's Chromium for the browser tests, EGL/OSMesa for MuJoCo.
sysdeps:  ## the Debian packages the tests need (Chromium, EGL/OSMesa)
	@if ! command -v chromium >/dev/null 2>&1 || ! ldconfig -p | grep -q libEGL.so.1; then \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && \
		$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			chromium libegl1 libegl-mesa0 libgl1 libosmesa6 >/dev/null; \
	fi

demo: venv  ## the whole pipeline at the demo preset on reach-v3: runs/, then its report
	$(PY) -m pipeline --preset demo

# The README's "Watch a trained agent" GIF, drawn again from the cnn_rgb run `make demo` trained (runs it first if
# needed): rl.evaluate.clip, as the pipeline draws each run's evaluate/clip.gif (its first evaluation episode, the
# first 100 steps, every 2nd, 3x, 15 fps), written atomically over docs/demo/
DEMO_GIF_RUN ?= runs/sac/reach-v3/cnn_rgb/seed0
demo-gif: demo  ## the README's GIF, drawn again from the demo's cnn_rgb run
	$(PY) -c "from rl.evaluate import clip; print(clip('$(DEMO_GIF_RUN)', 'docs/demo/watch_reach-v3_cnn_rgb.gif'))"

# lint first (ruff: pyflakes, pycodestyle, import order; the formatter's layout), then the suite on TEST_WORKERS
# processes (pytest-xdist), whole files to a worker: a file's module fixtures are built once, and the Ray tests share
# one file. tests/conftest.py sends the longest files first, then the others holding slow tests, and sets
# OMP_NUM_THREADS=1 in each worker (a stage's own --threads still applies), so 2 workers fill 2 cores.
# pytest-xdist >= 3.8: --no-loadscope-reorder. Fresh-clone CI runs on 2 cores beside the niced CPU table (not side by
# side: three runs on 2026-12-06): 1,234 s of pytest on 2 workers, LONGEST first (1,288 s before), 1,581 s on one
# (the longest files run 2-2.5x slower beside another worker: their stages use both cores). On 2026-12-08, with the
# table's phases B and C end to end added (671 s of it): 1,052 s of pytest, 19.6 min in all with the install.
TEST_WORKERS ?= 2
test: venv sysdeps  ## ruff, then the test suite on TEST_WORKERS processes (the README's test command)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

# RESULTS.md "Table I rows at a CPU budget": state and the frozen-encoder rows, 3 seeds x 100k steps on
# reach-v3, packed, with MultiMAEs pretrained here (cpu preset) on frames labelled by the committed
# saliency student. Many hours on 2 cores: run it again to continue (every step skips or resumes).
# Two packs at a time (two cores). Each evaluation spawns 15 env workers: at ~0.8 GB each (when they
# still imported the trainer's torch) three packs whose evaluations overlapped were OOM-killed on this
# 24 GiB machine; workers now hold ~0.3 GB (pipeline.report shows runs in progress).
SLICE ?= $(RUNS_HOME)/cpu_slice
SLICE_PY := $(abspath $(PY))
# rows to train; e.g. `make cpu-slice SLICE_ENCODERS=mmae_rgbs_grid2` adds a row beside the finished ones
SLICE_ENCODERS ?= state,mmae_rgb,mmae_rgbs_po,mmae_rgbs
SLICE_SAC := --eval-every 25000 --eval-episodes 20 --eval-envs 5 --checkpoint-every 10000
# probe of model $(1) with inputs $(2) ('': all it was trained on), skipped once its probe_$(3).json exists
slice_probe = test -f runs/mmae/$(1)/reach-v3/probe_$(3).json || $(SLICE_PY) -m pretrain.probe \
	--encoder runs/mmae/$(1)/reach-v3/encoder.pt --data shards/reach-v3-sal --inputs '$(2)' --threads 2
cpu-slice: slice-probes  ## RESULTS.md's 'Table I rows at a CPU budget': reach-v3, 3 seeds x 100k steps (hours)
	cd $(SLICE) && $(SLICE_PY) -m rl.grid --tasks reach-v3 --encoders $(SLICE_ENCODERS) --seeds 0,1,2 \
		--steps 100000 --sac-preset cpu --pack 3 --parallel 2 --out runs/sac --extra "$(SLICE_SAC)"
	$(PY) -m pipeline.keep --source $(SLICE)/runs/sac --out results/cpu-slice
	$(PY) -m pipeline.report results/cpu-slice --out $(SLICE)/report

# the slice's frames and labels, then its rgb+saliency MultiMAE (ViSaRL's encoder: all the feature ablation
# needs), then the rgb-only one (each step skips or resumes)
slice-data: venv  ## the slice's frames, labelled by the committed student
	mkdir -p $(SLICE)/runs/saliency/reach-v3
	cp -n artifacts/saliency/reach-v3/student.pt $(SLICE)/runs/saliency/reach-v3/
	cd $(SLICE) && $(SLICE_PY) -m data.collect --task reach-v3 --frames 8000 --workers 2 --shard-size 1000 --out shards/reach-v3
	cd $(SLICE) && $(SLICE_PY) -m saliency.label --model runs/saliency/reach-v3/student.pt --data shards/reach-v3 --out shards/reach-v3-sal

slice-encoder-rgbs: slice-data  ## the slice's rgb+saliency MultiMAE (cpu preset)
	cd $(SLICE) && $(SLICE_PY) -m pretrain.multimae --data shards/reach-v3-sal --preset cpu --modalities rgb,saliency --threads 1 --resume auto --out runs/mmae/rgbs/reach-v3

slice-encoders: slice-encoder-rgbs  ## the slice's rgb-only MultiMAE too
	cd $(SLICE) && $(SLICE_PY) -m pretrain.multimae --data shards/reach-v3-sal --preset cpu --modalities rgb --threads 1 --resume auto --out runs/mmae/rgb/reach-v3

# their probes (the ablations below need only the encoders)
slice-probes: slice-encoders  ## the probes of the slice's MultiMAEs
	cd $(SLICE) && $(call slice_probe,rgbs,,rgb+saliency)
	cd $(SLICE) && $(call slice_probe,rgbs,rgb,rgb)
	cd $(SLICE) && $(call slice_probe,rgb,,rgb)

# Issue #23's learning checks (bf16 must not change what is learned), for a CPU with bf16 units or a GPU: the
# slice's MultiMAE (cpu preset, rgb+saliency; seeds PREC_SEEDS, for the seed-to-seed spread beside the precision's
# effect) and the saliency student (cpu preset, the committed PiCANet as teacher, seed 0), each trained in fp32 and
# in bf16 from the same data, probed and scored in fp32; rerun, a finished step reloads its data and exits (the
# probe and evaluation are skipped), an unfinished one resumes. Keeps results/precision-check/ (summary.json: probe
# R^2 within 0.02, max-F within 0.01) and draws docs/precision_check_losses.png. ~1 h on the 2-core Zen 4 alone
# (per seed and precision: pretraining 7-11 min, probe ~3 min; each student ~5 min), ~2 h beside the background jobs.
PREC_RUNS := runs/precision
PREC_SEEDS ?= 0 1
# the run folder of MultiMAE at precision $(1), seed $(2) (seed 0: mmae-<p>, the layout pipeline.precision_check reads)
prec_mmae = $(PREC_RUNS)/mmae-$(1)$$( [ $(2) = 0 ] || echo -seed$(2) )
precision-check: slice-data  ## issue #23: MultiMAE and student trained in fp32 and bf16, probed and compared
	cd $(SLICE) && for p in fp32 bf16; do for s in $(PREC_SEEDS); do out=$(call prec_mmae,$$p,$$s) && \
		$(SLICE_PY) -m pretrain.multimae --data shards/reach-v3-sal --preset cpu --modalities rgb,saliency --threads 2 \
			--precision $$p --seed $$s --resume auto --out $$out && \
		{ test -f $$out/probe_rgb+saliency.json || $(SLICE_PY) -m pretrain.probe --threads 2 \
			--encoder $$out/encoder.pt --data shards/reach-v3-sal --precision fp32; } || exit 1; done; done
	cd $(SLICE) && for p in fp32 bf16; do \
		$(SLICE_PY) -m saliency.distill --teacher $(CURDIR)/artifacts/saliency/reach-v3/best.pt --data shards/reach-v3 \
			--preset cpu --precision $$p --resume auto --no-progress --out $(PREC_RUNS)/student-$$p/student.pt && \
		{ test -f $(PREC_RUNS)/student-$$p/eval/metrics.json || $(SLICE_PY) -m saliency.evaluate --preset cpu \
			--model $(PREC_RUNS)/student-$$p/student.pt --data shards/reach-v3 --precision fp32 \
			--out $(PREC_RUNS)/student-$$p/eval; } || exit 1; done
	$(PY) -m pipeline.precision_check $(SLICE)/$(PREC_RUNS) --out results/precision-check

# Issue #23's SAC half: state SAC at the paper's hidden 1024 in fp32 and in bf16, the same 3 seeds x 100k steps on
# reach-v3 (the slice's SAC settings otherwise); resumable, the two precisions side by side, a pack of 3 on one
# core each: ~8.5 core-hours on the Zen 4 (its progress bars side by side beside the CPU table, 2026-12-05: a pack
# of 3 steps 16 env-steps/s in fp32, 26 in bf16, i.e. ~62 / ~38 ms per step per run; the Xeon's were 59 / 40).
# The report splits the state row by precision and compares bf16 against fp32.
PREC_SAC_ARMS := fp32 bf16
precision-check-sac: venv  ## issue #23: state SAC at hidden 1024 in fp32 and in bf16, 3 seeds x 100k
	mkdir -p $(SLICE)
	$(MAKE) -j2 $(addprefix precision-check-sac-,$(PREC_SAC_ARMS))
	$(PY) -m pipeline.keep --source $(SLICE)/runs/precision-check-sac --out results/precision-check-sac
	$(PY) -m pipeline.report results/precision-check-sac --out $(SLICE)/report-precision-check-sac

$(addprefix precision-check-sac-,$(PREC_SAC_ARMS)): precision-check-sac-%:
	cd $(SLICE) && $(SLICE_PY) -m rl.grid --tasks reach-v3 --encoders state --seeds 0,1,2 --steps 100000 \
		--sac-preset cpu --pack 3 --parallel 1 --out runs/precision-check-sac/$* \
		--extra "$(SLICE_SAC) --hidden-dim 1024 --precision $*"

# Issue #24's measurement: ViSaRL's frozen features raw (the paper) vs standardised, at the slice's budget
# (reach-v3, 3 seeds x 100k steps, the slice's encoders). Resumable like cpu-slice. The two settings run side by
# side, a pack of 3 on one torch thread each (one core each): ~5 h on 2 cores with nothing else running.
# Like every experiment target it ends by keeping the raw results under results/ (commit them) and reporting
# from there, so what RESULTS.md quotes regenerates from the repository (results/README.md).
FEATURE_ARMS := raw standardized
ablation-features: slice-encoder-rgbs  ## issue #24: ViSaRL's frozen features raw vs standardised, 3 seeds x 100k
	$(MAKE) -j2 $(addprefix ablation-features-,$(FEATURE_ARMS))
	$(PY) -m pipeline.keep --source $(SLICE)/runs/ablation-features --out results/ablation-features
	$(PY) -m pipeline.report results/ablation-features --out $(SLICE)/report-ablation-features

$(addprefix ablation-features-,$(FEATURE_ARMS)): ablation-features-%:
	cd $(SLICE) && $(SLICE_PY) -m rl.grid --tasks reach-v3 --encoders mmae_rgbs --seeds 0,1,2 --steps 100000 \
		--sac-preset cpu --pack 3 --parallel 1 --out runs/ablation-features/$* --extra "$(SLICE_SAC) --mmae-features $*"

# Issue #24 item 5, part 1: how often return-guided triplets pair success against failure, undiscounted
# (the paper) vs discounted 0.99 return-to-go, on 40 collected reach-v3 episodes (~15 min to collect, ~2 min
# per seed to mine); writes results/gaze-discount/reach-v3/ (README section 6, RESULTS.md).
GAZE_FRAMES ?= $(RUNS_HOME)/gaze_disc/reach-v3
gaze-triplets: venv  ## how often return-guided triplets pair success with failure, undiscounted vs 0.99
	$(PY) -m data.collect --task reach-v3 --frames 20040 --episode-steps 500 --shard-size 2505 --out $(GAZE_FRAMES)
	for s in 0 1 2; do $(PY) -m rl.gaze_triplets --data $(GAZE_FRAMES) --seed $$s \
		--out results/gaze-discount/reach-v3/triplets$$( [ $$s = 0 ] || echo _seed$$s ).json || exit 1; done

# Part 2: gaze RL with either return-to-go at a small budget (reach-v3, 3 seeds x 20k steps each, the slice's
# SAC settings); resumable. Measured 2026-12-05 on the Zen 4 in bf16: ~9 h of pack time per discount (532 / 536 min,
# 0.63 / 0.62 env-steps/s per run, mostly beside the CPU table), side by side on the two cores (1 torch thread
# each). Decided: RESULTS.md.
GAZE_ARMS := undiscounted discounted
ablation-gaze-discount: venv  ## gaze RL with undiscounted vs discounted return-to-go, 3 seeds x 20k
	mkdir -p $(SLICE)
	$(MAKE) -j2 $(addprefix ablation-gaze-,$(GAZE_ARMS))
	$(PY) -m pipeline.keep --source $(SLICE)/runs/ablation-gaze-discount --out results/ablation-gaze-discount
	$(PY) -m pipeline.report results/ablation-gaze-discount --out $(SLICE)/report-ablation-gaze-discount

# the discount of each arm: the paper's undiscounted return-to-go, or the SAC discount
ablation-gaze-undiscounted: GAZE_DISCOUNT := 1.0
ablation-gaze-discounted: GAZE_DISCOUNT := 0.99
$(addprefix ablation-gaze-,$(GAZE_ARMS)): ablation-gaze-%:
	cd $(SLICE) && $(SLICE_PY) -m rl.grid --tasks reach-v3 --encoders gaze --seeds 0,1,2 --steps 20000 \
		--sac-preset cpu --pack 3 --parallel 1 --out runs/ablation-gaze-discount/$* \
		--extra "$(SLICE_SAC) --eval-every 5000 --gaze-return-discount $(GAZE_DISCOUNT)"

# The four-task Table I experiment on this CPU (issue #30; pipeline/table/, README "The CPU table"): one
# resumable command, safe to rerun at the start of every session. It starts `python -m pipeline.table` in the
# background (nice 10; output appended to $(TABLE)/table.log), or says it already runs, and commits nothing:
# each finished run, then each finished (task, row), is kept under results/cpu-table/ and the log prints the git line.
TABLE ?= $(RUNS_HOME)/cpu_table
# A, B, C, D, E or all; e.g. `make cpu-table TABLE_PHASE=A`
TABLE_PHASE ?= all
# more pipeline.table flags, e.g. TABLE_FLAGS="--results results/cpu-table-2"; the design settings a root recorded
# on its first run are its own and need no flags (a contradicting one is refused)
TABLE_FLAGS ?=
cpu-table: venv sysdeps  ## start the four-task CPU table in the background (issue #30; resumable)
	$(PY) -m pipeline.table --root $(TABLE) --phase $(TABLE_PHASE) $(TABLE_FLAGS) --background

# Every long experiment here, detached (pipeline.background: own session, niced, its log in <its folder>/<name>.log):
# run it at the start of each session. What still runs is left alone; the rest resumes from its checkpoints.
# Today that is the CPU table (nice 10: months of work); the finished checks rerun by their own targets
# (`make precision-check-sac`, `make ablation-features`, `make ablation-gaze-discount`). Another job joins it as
# `$(PY) -m pipeline.background --name NAME --nice N --logs $(RUNS_HOME) -- COMMAND` (a lower N: a larger share).
background: sysdeps cpu-table  ## every long experiment, detached (today the CPU table): run it as a session starts

# stop every job `make background` started, each at a checkpoint (SIGTERM to its process group, then wait for it
# to exit): run it before a session ends; a hard kill loses what each did since its last checkpoint (about 20 minutes)
background-stop: venv  ## stop what `make background` started, each at a checkpoint
	$(PY) -m pipeline.background --stop --logs $(RUNS_HOME),$(TABLE)

# where it stands: per task the stage reached and the step budget, per row seeds done / planned and steps,
# the running step's progress, rate and time left at that rate
cpu-table-status: venv  ## where the CPU table stands, and a forecast of what is left
	$(PY) -m pipeline.table --root $(TABLE) --phase $(TABLE_PHASE) $(TABLE_FLAGS) --status

# the CPU table's report of the kept results (REPORT.md and its pictures in $(TABLE_REPORT)): each (task, row) with
# fewer seeds kept than its waves plan reads 'n of N', and the report marks its verdicts interim
TABLE_REPORT ?= $(TABLE)/report
cpu-table-report: venv  ## the CPU table's report from its kept results (TABLE_REPORT)
	$(PY) -m pipeline.table --root $(TABLE) --phase $(TABLE_PHASE) $(TABLE_FLAGS) --report $(TABLE_REPORT)

# .gpu/: what a lent GPU node lacks, small enough to travel (README, "On a lent GPU node")
gpu-bundle: venv  ## .gpu/: what a lent GPU node lacks, small enough to travel
	$(PY) -m pipeline.bundle

bench: venv  ## the data-collection benchmark (bench/collection.py)
	$(PY) bench/collection.py

clean-venv:  ## remove .venv
	rm -rf $(VENV)
