# RMT Lens. Quick start: `make test` (set up, then run the tests) and `make app` (set up, then open the dashboard).
# Every target sets up .venv first through scripts/setup.sh, which returns at once when it is ready.

VENV := .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: venv test app checkpoints

venv:
	@bash scripts/setup.sh

# The CI (.ci/run) runs this same target. pytest exits non-zero on failures and also when it collects no tests.
test: venv
	$(PY) -m pytest -q $(PYTEST_ARGS)

app: venv
	$(VENV)/bin/rmt app

checkpoints: venv
	bash scripts/train_checkpoints.sh
