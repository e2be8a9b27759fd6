# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo devnet test bench install clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[train,test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m daimon_node.harness.demo

devnet: $(STAMP)
	$(PY) -m daimon_node.harness.devnet_demo

# Two workers: the multi-process testnet tests mostly wait on their periods, so two run side
# by side in about half the wall time (the suite is under 10 minutes on 2 cores).
test: $(STAMP)
	$(PY) -m pytest -q -x -p no:cacheprovider -n 2

# Every benchmarks/*_bench.py, then the testnet ones. competition_bench.py (one competition at
# FashionMNIST scale: problem create with both DELs, PROVE/VERIFY, message sizes) exits 1 when a
# target is missed, which stops the run.
bench: $(STAMP)
	@for b in benchmarks/*_bench.py benchmarks/testnet_scale.py benchmarks/soak.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info
