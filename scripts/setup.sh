#!/usr/bin/env bash
# Idempotent host setup for agentcell on Debian 12, run as root by `make demo` and `make test`.
#   1. a Docker Engine that answers (installs docker.io and starts dockerd only when none
#      does) and debootstrap, which image builds need;
#   2. .venv with the project installed editable with its dev extras.
# Each step says what it does, or why it is skipped.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

DOCKERD_LOG=/var/log/agentcell-dockerd.log
ENGINE_DEADLINE_SECONDS=60
apt_updated=0

say() { printf 'setup: %s\n' "$*"; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

# apt_install PKG...: install the packages not installed yet (apt-get update once, first).
apt_install() {
  local missing=() pkg
  for pkg in "$@"; do
    if installed "$pkg"; then say "$pkg is installed — skipping"; else missing+=("$pkg"); fi
  done
  if [ "${#missing[@]}" -eq 0 ]; then return 0; fi
  [ "$(id -u)" -eq 0 ] || die "installing ${missing[*]} needs root"
  if [ "$apt_updated" -eq 0 ]; then
    say "apt-get update"
    DEBIAN_FRONTEND=noninteractive apt-get update -q
    apt_updated=1
  fi
  say "apt-get install ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
}

# engine_version: print the engine's version if one answers, fail otherwise.
engine_version() {
  command -v docker >/dev/null 2>&1 || return 1
  timeout 20 docker info --format '{{.ServerVersion}}' 2>/dev/null
}

engine_address() { printf '%s' "${DOCKER_HOST:-unix:///var/run/docker.sock}"; }

start_engine() {
  if [ "$(cat /proc/1/comm 2>/dev/null)" = systemd ]; then
    say "systemd is PID 1: systemctl start docker"
    systemctl start docker
    return 0
  fi
  say "no systemd: starting dockerd in the background, log in $DOCKERD_LOG"
  # The engine outlives this script: it must not keep a descriptor it inherited, such as
  # the flock of a caller's test run, or that lock stays held for as long as dockerd runs.
  (
    for fd in $(ls "/proc/$BASHPID/fd"); do
      [ "$fd" -gt 2 ] && eval "exec $fd>&-" 2>/dev/null
    done
    exec nohup setsid dockerd >>"$DOCKERD_LOG" 2>&1 </dev/null
  ) &
  local pid=$! deadline=$((SECONDS + ENGINE_DEADLINE_SECONDS))
  until engine_version >/dev/null; do
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -n 30 "$DOCKERD_LOG" >&2 || true
      die "dockerd exited before answering (last lines of $DOCKERD_LOG above)"
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      tail -n 30 "$DOCKERD_LOG" >&2 || true
      die "dockerd did not answer within ${ENGINE_DEADLINE_SECONDS}s (last lines of $DOCKERD_LOG above)"
    fi
    sleep 0.5
  done
}

# --- 1. Docker Engine and debootstrap ------------------------------------------------------
if version=$(engine_version); then
  say "docker engine $version answers at $(engine_address) — using it"
  apt_install debootstrap iptables curl
else
  say "no docker engine answers — installing and starting one"
  apt_install docker.io iptables debootstrap curl
  if version=$(engine_version); then
    say "docker engine $version answers at $(engine_address) — using it"
  else
    start_engine
    say "docker engine $(engine_version) answers at $(engine_address) — started"
  fi
fi

# --- 1b. What the benchmarks compare against (make bench only) -----------------------------
if [ "${1:-}" = "bench" ]; then
  apt_install squid haproxy
  say "done"
  exit 0
fi

# --- 2. The engine's default seccomp profile ------------------------------------------------
# Cells run under the engine's own default profile minus ptrace (agentcell derives it at
# start). Debian ships that profile in the engine's source package; take just the file.
PROFILE=/usr/local/share/agentcell/engine-seccomp.json
if [ -s "$PROFILE" ]; then
  say "engine seccomp profile at $PROFILE — skipping"
elif [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
  say "warning: cannot fetch the engine's seccomp profile (needs root and apt); cells will use the engine's default, which allows ptrace"
else
  tmp=$(mktemp -d)
  say "fetching the engine's default seccomp profile from Debian's golang-github-docker-docker-dev into $PROFILE"
  if [ "$apt_updated" -eq 0 ] && ! apt-cache show golang-github-docker-docker-dev >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get update -q
    apt_updated=1
  fi
  (cd "$tmp" && apt-get download -q golang-github-docker-docker-dev >/dev/null)
  dpkg-deb -x "$tmp"/golang-github-docker-docker-dev_*.deb "$tmp/x"
  install -D -m 0644 "$tmp/x/usr/share/gocode/src/github.com/docker/docker/profiles/seccomp/default.json" "$PROFILE"
  rm -rf "$tmp"
fi

# --- 3. Python virtualenv ---------------------------------------------------------------------
if [ -x .venv/bin/python ]; then
  say ".venv exists — skipping python3 -m venv"
else
  if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
    apt_install python3 python3-venv
  fi
  say "python3 -m venv .venv"
  python3 -m venv .venv
fi

wanted=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ -f .venv/.stamp ] && [ "$(cat .venv/.stamp)" = "$wanted" ]; then
  say ".venv matches pyproject.toml — skipping pip install"
else
  say "pip install -e '.[dev]' into .venv"
  .venv/bin/python -m pip install -q -e '.[dev]'
  printf '%s\n' "$wanted" >.venv/.stamp
fi

say "done"
