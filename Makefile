# meshhook-rt-metrics — the two commands that matter: `make up` (local stack + live demo) and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STATE_DIR ?= .meshhook
SUPABASE := tools/node_modules/.bin/supabase

.PHONY: up down test lint format bench soak install system-deps clean dashboard

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[dev]'
	touch $@

$(SUPABASE): tools/package.json tools/package-lock.json
	cd tools && npm ci --no-audit --no-fund --loglevel=error
	touch $@

JS_TESTS := tests/localstack/js/node_modules/.package-lock.json

$(JS_TESTS): tests/localstack/js/package.json tests/localstack/js/package-lock.json
	cd tests/localstack/js && npm ci --no-audit --no-fund --loglevel=error
	touch $@

DASHBOARD_DEPS := dashboard/node_modules/.package-lock.json

$(DASHBOARD_DEPS): dashboard/package.json dashboard/package-lock.json
	cd dashboard && npm ci --no-audit --no-fund --loglevel=error
	touch $@

# the page the metrics service serves at /dashboard/ (adapter-static empties build/ first, so a failed
# build leaves no stamp and the next make retries)
DASHBOARD_BUILD := dashboard/build/.built

$(DASHBOARD_BUILD): $(DASHBOARD_DEPS) $(shell find dashboard/src dashboard/static -type f 2>/dev/null) \
		dashboard/svelte.config.js dashboard/vite.config.js dashboard/package-lock.json
	cd dashboard && npm run build
	touch $@

dashboard: $(DASHBOARD_BUILD) ## Build the standalone dashboard page (dashboard/build, served at /dashboard/)

install: system-deps $(VENV)/.installed $(SUPABASE) $(JS_TESTS) $(DASHBOARD_DEPS) ## Python deps in .venv; pinned Supabase CLI, supabase-js, Deno, dashboard deps

system-deps: ## Debian packages the stack and tests need (installed as root or through sudo; a no-op when present)
	./scripts/install-system-deps.sh

up: install dashboard ## Local stack (PostgreSQL + Supabase look-alike + migrations + services) and a live demo
	$(VENV)/bin/meshhook-metrics up --detach --state-dir $(STATE_DIR)
	$(VENV)/bin/meshhook-metrics demo --state-dir $(STATE_DIR)

down: ## Stop the local stack (data kept in $(STATE_DIR))
	$(VENV)/bin/meshhook-metrics down --state-dir $(STATE_DIR)

lint: install ## ruff + mypy
	$(VENV)/bin/ruff check meshhook_rt_metrics tests benchmarks
	$(VENV)/bin/ruff format --check meshhook_rt_metrics tests benchmarks
	$(VENV)/bin/mypy

format: install
	$(VENV)/bin/ruff format meshhook_rt_metrics tests benchmarks
	$(VENV)/bin/ruff check --fix meshhook_rt_metrics tests benchmarks

test: lint dashboard ## Everything: lint, dashboard unit tests (Vitest), Python tests (real PostgreSQL), pgTAP, Supabase CLI checks
	cd dashboard && npx vitest run
	PATH="$(CURDIR)/tools/node_modules/.bin:$$PATH" $(VENV)/bin/pytest $(PYTEST_ARGS)

BENCHMARKS ?= ingest hotpath overhead realtime_fanout api alert_latency dashboard load_webhook load_tail edge_ingest

# benchmarks only, seen only by the load test's servers (benchmarks/load_http.py): uvicorn[standard]'s parser and loop
$(VENV)/bench-site/.installed: benchmarks/requirements.txt $(VENV)/.installed
	rm -rf $(VENV)/bench-site
	$(VENV)/bin/pip install --quiet --target $(VENV)/bench-site -r benchmarks/requirements.txt
	touch $@

bench: install $(VENV)/bench-site/.installed ## Benchmarks (ratios against baselines measured in the same run), JSON + summary.md in benchmarks/results/
	@failed=""; for b in $(BENCHMARKS); do echo "== benchmarks.$$b"; $(PY) -m benchmarks.$$b || failed="$$failed $$b"; done; \
	$(PY) -m benchmarks.summary > /dev/null && echo "== benchmarks/results/summary.md written"; \
	if [ -n "$$failed" ]; then echo "failed or missed a goal:$$failed"; exit 1; fi

soak: install ## Soak (not in CI): 30 min of the demo at 10x through every service, then the long fuzz/property runs
	$(PY) -m benchmarks.soak
	MESHHOOK_SOAK=1 $(VENV)/bin/pytest $(wildcard tests/fuzz) tests/api/test_schemathesis.py tests/localstack/test_gateway_fuzz.py -p no:randomly -q

clean:
	rm -rf $(VENV) tools/node_modules dashboard/node_modules dashboard/build .mypy_cache .ruff_cache .pytest_cache
