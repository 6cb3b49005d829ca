# The two commands of the README. Both create .venv on first use and install the project into it.
PYTHON ?= python3
VENV   ?= .venv
# Dev/CI pin: a CPU build of torch that this project is tested with. GPU users install their own
# CUDA build first (see README) and can run `make TORCH_SPEC= demo` to keep it.
TORCH_SPEC ?= torch==2.13.0
DEMO_CONFIG ?= configs/toy.yaml
DEMO_OUT ?= runs/toy-demo
BIN := $(VENV)/bin

.PHONY: demo test lint install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Re-install only when the project's dependencies change.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q --upgrade pip
	$(if $(TORCH_SPEC),$(BIN)/python -m pip install -q "$(TORCH_SPEC)")
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/sgt run $(DEMO_CONFIG) --out $(DEMO_OUT)
	$(BIN)/sgt report $(DEMO_OUT) --readme README.md --assets docs/demo

test: install
	$(BIN)/python -m pytest tests

lint: install
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache
