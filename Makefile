# Two entry points: `make reproduce` (the main job) and `make test` (what CI runs).
# Everything else here is plumbing for those two.
PYTHON ?= python3
VENV ?= .venv
PROFILE ?= quick
SEEDS ?= 0-4
# JOBS: runs in parallel (one per core here); THREADS: threads of every run. Numbers depend on THREADS, never
# on JOBS (JOBS=1 and JOBS=2 give the same numbers on the same CPU): keep THREADS fixed when comparing runs.
JOBS ?= 2
THREADS ?= 1
BIN := $(VENV)/bin
STAMP := $(VENV)/.attnlib-installed

.PHONY: reproduce test browser

## reproduce: install, generate the default data, run every notebook (training ones over 5 seeds) -> runs/
reproduce: $(STAMP)
	$(BIN)/attnlib data generate egd-cxr --profile $(PROFILE)
	$(BIN)/attnlib reproduce --profile $(PROFILE) --seeds $(SEEDS) --jobs $(JOBS) --threads $(THREADS)

## test: install, unit tests (incl. the editor's browser test), then every notebook under nbval in the smoke profile
test: $(STAMP) browser
	ATTNLIB_PROFILE=smoke $(BIN)/python -m pytest tests notebooks --nbval-lax --nbval-current-env \
		--ignore=tests/engine/notebooks -p no:cacheprovider

## browser: Debian's Chromium for the editor's end-to-end test (apt-get needs root; without it the test
## is skipped with the reason, and fails under CI)
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's chromium for the browser test"; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1 || \
	    { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1; } || \
	    echo "could not install chromium: the browser test will be skipped (and fail under CI)"; \
	  else echo "chromium is missing and apt-get needs root: the browser test will be skipped (and fail under CI)"; fi; }

# (re)install when pyproject.toml changes; torch/torchvision come from pip with lower bounds only
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade --quiet pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)
