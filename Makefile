# Receipt labeling pipeline. `make synth` and `make test` work as the first command on a fresh
# clone: they create or refresh .venv and node_modules when missing or out of date.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP_PY := $(VENV)/.installed-stamp
STAMP_NODE := node_modules/.installed-stamp
PY_REQS := requirements.txt requirements-dev.txt lambdas/requirements.txt
# checkov pins boto3 (and urllib3/packaging/networkx) to versions that conflict with .venv: own tool venv.
CHECKOV_VENV := .venv-checkov
STAMP_CHECKOV := $(CHECKOV_VENV)/.installed-stamp

# jsii checks the Node.js major version; the value lists the majors to stay quiet about.
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION ?= 20
export CDK_DISABLE_VERSION_CHECK ?= 1
export PATH := $(CURDIR)/$(BIN):$(CURDIR)/node_modules/.bin:$(PATH)

CDK := npx --no-install cdk
CDK_OUT := cdk.out
# Extra context for diff/deploy, e.g. make deploy CONTEXT="-c stage=prod -c ollama_api_key_secret_name=ollama/api-key"
CONTEXT ?=
PYTEST_ARGS ?=

.PHONY: help install cdk-tools synth test test-unit test-integration lint diff deploy bench run-local demo local-table image-lock clean integ integ-update integ-snapshots mutation

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

$(STAMP_PY): $(PY_REQS)
	@echo ">> creating/refreshing $(VENV) from $(PY_REQS) (first time: about 2 minutes, later only what changed)"
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11+"; exit 1; }
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' || { echo "error: Python 3.11+ is required"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt \
	  || { echo "error: pip install failed (see above)"; exit 1; }
	@touch $@

