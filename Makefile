# The verbs of this project. Every target sets up what it needs (virtual environment,
# packages); `make run` and `make test` work on a fresh clone with Python 3.11+ and Node.js.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt | cksum | cut -d' ' -f1)

DATA  ?=
OUT   ?= out
STATE ?= .state
ENV   ?= dev

export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 18,20,22

.PHONY: help venv run report report-js test lint format browser bench bench-files wheels synth landing-policy warehouse-sql preflight bootstrap diff deploy clean checkov rds-ca

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 12

$(STAMP): requirements.txt requirements-dev.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required (set PYTHON=python3.11)")'
	@command -v node >/dev/null || { echo "Node.js is required (the CDK synthesizes with it)"; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@rm -f $(VENV)/.installed-* && touch $@

venv: $(STAMP)  ## create the virtual environment with every package

# The runner's last line is its exit status: 0 the run succeeded, 1 it failed, 2 a usage error
# (nothing run; a bad request is refused before anything starts). make exits 2 on any failure:
# scripts call `.venv/bin/python -m local_runner` with the same options (`make -n run ...`).
# PRINT_INPUT=1 prints the execution input for the Step Functions console and the AWS CLI.
run: $(STAMP)  ## run the pipeline locally: make run [DATA=dir] [OUT=dir] [STATE=dir] [ENGINE=lambda|warehouse|auto] [FULL_EXTRACT=1] [RECOMPUTE=FROM..TO [CATALOGUE=current] | REPLAY=reason,... [DATES=FROM..TO] | REVALIDATE=FROM..TO | PREFLIGHT=1] [PRINT_INPUT=1]
	$(PY) -m local_runner $(if $(DATA),--data "$(DATA)") --out "$(OUT)" --state "$(STATE)" $(if $(ENGINE),--engine "$(ENGINE)") \
		$(if $(RECOMPUTE),--recompute "$(RECOMPUTE)") $(if $(CATALOGUE),--catalogue "$(CATALOGUE)") \
		$(if $(REPLAY),--replay "$(REPLAY)") $(if $(DATES),--dates "$(DATES)") $(if $(PREFLIGHT),--preflight) \
		$(if $(REVALIDATE),--revalidate "$(REVALIDATE)") $(if $(FULL_EXTRACT),--full-extract) $(if $(PRINT_INPUT),--print-input)

# The report's plotly.js: the basic partial bundle from npm (bar, scatter, pie; a quarter of
# plotly.py's full one), pinned in reporting/package.json, inlined in the page.
REPORT_JS := reporting/node_modules/.installed-$(shell cat reporting/package-lock.json | cksum | cut -d' ' -f1)
$(REPORT_JS): reporting/package.json reporting/package-lock.json
	@command -v npm >/dev/null || { echo "npm is required: the report inlines plotly.js from npm"; exit 1; }
	cd reporting && npm ci --silent --no-audit --no-fund
	@touch $@

report-js: $(REPORT_JS)  ## install the report's pinned plotly.js bundle with npm (make report does)

report: $(STAMP) $(REPORT_JS)  ## one self-contained HTML KPI report: make report [OUT=dir] [DSN=...] [SUMMARIES=s3://bucket]
	$(PY) -m reporting --out "$(OUT)" --state "$(STATE)" $(if $(DSN),--dsn "$(DSN)") $(if $(SUMMARIES),--summaries "$(SUMMARIES)")

# The IaC scanners, pinned (infra/checkov.py), in a virtual environment of their own: their
# dependencies are theirs. tests/test_infra_checkov.py runs them on the synthesized templates.
CHECKOV := .cache/checkov/.installed-3.3.30-1.58.0
$(CHECKOV):
	rm -rf .cache/checkov && $(PYTHON) -m venv .cache/checkov
	.cache/checkov/bin/pip install --quiet "checkov==3.3.30" "cfn-lint==1.58.0"
	touch $@

checkov: $(CHECKOV)  ## install the pinned IaC scanners (checkov, cfn-lint) make test runs

test: lint browser $(CHECKOV) $(REPORT_JS)  ## lint, type-check and run every test
	$(PY) -m pytest -n auto --maxprocesses 4

lint: $(STAMP)  ## ruff (lint + format check) and mypy
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy lambdas infra local_runner benchmarks reporting app.py
	@# The Lambda code also as the runtime's Python (a module or API it removed fails here).
	$(VENV)/bin/mypy --python-version $$($(PY) -c 'from infra.packaging import PYTHON_VERSION; print(PYTHON_VERSION)') lambdas

# The report's browser test drives Debian's Chromium; it is skipped (never failed) without it.
browser:  ## make sure Debian's Chromium is there for the report's browser test (as root)
	@if command -v chromium >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "browser: installing Debian's chromium for the report's browser test"; \
		apt-get install -y --no-install-recommends chromium >/dev/null 2>&1 \
		|| { apt-get update >/dev/null 2>&1 && apt-get install -y --no-install-recommends chromium >/dev/null 2>&1; } \
		|| echo "browser: could not install chromium with apt-get: the report's browser test will be skipped"; \
	else echo "browser: no chromium (install Debian's chromium as root): the report's browser test will be skipped"; fi

format: $(STAMP)  ## apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: $(STAMP)  ## speed and memory of ingest and transform: make bench [BENCH_ARGS="--big | --no-pandas"]
	$(PY) -m benchmarks $(BENCH_ARGS)

FILES ?= 2000
bench-files: $(STAMP)  ## one local run of many small files through the Distributed Map: make bench-files [FILES=2000]
	$(PY) -m benchmarks.many_files --files $(FILES)

WHEELS := .cache/lambda-wheels/.complete-$(shell cat infra/layers/*/requirements.txt | cksum | cut -d' ' -f1)

$(WHEELS): $(STAMP) infra/layers/*/requirements.txt
	$(PY) -m infra.synth wheels
	@rm -f .cache/lambda-wheels/.complete-* && touch $@

wheels: $(WHEELS)  ## fetch the Lambda-platform wheels of our layers (once; needs the network)

synth: $(WHEELS)  ## write ENV's CloudFormation template to cdk.out/, offline: make synth ENV=prod
	$(PY) -m infra.synth $(ENV)

rds-ca: $(STAMP)  ## fetch the RDS CA bundle of ENV's region into source.ca_bundle (verify-full): make rds-ca ENV=prod
	$(PY) -m infra.rds_ca $(ENV)

landing-policy: $(STAMP)  ## what a landing bucket's owner in another account adds: make landing-policy ENV=prod
	PYTHONPATH=lambdas $(PY) -m infra.landing_policy $(ENV)

preflight: $(STAMP)  ## prove a deployment with its own roles before its first run: make preflight ENV=dev
	@PYTHONPATH=lambdas $(PY) -m infra.preflight $(ENV)

warehouse-sql: $(STAMP)  ## the warehouse's tables, users and grants, for its administrator: make warehouse-sql ENV=prod
	@PYTHONPATH=lambdas $(PY) -m infra.warehouse_setup $(ENV)

node_modules/.bin/cdk: package.json package-lock.json
	npm ci --silent --no-audit --no-fund

bootstrap: $(WHEELS) node_modules/.bin/cdk  ## cdk bootstrap ENV's account and region (once)
	node_modules/.bin/cdk bootstrap -c env=$(ENV)

diff: $(WHEELS) node_modules/.bin/cdk  ## what a deploy of ENV would change (cdk diff): make diff ENV=prod
	node_modules/.bin/cdk diff -c env=$(ENV)

deploy: $(WHEELS) node_modules/.bin/cdk  ## cdk deploy ENV with the pinned CDK CLI: make deploy ENV=prod
	node_modules/.bin/cdk deploy -c env=$(ENV) --require-approval broadening

clean:  ## remove local state, outputs and caches (keeps the virtual environment)
	rm -rf $(STATE) $(OUT) cdk.out .pytest_cache .mypy_cache .ruff_cache .hypothesis
