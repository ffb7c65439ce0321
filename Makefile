# agentcell: `make demo` and `make test` set up everything they need (see README).
SHELL := /bin/bash
VENV  := .venv
AC    := $(VENV)/bin/agentcell

.PHONY: help setup images demo stop test lint unit integration bench clean

help:
	@echo "make demo   set up, build images, start the control plane, deploy the demo cell, verify it"
	@echo "make test   set up, build images, run lint and the whole test suite on the real engine"
	@echo "make stop   stop the control plane started by make demo"
	@echo "make bench  run the benchmarks (bench/*.py; installs squid and haproxy to compare)"

setup:
	@bash scripts/setup.sh

images: setup
	@echo "== images: building what is missing (cached) =="
	@$(AC) images build

demo: images
	@bash scripts/demo.sh

stop:
	@bash scripts/demo.sh stop

lint: setup
	@bash scripts/test.sh lint

unit: setup
	@bash scripts/test.sh unit

integration: images
	@bash scripts/test.sh integration

test: images
	@bash scripts/test.sh all

bench: images
	@bash scripts/setup.sh bench
	@$(VENV)/bin/python bench/deploy.py
	@$(VENV)/bin/python bench/egress.py
	@$(VENV)/bin/python bench/dockerproxy.py
	@$(VENV)/bin/python bench/recovery.py
	@$(VENV)/bin/python bench/idle.py
	@$(VENV)/bin/python bench/canary.py
	@$(VENV)/bin/python bench/audit.py
	@$(VENV)/bin/python bench/api.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
