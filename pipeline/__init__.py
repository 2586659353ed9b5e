"""The whole pipeline in one command: `python -m pipeline --preset demo`."""
