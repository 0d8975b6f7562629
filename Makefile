# Two entry points: `make reproduce` (the main job) and `make test` (what CI runs).
# Everything else here is plumbing for those two.
PYTHON ?= python3
VENV ?= .venv
PROFILE ?= quick
SEEDS ?= 0-4
JOBS ?= 2
BIN := $(VENV)/bin
STAMP := $(VENV)/.attnlib-installed

.PHONY: reproduce test

## reproduce: install, generate the default data, run every notebook (training ones over 5 seeds) -> runs/
reproduce: $(STAMP)
	$(BIN)/attnlib data generate egd-cxr --profile $(PROFILE)
	$(BIN)/attnlib reproduce --profile $(PROFILE) --seeds $(SEEDS) --jobs $(JOBS)

## test: install, unit tests, then every notebook under nbval in the smoke profile
test: $(STAMP)
	ATTNLIB_PROFILE=smoke $(BIN)/python -m pytest tests notebooks --nbval-lax --nbval-current-env \
		--ignore=tests/notebooks -p no:cacheprovider

# (re)install when pyproject.toml changes; torch/torchvision come from pip with lower bounds only
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade --quiet pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)
