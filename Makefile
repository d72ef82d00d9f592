# Hybrid DR: the commands a user and CI run. Everything installs into ./.venv.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# npm tools the tests use (buf, Azurite); pinned in package-lock.json.
NPM_STAMP := node_modules/.installed
# Debian packages (qemu-utils, libnbd) and libnbd's module linked into the venv.
SYS_STAMP := $(VENV)/.system-deps

.PHONY: all demo test bench bench-control bench-vsphere bench-azure proto clean check-python

all: test

check-python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python >= 3.11 is needed (set PYTHON=...)")'

$(STAMP): pyproject.toml | check-python
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

$(SYS_STAMP): $(STAMP) tools/install-system-deps.sh
	bash tools/install-system-deps.sh $(VENV)
	touch $(SYS_STAMP)

$(NPM_STAMP): package.json package-lock.json
	npm install --no-audit --no-fund --loglevel=error
	touch $(NPM_STAMP)

# Protect a 1 GiB sample disk, change it twice, restore first and latest points, compare.
demo: $(STAMP)
	$(PY) -m tools.demo

# The whole suite, real daemons included.
test: $(STAMP) $(SYS_STAMP) $(NPM_STAMP)
	$(PY) -m pytest -q --durations=25 $(PYTEST_ARGS)

# Benchmarks P1-P6, P1-NBD and P2-CBT against qemu-img, restic and nbdcopy (installed via
# apt-get when missing; the kvm source's qemu-utils and libnbd via $(SYS_STAMP)), P9
# (paired nodes over an emulated WAN) and P10 (a recovery plan's RTO, split and
# forecast, on a kvm site of tiny TCG guests and on moto EC2):
# prints a table, writes bench/results.json and docs/BENCHMARKS.md. Quick check:
# make bench BENCH_ARGS="--smoke"; one scenario: BENCH_ARGS="--scenarios P10 --merge"
bench: $(STAMP) $(SYS_STAMP)
	$(PY) -m bench $(BENCH_ARGS)

# Control-plane load: one dr-control, 2,000 disks, 50 simulated nodes; latency of the
# node and operator calls, scheduler pass duration, peak RSS; on SQLite, then on a local
# PostgreSQL started for the run. SQLite alone: CONTROL_BENCH_ARGS=; another database:
# make bench-control CONTROL_BENCH_ARGS="--database-url postgresql+asyncpg://..."
CONTROL_BENCH_ARGS ?= --postgres
bench-control: $(STAMP) $(SYS_STAMP)
	$(PY) -m bench.control_load $(CONTROL_BENCH_ARGS)

# The vsphere source against the vSphere peer: bytes read per cycle against what was
# allocated or changed, cycle times, read throughput against the peer's own ceiling.
bench-vsphere: $(STAMP) $(SYS_STAMP)
	$(PY) -m bench.vsphere $(VSPHERE_BENCH_ARGS)

# The azure source and azure-disk target against the Azure peer (needs Azurite: make test).
bench-azure: $(STAMP) $(NPM_STAMP)
	$(PY) -m bench.azure $(AZURE_BENCH_ARGS)

# Regenerate dr_common/proto from proto/ (commit the result; a test checks it is fresh).
proto: $(STAMP)
	$(PY) tools/genproto.py

clean:
	rm -rf $(VENV) node_modules demo-work .pytest_cache *.egg-info
