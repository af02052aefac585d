# The two front-door commands. Each runs the idempotent host set-up first
# (Debian packages, bpffs, kernel-header fallback, venv): run as root.
VENV   ?= .venv
PY     := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup test demo bench lab-up lab-down clean

setup:
	@bash scripts/setup-host.sh $(VENV)

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

demo: setup
	$(VENV)/bin/edgestick lab demo

bench: setup
	$(PY) -m bench.proxy
	$(PY) -m bench.xdp
	$(PY) -m bench.flood

lab-up: setup
	$(VENV)/bin/edgestick lab up

lab-down:
	$(VENV)/bin/edgestick lab down

clean:
	rm -rf $(VENV) .venv-pypy *.egg-info .pytest_cache
