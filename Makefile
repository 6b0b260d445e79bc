# The two entry points: `make demo` and `make test`. Both set up .venv/ first (tools/install_env.sh):
# the demo the lite flavour (mmcv-lite, nothing compiled; a full .venv serves it as it is), the
# tests the full one (mmcv with compiled ops, mmdet, mmseg: replaces mmcv-lite in the same .venv).
# MMDENSE_VENV (or VENV) moves the venv; install_env.sh gets the same one
VENV ?= $(or $(MMDENSE_VENV),.venv)
export MMDENSE_VENV := $(abspath $(VENV))
PYTHON := $(VENV)/bin/python
TOY_ROOT ?= data/toy_scenes
PYTEST_ARGS ?=
# `make demo DEVICE=cuda DEMO_ARGS="--resume-demo"`: options for tools/demo.py (--help lists them)
DEVICE ?= auto
DEMO_ARGS ?=
# tools/install_env.sh's settings are environment variables (see its header); make passes those
# given on its command line on: `make install TORCH_SPEC="torch==2.9.1 torchvision==0.24.1"`.

.PHONY: install install-lite toy-data demo test clean

install:
	@bash tools/install_env.sh full

install-lite:
	@bash tools/install_env.sh lite

toy-data: install-lite
	@$(PYTHON) tools/misc/make_toy_scenes.py --out $(TOY_ROOT)

# The demo writes its own data set (colour-free toy textures, data/toy_textures); see README.md.
demo: install-lite
	@$(PYTHON) tools/demo.py --device $(DEVICE) $(DEMO_ARGS)

# ruff (ruff.toml) first; pytest exit code 5 means "no tests collected": report it instead of
# failing obscurely.
test: install
	@$(PYTHON) -m ruff check . || { echo "ruff: fix the lines above (configuration: ruff.toml)"; exit 1; }
	@$(PYTHON) -m pytest tests $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests under tests/"; exit 1; fi; exit $$rc

clean:
	rm -rf work_dirs $(TOY_ROOT) data/toy_textures
