#!/usr/bin/env bash
# Runs lint and the test suite. Usage: scripts/test.sh [all|lint|unit|integration]
# pytest's "no tests ran" (exit 5) is a failure here, never a silent pass.
set -euo pipefail
cd "$(dirname "$0")/.."
V=.venv/bin
what="${1:-all}"

lint() {
  echo "== lint: ruff, mypy --strict, import-linter =="
  $V/ruff check src tests bench
  $V/ruff format --check src tests bench
  $V/mypy
  # The tests too (the in-memory backend against the Backend Protocol, among them), one
  # folder at a time: pytest imports each folder's helpers as top-level modules.
  MYPYPATH=src:tests $V/mypy tests/*.py
  for d in tests/*/; do MYPYPATH="src:tests:$d" $V/mypy "$d"; done
  $V/lint-imports
}

# Integration tests hold the engine lock exclusively: one of them restarts dockerd, and
# side-by-side runs (each under `flock -s`) must not see that.
ENGINE_LOCK=/tmp/agentcell-engine.lock

integration() {
  echo "== integration tests (real Docker Engine) =="
  # -o: the lock stays with flock itself, so nothing the tests start (a restarted dockerd)
  # inherits it and holds it past the run.
  flock -o -x "$ENGINE_LOCK" bash -c "$(declare -f run_pytest); V=$V; run_pytest -m integration -q"
}

run_pytest() {
  local rc=0
  $V/pytest "$@" || rc=$?
  if [ "$rc" -eq 5 ]; then
    echo "test: pytest ran no tests for '$*' — that is a failure" >&2
    return 1
  fi
  return "$rc"
}

case "$what" in
  lint) lint ;;
  unit) echo "== unit tests =="; run_pytest -m "not integration" -q ;;
  integration) integration ;;
  all)
    lint
    echo "== unit tests =="
    run_pytest -m "not integration" -q
    integration
    ;;
  *) echo "usage: $0 [all|lint|unit|integration]" >&2; exit 2 ;;
esac
