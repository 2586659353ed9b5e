#!/usr/bin/env bash
# The GPU rows of BENCHMARKS.md in one short run on a lent GPU node (`device` tool; ../shared/notes/gpu.md).
#
#   bench/gpu_check.sh [OUT]      # OUT: where the logs go (default runs/gpu_check)
#
# Expects the node's python3 with torch, and `.gpu/` carried beside the checkout: `make gpu-bundle` here writes it
# (pipeline.bundle: the wheels the node lacks, Meta-World cut to the four tasks' assets, libglvnd for MUJOCO_GL=egl).
# faiss does not travel: gaze on CUDA searches its keys with torch on the GPU (rl/gaze_buffer.py).
# Each step has its own time limit and writes its own log, so one failure leaves the others' numbers; the limits add
# up to 8.8 min, the bundle's setup takes ~20 s (run it with the device tool's timeout_s 600, carry [".gpu"]).
# Rows: BENCHMARKS.md "On a GPU".
set -u
out=${1:-runs/gpu_check}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
if [ -d .gpu ]; then
    sh .gpu/setup.sh
    . .gpu/env.sh
fi

step() {  # step NAME SECONDS COMMAND...: run one measurement under a time limit, its log in $out/NAME.log
    local name=$1 limit=$2
    shift 2
    local t0=$SECONDS
    timeout "$limit" "$@" >"$out/$name.log" 2>&1
    echo "== $name: exit $? after $((SECONDS - t0)) s (limit $limit s)" | tee -a "$out/summary.txt"
    tail -n 30 "$out/$name.log"
}

{ nvidia-smi -L; python3 -c 'import torch; print("torch", torch.__version__, torch.cuda.get_device_name(0))'; nproc; } \
    | tee "$out/summary.txt"
step gpu_tests 40 python3 -m pytest -q -p no:cacheprovider tests/test_rl_pack.py -k graphed
step pretrain 40 python3 bench/pretrain_speed.py --device cuda --preset paper --batch-size 512 --steps 10 --rounds 1
step pretrain_2048 30 python3 bench/pretrain_speed.py --device cuda --preset paper --batch-size 2048 --steps 5 \
    --rounds 1 --precision bf16
step saliency 40 python3 bench/saliency_speed.py --device cuda --paper --batch 256 --repeats 3
step picanet_layout 40 python3 bench/picanet_cuda_layout.py
# a pack of 24 runs spends ~40 s starting its env workers and the random steps before the timed ones
step rl_mmae_rgbs 120 python3 bench/rl_throughput.py --device cuda --hidden 1024 --packs 1,24 --encoders mmae_rgbs \
    --steps 300 --precision fp32 --no-separate
step rl_cnn_rgb 130 python3 bench/rl_throughput.py --device cuda --hidden 1024 --packs 1,24 --encoders cnn_rgb \
    --steps 300 --precision fp32 --no-separate
step rl_gaze 90 python3 bench/rl_throughput.py --device cuda --hidden 1024 --packs 1,8 --encoders gaze --steps 200 \
    --precision fp32 --no-separate
