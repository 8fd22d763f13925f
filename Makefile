# The two fresh-machine commands are `make run` and `make test`; both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
ARTIFACT ?= artifacts/digits
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install run run-tabular test lint bench

$(BIN)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# constraints.txt pins torch to the CPU wheel on this machine's disk.
	$(BIN)/pip install --quiet -c constraints.txt -e '.[train,serve,study,dev]'
	# The kserve SDK's generated models are read as text (tests/kserve_schema.py), never imported:
	# --no-deps keeps its model-server stack out of the venv.
	$(BIN)/pip install --quiet --no-deps 'kserve>=0.21,<0.22'
	touch $@

install: $(BIN)/.installed

# Train and export the embedded default (digits) only when no artifact exists yet; --product
# stores the product-of-experts normaliser so /v1/log-likelihood also serves combination=product.
$(ARTIFACT)/manifest.json: | $(BIN)/.installed
	$(BIN)/made-train --preset digits --out runs/digits
	$(BIN)/made-export runs/digits/model.pt --out $(ARTIFACT) --product

run: $(BIN)/.installed $(ARTIFACT)/manifest.json
	$(BIN)/made-serve --model $(ARTIFACT) --host $(HOST) --port $(PORT)

# The second demo: a table (scikit-learn's wine: 13 real-valued columns and the class), trained
# and exported when absent (about a minute), then served.
TABULAR ?= artifacts/tabular
$(TABULAR)/manifest.json: | $(BIN)/.installed
	$(BIN)/made-train --preset tabular --out runs/tabular
	$(BIN)/made-export runs/tabular/model.pt --out $(TABULAR) --product

run-tabular: $(BIN)/.installed $(TABULAR)/manifest.json
	$(BIN)/made-serve --model $(TABULAR) --host $(HOST) --port $(PORT)

test: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/bandit -q -r service model
	# The image cannot be built here (no Docker engine): lint its files and check the manifests
	# against the Kubernetes (1.30, the first with the preStop sleep) and Compose schemas.
	$(BIN)/hadolint Dockerfile
	$(BIN)/yamllint --strict docker .ci .yamllint.yaml
	# It has no schema for a custom resource (it only warns on docker/kserve's InferenceService):
	# tests/test_kserve_manifest.py checks that one against the kserve SDK's models.
	$(BIN)/kubernetes-validate --strict --quiet -k 1.30.0 docker/k8s/*.yaml
	$(BIN)/check-jsonschema --builtin-schema vendor.compose-spec docker/compose.yaml
	$(BIN)/python -m pytest

lint: $(BIN)/.installed
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Serving benchmarks of issue 4 (a few minutes; trains the reference model once into
# bench-results/cache): prints the table, writes bench-results/latest.{json,md}.
bench: $(BIN)/.installed
	$(BIN)/python -m tests.bench.run
