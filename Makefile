# Two commands on a fresh machine: `make run` (install, fetch weights, serve on 127.0.0.1:8000) and `make test`.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)
export RAY_AUTH_MODE := disabled
export RAY_USAGE_STATS_ENABLED := 0
# Under load on 2 cores the HTTP proxy can take longer than the default 5 s to report ready.
export RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S := 30
export RAY_SERVE_PROXY_HEALTH_CHECK_TIMEOUT_S := 30

.PHONY: install weights browser test-servers run test bench soak report routellm-benchmark routellm-learning-curve routellm-small-lm

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (Python 3.11)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[test]'
	rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)

weights: install
	$(BIN)/router fetch-models

# `router up` deploys serve_config.yaml on a private local Ray cluster and stops it cleanly on Ctrl-C or SIGTERM
# (`serve run serve_config.yaml` works too, but its exit on SIGTERM crashed after Ray's atexit handler).
run: weights
	$(BIN)/router up

# Headless Chromium for the test that opens the HTML report; from Debian's packages when we are root.
browser:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -q && apt-get install -y -q chromium; } \
		|| echo "chromium missing: install it (apt-get install chromium) to run the browser test"

# PostgreSQL (the decision store's tests) and Prometheus (the monitoring tests), from Debian's packages when root.
test-servers:
	@{ ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 && command -v prometheus >/dev/null; } \
		|| { [ "$$(id -u)" = 0 ] && apt-get update -q \
			&& DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends postgresql prometheus; } \
		|| echo "postgresql or prometheus missing: apt-get install postgresql prometheus, to run their tests"

# Two pytest processes: a process joins one Ray cluster, and the 2-node cluster tests (the soak among them) must
# not share this machine's 2 cores with the single-node ensemble of the others.
test: weights browser test-servers
	$(BIN)/lint-imports
	$(BIN)/ruff check --no-cache router models bench tests
	$(BIN)/python -m pytest -q -m "not cluster" tests
	$(BIN)/python -m pytest -q -m cluster tests

# Five minutes of load at twice the ensemble's capacity on a 2-node cluster, with kills (bench/soak.py)
soak: weights
	$(BIN)/python bench/soak.py --duration 300

bench: weights
	$(BIN)/python bench/bench_router.py

report: install
	$(BIN)/router report --data routellm:mmlu --out reports

OUT ?= bench/routellm
routellm-benchmark: weights
	$(BIN)/python bench/routellm_benchmark.py --out $(OUT)

routellm-learning-curve: weights
	$(BIN)/python bench/routellm_learning_curve.py --out $(OUT)

routellm-small-lm: weights
	$(BIN)/python bench/routellm_small_lm_signal.py --out $(OUT)
