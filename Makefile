# Two commands do everything on a fresh machine:
#   make demo   - set up, start the broker, a worker and the store, produce load, print aggregates
#   make test   - set up, start the broker, run the whole test suite
VENV  := .venv
BIN   := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
# The suite's parallel workers (pytest-xdist, docs/testing.md): `make test PYTEST_XDIST=4`;
# 0 runs it in one process. Unset, `make test` runs in one process, `make test-unit` on 2.
PYTEST_XDIST ?=
XDIST = -n $(or $(PYTEST_XDIST),$(1)) --dist loadgroup
# Python and pytest cache compiled modules and rewritten asserts (a PYTHONDONTWRITEBYTECODE
# in the environment would make every run, and every worker, compile them again).
PYTEST := PYTHONDONTWRITEBYTECODE= $(BIN)/pytest

.PHONY: setup demo test test-unit lint broker-up broker-down bench clean alertmanager prometheus \
	chromium pdftools node-exporter

$(STAMP): pyproject.toml
	test -x $(BIN)/python || python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

setup: $(STAMP)

broker-up: setup
	$(BIN)/monitoring broker up

broker-down:
	-$(BIN)/monitoring broker down

demo: broker-up
	$(BIN)/monitoring demo

test: broker-up alertmanager prometheus chromium pdftools node-exporter
	$(PYTEST) $(call XDIST,0)

# The fast lane: everything outside tests/integration but the slow scale tests, with no
# broker (a test that reaches for one fails instead of starting it), a fifth of each
# property's Hypothesis examples (tests/fixtures/hypothesis_profiles.py), on 2 workers.
test-unit: setup
	HYPOTHESIS_PROFILE=dev MONITORING_TEST_KAFKA_BOOTSTRAP=127.0.0.1:1 $(PYTEST) \
		-m "not integration and not slow" --ignore=tests/integration $(call XDIST,2)

# The real Prometheus Alertmanager that the notifier tests deliver to (Debian package).
alertmanager:
	test -x /usr/bin/prometheus-alertmanager || \
		(apt-get update -q && apt-get install -y --no-install-recommends prometheus-alertmanager)

# The real Prometheus (and promtool) that the Prometheus API tests use as client and as
# oracle (Debian package: 2.42, the version the API follows).
prometheus:
	test -x /usr/bin/prometheus -a -x /usr/bin/promtool || \
		(apt-get update -q && apt-get install -y --no-install-recommends prometheus)

# The real browser the dashboard tests drive (Playwright, pointed at Debian's chromium).
chromium:
	test -x /usr/bin/chromium || \
		(apt-get update -q && apt-get install -y --no-install-recommends chromium)

# pdftotext and pdftoppm, which the report tests open generated PDFs with.
pdftools:
	test -x /usr/bin/pdftotext -a -x /usr/bin/pdftoppm || \
		(apt-get update -q && apt-get install -y --no-install-recommends poppler-utils)

# The real node_exporter that the scrape and remote_write tests read (Debian package).
node-exporter:
	test -x /usr/bin/prometheus-node-exporter || \
		(apt-get update -q && apt-get install -y --no-install-recommends prometheus-node-exporter)

lint: setup
	$(BIN)/ruff check monitoring tests
	$(BIN)/ruff format --check monitoring tests
	$(BIN)/mypy

bench: broker-up
	$(BIN)/monitoring bench pipeline

clean: broker-down
	rm -rf .data .local $(VENV)
