#!/bin/bash
# Table V analog with 4x the optimiser steps of commands2.sh's study (360 per size, cpu preset architecture).
set -euo pipefail
cd /work/main
export PYTHONWARNINGS=ignore MUJOCO_GL=egl
.venv/bin/python -m saliency.study --data runs/saliency/data/reach-v3 --train-preset cpu --steps 360 --out runs/saliency/exp/study-reach-v3-360 --n 500 --threads 1
echo ALL DONE
