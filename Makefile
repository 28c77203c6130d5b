# Two commands from a fresh clone; each makes the environment on first use (scripts/setup.sh) and
# does no installation work after that:
#   make sweep                                    python sweep/run.py --space ablation
#   make sweep ARGS="--space ablation --samples 3"  any run.py flags (ARGS replaces --space ablation)
#   make test                                     the test suite (what CI runs), after finding or
#                                                 fetching Fashion-MNIST (scripts/test_data.py)
# Settings: TORCH=auto|cpu|cuda|<pip requirement> (which torch; see scripts/setup.sh),
# PYTHON=python3 (makes the venv), VENV=.venv.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= auto
ARGS ?= --space ablation
export PYTHON VENV TORCH

.PHONY: sweep test setup
sweep: $(VENV)/.ready
	$(VENV)/bin/python sweep/run.py $(ARGS)

test: $(VENV)/.ready
	@$(VENV)/bin/python scripts/test_data.py
	$(VENV)/bin/python -m pytest -q tests

setup: $(VENV)/.ready

$(VENV)/.ready: pyproject.toml scripts/setup.sh
	@sh scripts/setup.sh
	@touch $@
