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
	$(PY) -m daimon_node.demo

devnet: $(STAMP)
	$(PY) -m daimon_node.devnet_demo

test: $(STAMP)
	$(PY) -m pytest -q -x -p no:cacheprovider

bench: $(STAMP)
	@for b in benchmarks/*_bench.py benchmarks/testnet_scale.py benchmarks/soak.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info
