#!/bin/bash
# The saliency experiments reported in RESULTS.md (run niced, 1 torch thread, on the shared 2-core CPU).
set -euo pipefail
cd /work/main
export PYTHONWARNINGS=ignore MUJOCO_GL=egl
PY=".venv/bin/python"
E=runs/saliency/exp
D=runs/saliency/data
while pgrep -f "data.collect --task drawer-open-v3" >/dev/null; do sleep 5; done
for t in reach-v3 drawer-open-v3; do
  $PY -m saliency.data --data $D/$t --n 30 --out $E/ann-$t-30.npz
  $PY -m saliency.train --annotations $E/ann-$t-30.npz --out $E/$t --preset cpu --no-progress
  $PY -m saliency.evaluate --model $E/$t/best.pt --data $D/$t --n 1000 --threads 1
done
for t in reach-v3 drawer-open-v3; do
  $PY -m saliency.distill --teacher $E/$t/best.pt --data $D/$t --preset cpu --threads 1 --no-progress
  $PY -m saliency.evaluate --model $E/$t/student.pt --data $D/$t --n 1000 --threads 1
done
$PY -m saliency.study --data $D/reach-v3 --train-preset demo --out $E/study-reach-v3 --n 1000 --threads 1
$PY -m saliency.label --model $E/reach-v3/best.pt --data $D/reach-v3 --out $E/reach-v3-sal --threads 1 --no-progress
echo ALL DONE
