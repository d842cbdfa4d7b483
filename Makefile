# Two commands from a bare machine: `make demo` and `make test`.
# Both bootstrap uv into .uv/ and install the locked dependencies into .venv/ first.

PYTHON ?= python3
UV_VERSION := 0.9.30
VENV := .venv
UV := .uv/bin/uv
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench dist install clean chromium

demo: $(STAMP)
	$(VENV)/bin/chatsync demo

# The tests, after the linters: ruff (style, imports, likely bugs) and mypy (types of chatsync/).
# Then the engine, DAG and fault suites again, the room side read through its own connection and
# chatsync's copy of it (docs/testing.md); tests/test_two_databases.py has really separate ones.
TWO_DATABASE_SUITES := tests/test_detect_repair.py tests/test_scale.py tests/test_events.py tests/test_dags.py \
	tests/test_major.py tests/test_deploy.py tests/test_maintenance.py tests/test_freeze.py \
	tests/test_validation_pipeline.py tests/test_faults.py tests/test_run_lifecycle.py \
	tests/test_redis_recovery.py tests/test_stream_loss.py tests/test_security.py tests/test_cli.py tests/test_web.py \
	tests/test_domains.py
test: lint chromium
	$(VENV)/bin/pytest
	CHATSYNC_TEST_TOPOLOGY=two-databases $(VENV)/bin/pytest $(TWO_DATABASE_SUITES)

lint: $(STAMP)
	$(VENV)/bin/ruff check chatsync devtools dags tests
	$(VENV)/bin/mypy

# The benchmark's scratch databases go on the server CHATSYNC_DATABASE_URL names.
bench: $(STAMP)
	@[ -n "$$CHATSYNC_DATABASE_URL" ] || { echo "make bench needs CHATSYNC_DATABASE_URL (a server where it may create scratch databases)" >&2; exit 2; }
	$(VENV)/bin/chatsync bench --participants 1000000 --drift 0.01

# The wheels and sdists of chatsync (the product) and chatsync-devtools (simulator, demo, benchmarks).
dist: | $(UV)
	rm -rf dist
	$(UV) build --all-packages --out-dir dist --python $(PYTHON)

install: $(STAMP)

$(UV):
	$(PYTHON) -m venv .uv
	.uv/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

$(STAMP): pyproject.toml uv.lock | $(UV)
	UV_PROJECT_ENVIRONMENT=$(VENV) $(UV) sync --frozen --all-extras --all-groups --compile-bytecode --python $(PYTHON)
	touch $(STAMP)

# The health page's browser test needs Debian's chromium (no browser download: the machine's registry).
chromium:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get install -y -q chromium >/dev/null \
	  || { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; }; } \
	  || { echo "make test needs chromium: apt-get install chromium (as root)" >&2; exit 1; }

clean:
	rm -rf .uv $(VENV) .chatsync .pytest_cache dist
