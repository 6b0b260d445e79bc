# The two entry points: `make demo` and `make test`. Both set up .venv/ first (tools/install_env.sh).
VENV ?= .venv
PYTHON := $(VENV)/bin/python
TOY_ROOT ?= data/toy_scenes
PYTEST_ARGS ?=

.PHONY: install toy-data demo test clean

install:
	@bash tools/install_env.sh

toy-data: install
	@$(PYTHON) tools/misc/make_toy_scenes.py --out $(TOY_ROOT)

demo: toy-data
	@$(PYTHON) tools/demo.py --data-root $(TOY_ROOT)

# pytest exit code 5 means "no tests collected": report it instead of failing obscurely.
test: install
	@$(PYTHON) -m pytest tests $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests under tests/"; exit 1; fi; exit $$rc

clean:
	rm -rf work_dirs $(TOY_ROOT)
