# Hybrid DR: the commands a user and CI run. Everything installs into ./.venv.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: all demo test proto clean check-python

all: test

check-python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python >= 3.11 is needed (set PYTHON=...)")'

$(STAMP): pyproject.toml | check-python
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# Protect a 1 GiB sample disk, change it twice, restore first and latest points, compare.
demo: $(STAMP)
	$(PY) -m tools.demo

# The whole suite, real daemons included.
test: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

# Regenerate dr_common/proto from proto/ (commit the result; a test checks it is fresh).
proto: $(STAMP)
	$(PY) tools/genproto.py

clean:
	rm -rf $(VENV) demo-work .pytest_cache *.egg-info
