# The two commands of the README: `make demo` and `make test`. Both set up everything they need.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export MUJOCO_GL ?= egl

.PHONY: demo test venv sysdeps bench clean-venv

venv: $(STAMP)

# torch/torchvision first and pinned: pip takes them from this machine's disk (see README).
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

# System packages the tests need: Debian's Chromium for the browser tests, EGL/OSMesa for MuJoCo.
sysdeps:
	@if ! command -v chromium >/dev/null 2>&1 || ! ldconfig -p | grep -q libEGL.so.1; then \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && \
		$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			chromium libegl1 libegl-mesa0 libgl1 libosmesa6 >/dev/null; \
	fi

demo: venv
	$(PY) -m pipeline --preset demo

test: venv sysdeps
	$(PY) -m pytest -q

bench: venv
	$(PY) bench/collection.py

clean-venv:
	rm -rf $(VENV)