$(STAMP_CHECKOV): requirements-checkov.txt
	@echo ">> creating/refreshing $(CHECKOV_VENV) from requirements-checkov.txt (first time: about 1 minute)"
	@test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	@$(CHECKOV_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-checkov.txt \
	  || { echo "error: pip install of checkov failed (see above)"; exit 1; }
	@touch $@

$(STAMP_NODE): package.json package-lock.json
	@echo ">> installing the pinned CDK CLI into node_modules (npm ci, about 20 seconds)"
	@command -v npm >/dev/null || { echo "error: npm not found; install Node.js 20+"; exit 1; }
	@npm ci --no-audit --no-fund --loglevel=error || { echo "error: npm ci failed (see above)"; exit 1; }
	@touch $@

install: $(STAMP_PY) $(STAMP_NODE) $(STAMP_CHECKOV) ## Create or refresh .venv, .venv-checkov and node_modules
cdk-tools: $(STAMP_PY) $(STAMP_NODE)

synth: cdk-tools ## Synthesize the CDK app into cdk.out/ (no credentials, no Docker)
	@echo ">> cdk synth -> $(CDK_OUT)/"
	@$(CDK) synth --quiet --output $(CDK_OUT) $(CONTEXT)
	@ls $(CDK_OUT)/*.template.json

test: install ## Run the whole test suite (unit + integration)
	@echo ">> pytest (unit + integration)"
	@$(BIN)/python -m pytest $(PYTEST_ARGS)

test-unit: install ## Run the unit tests only
	@$(BIN)/python -m pytest -m unit $(PYTEST_ARGS)

test-integration: install ## Run the integration tests only
	@$(BIN)/python -m pytest -m integration $(PYTEST_ARGS)

lint: $(STAMP_PY) ## ruff, mypy and hadolint
	@echo ">> ruff check"
	@$(BIN)/ruff check .
	@echo ">> ruff format --check"
	@$(BIN)/ruff format --check .
	@echo ">> mypy (the first run builds .mypy_cache: about a minute; later runs a few seconds)"
	@$(BIN)/mypy
	@echo ">> hadolint"
	@for f in $$(git ls-files --cached --others --exclude-standard '*Dockerfile*' 2>/dev/null | sort -u \
	    || find lambdas -name Dockerfile); do \
	  if [ -f "$$f" ]; then echo "   $$f"; $(BIN)/hadolint "$$f"; fi; done

# Without credentials (or with BASE=<git ref> / TEMPLATE=<file>) the working tree is compared with main,
# synthesized locally from a temporary git worktree; the state machines' definitions as a readable diff.
BASE ?=
TEMPLATE ?=
diff: cdk-tools ## cdk diff against the deployed stack; without AWS against main (BASE=ref, TEMPLATE=file)
	@$(BIN)/python -m local_pipeline.review_diff $(if $(BASE),--base $(BASE),) $(if $(TEMPLATE),--template $(TEMPLATE),) $(CONTEXT)

deploy: cdk-tools ## cdk deploy (needs credentials and a bootstrapped account); CONTEXT="-c key=value ..."
	@$(BIN)/python -m local_pipeline.review_diff --require-credentials || exit 2
	@echo ">> cdk deploy $(CONTEXT)"
	@$(CDK) deploy --require-approval broadening $(CONTEXT)

integ: cdk-tools ## Deploy each integ test app to your AWS account, run its assertions, destroy it (needs credentials)
	@tests/integ/run.sh $(INTEG_APPS)

integ-update: integ ## After a successful make integ: refresh the integ snapshots from the apps as they are
	@$(BIN)/python -m tests.integ.snapshots --update

integ-snapshots: cdk-tools ## Check the integ apps against their committed snapshots, offline (part of make test)
	@$(BIN)/python -m tests.integ.snapshots

mutation: $(STAMP_PY) ## Mutation testing of the core modules (about 30 min; report in mutation-report/report.md)
	@echo ">> mutmut over the core modules, each with the tests that cover it (not part of make test)"
	@$(BIN)/python -m tests.mutation $(if $(GROUP),--group $(GROUP),)

bench: cdk-tools ## Print the benchmark table (ratios and counts)
	@echo ">> benchmarks"
	@$(BIN)/python -m bench

run-local: cdk-tools ## Run the pipeline locally (moto server + a real Ollama endpoint; VALIDATE=1 also judges)
	@$(BIN)/python -m local_pipeline $(if $(RECEIPTS),--receipts $(RECEIPTS),) $(if $(VALIDATE),--validate,)

demo: cdk-tools ## The whole pipeline over the fixtures with a scripted stand-in model (no LLM, no AWS)
	@$(BIN)/python -m local_pipeline.demo

local-table: $(STAMP_PY) ## A local DynamoDB-compatible endpoint with the receipt table, for receipt_dynamo load
	@$(BIN)/python -m local_pipeline.local_table $(if $(TABLE),--table $(TABLE),)

# The worker images' one fully pinned lock (process_receipt and validate_labels install it): linux/arm64
# CPython 3.12, binary wheels only, sha256 of every wheel of each release. Existing pins are kept unless
# requirements.txt needs others; IMAGE_LOCK_ARGS=--upgrade re-resolves every transitive dependency.
IMAGE_REQS := lambdas/requirements.txt
IMAGE_LOCK := lambdas/requirements.lock
IMAGE_LOCK_ARGS ?=
image-lock: $(STAMP_PY) ## Refresh the images' lambdas/requirements.lock from requirements.txt (IMAGE_LOCK_ARGS=--upgrade)
	@echo ">> $(IMAGE_REQS) -> $(IMAGE_LOCK) (linux/arm64, CPython 3.12, wheels, hashes)"
	@$(BIN)/uv pip compile $(IMAGE_REQS) --output-file $(IMAGE_LOCK) --python-platform aarch64-manylinux2014 \
	  --python-version 3.12 --only-binary :all: --generate-hashes --custom-compile-command "make image-lock" \
	  --quiet $(IMAGE_LOCK_ARGS)

clean: ## Remove build outputs and caches (keeps .venv and node_modules)
	@echo ">> removing cdk.out and caches"
	@rm -rf $(CDK_OUT) .pytest_cache .mypy_cache .ruff_cache mutation-report
	@find . -name __pycache__ -type d -not -path './.venv/*' -not -path './node_modules/*' -prune -exec rm -rf {} +
