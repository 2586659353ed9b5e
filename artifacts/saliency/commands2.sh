#!/bin/bash
# Second half of the saliency experiments (commands.sh was stopped after starting the reach-v3 distillation
# so that the drawer-open-v3 student and the study fit the session: drawer student 20 epochs, study 90 steps).
set -euo pipefail
cd /work/main
export PYTHONWARNINGS=ignore MUJOCO_GL=egl
PY=".venv/bin/python"
E=runs/saliency/exp
D=runs/saliency/data
while pgrep -f "saliency.distill --teacher runs/saliency/exp/reach-v3" >/dev/null; do sleep 5; done
$PY -m saliency.evaluate --model $E/reach-v3/student.pt --data $D/reach-v3 --n 1000 --threads 1
$PY -m saliency.distill --teacher $E/drawer-open-v3/best.pt --data $D/drawer-open-v3 --preset cpu --epochs 20 --threads 1 --no-progress
$PY -m saliency.evaluate --model $E/drawer-open-v3/student.pt --data $D/drawer-open-v3 --n 1000 --threads 1
$PY -m saliency.study --data $D/reach-v3 --train-preset demo --steps 90 --out $E/study-reach-v3 --n 500 --threads 1
$PY -m saliency.label --model $E/reach-v3/best.pt --data $D/reach-v3 --out $E/reach-v3-sal --threads 1 --no-progress
echo ALL DONE
