# The two set-up commands: `make demo` and `make test`. Both create .venv and install what they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch is pinned first: a CPU build of 2.13.0 is what the project is developed on; installing it
# before the package keeps pip from resolving `torch>=2.3` to a newer multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0
# Tests and CI read the shared datasets when they exist; data-bound tests skip otherwise.
export TRADI_DATA_DIR ?= $(abspath ../shared/data)

.PHONY: install demo test lint format docs bench bench-long mutate clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet -e ".[test,lightning,ivon,docs]"
	touch $@

install: $(BIN)/.installed

demo: install
	$(BIN)/tradi run digits --out runs/digits --resume

lint: install
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples

format: install
	$(BIN)/ruff format src tests benchmarks examples
	$(BIN)/ruff check --fix src tests benchmarks examples

# the API reference site from the docstrings (mkdocs-material + mkdocstrings) into site/;
# strict: any warning fails the build (a broken reference, link or anchor, a page outside the nav,
# a docstring that does not parse: mkdocs.yml's validation). Not --quiet: with it mkdocs 1.6
# prints no warning and exits 0 even in strict mode (tests/docs/test_docs_build.py).
docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

# two test workers, one thread each: the machine's two cores without oversubscription
test: lint docs
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -n 2 -q

bench: install
	$(BIN)/python benchmarks/run.py --out benchmarks/results.json

# the full CPU-budget experiments of the dense and CIFAR-10 tables (~2 h on 2 cores: 48 + 78 min measured)
bench-long: install
	$(BIN)/tradi reproduce camvid-ood --no-progress --resume
	$(BIN)/tradi reproduce cifar10 --no-progress --resume

# Mutation testing of the core modules (docs/testing.md; the modules and the test files each mutant
# may run are [tool.mutmut] in pyproject.toml). Outside CI: hours with one worker (3,593 mutants;
# docs/testing.md has the measured rates); a stopped run resumes. One worker by default
# (MUTATE_JOBS) so that it shares the machine; MUTANTS restricts it to names, e.g.
# MUTANTS='tradi.metrics.ood*'. Prints the score; `mutmut results` lists the survivors.
MUTATE_JOBS ?= 1
MUTANTS ?=
mutate: install
	$(BIN)/pip install --quiet -e ".[mutate]"
	OMP_NUM_THREADS=1 $(BIN)/mutmut run --max-children $(MUTATE_JOBS) $(MUTANTS) > mutants.log 2>&1 \
		|| { tail -c 3000 mutants.log; exit 1; }
	$(BIN)/mutmut export-cicd-stats
	$(BIN)/python -c 'import json; s = json.load(open("mutants/mutmut-cicd-stats.json")); \
		k = s["killed"] + s["timeout"]; n = k + s["survived"] + s["suspicious"]; \
		print("mutation score %d/%d = %.1f%%;" % (k, n, 100 * k / n), "survived", s["survived"], \
		"(timeouts %d, no covering test %d)" % (s["timeout"], s["no_tests"]))'

clean:
	rm -rf $(VENV) runs site .pytest_cache .ruff_cache mutants mutants.log
