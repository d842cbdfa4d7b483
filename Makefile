# Two commands from a bare machine: `make demo` and `make test`.
# Both bootstrap uv into .uv/ and install the locked dependencies into .venv/ first.

PYTHON ?= python3
UV_VERSION := 0.9.30
VENV := .venv
UV := .uv/bin/uv
STAMP := $(VENV)/.installed

.PHONY: demo test bench install clean

demo: $(STAMP)
	$(VENV)/bin/chatsync demo

test: $(STAMP)
	$(VENV)/bin/pytest

bench: $(STAMP)
	$(VENV)/bin/chatsync bench --participants 1000000 --drift 0.01

install: $(STAMP)

$(UV):
	$(PYTHON) -m venv .uv
	.uv/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

$(STAMP): pyproject.toml uv.lock | $(UV)
	UV_PROJECT_ENVIRONMENT=$(VENV) $(UV) sync --frozen --all-groups --python $(PYTHON)
	touch $(STAMP)

clean:
	rm -rf .uv $(VENV) .chatsync .pytest_cache
