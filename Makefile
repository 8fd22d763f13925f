# The two fresh-machine commands are `make run` and `make test`; both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
ARTIFACT ?= artifacts/digits
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install run test lint bench

$(BIN)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# constraints.txt pins torch to the CPU wheel on this machine's disk.
	$(BIN)/pip install --quiet -c constraints.txt -e '.[train,serve,dev]'
	touch $@

install: $(BIN)/.installed

# Train and export the embedded default (digits) only when no artifact exists yet.
$(ARTIFACT)/manifest.json: | $(BIN)/.installed
	$(BIN)/made-train --preset digits --out runs/digits
	$(BIN)/made-export runs/digits/model.pt --out $(ARTIFACT)

run: $(BIN)/.installed $(ARTIFACT)/manifest.json
	$(BIN)/made-serve --model $(ARTIFACT) --host $(HOST) --port $(PORT)

test: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest

lint: $(BIN)/.installed
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .
