# The two set-up commands: `make demo` and `make test`. Both create .venv and install what they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch is pinned first: a CPU build of 2.13.0 is what the project is developed on; installing it
# before the package keeps pip from resolving `torch>=2.3` to a newer multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0
# Tests and CI read the shared datasets when they exist; data-bound tests skip otherwise.
export TRADI_DATA_DIR ?= $(abspath ../shared/data)

.PHONY: install demo test lint format docs bench bench-long clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet -e ".[test,lightning,ivon,docs]"
	touch $@

install: $(BIN)/.installed

demo: install
	$(BIN)/tradi run digits --out runs/digits

lint: install
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples

format: install
	$(BIN)/ruff format src tests benchmarks examples
	$(BIN)/ruff check --fix src tests benchmarks examples

# the API reference site from the docstrings (mkdocs-material + mkdocstrings) into site/;
# strict: a broken reference or link, or a docstring that does not parse, fails the build
docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

# two test workers, one thread each: the machine's two cores without oversubscription
test: lint docs
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -n 2 -q

bench: install
	$(BIN)/python benchmarks/run.py --out benchmarks/results.json

# the full CPU-budget experiments of the dense and CIFAR-10 tables (hours on 2 cores)
bench-long: install
	$(BIN)/tradi reproduce camvid-ood --no-progress
	$(BIN)/tradi reproduce cifar10 --no-progress

clean:
	rm -rf $(VENV) runs site .pytest_cache .ruff_cache
