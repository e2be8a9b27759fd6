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

# Four workers on two cores: the multi-process testnet tests mostly wait on their periods
# (the load average stays near 1 with two workers), so four side by side take about 7.5
# minutes instead of 12.
test: $(STAMP)
	$(PY) -m pytest -q -x -p no:cacheprovider -n 4

# Every benchmarks/*_bench.py, then the testnet ones. competition_bench.py (one competition at
# FashionMNIST scale: problem create with both DELs, PROVE/VERIFY, message sizes) exits 1 when a
# target is missed, which stops the run.
bench: $(STAMP)
	@for b in benchmarks/*_bench.py benchmarks/testnet_scale.py benchmarks/soak.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info
