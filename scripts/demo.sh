#!/usr/bin/env bash
# make demo: start the control plane (if it is not running), deploy the demo tenant and
# agent, and show status and the hardening report. `scripts/demo.sh stop` stops the server.
set -euo pipefail
cd "$(dirname "$0")/.."
AC=.venv/bin/agentcell
STATE="${AGENTCELL_STATE_DIR:-$HOME/.local/share/agentcell}"
URL="${AGENTCELL_URL:-http://127.0.0.1:7878}"
PIDFILE="$STATE/serve.pid"
LOG="$STATE/serve.log"
mkdir -p "$STATE"

answers() { curl -fsS -m 2 "$URL/v1/healthz" >/dev/null 2>&1; }

if [ "${1:-}" = "stop" ]; then
  if [ -f "$PIDFILE" ] && kill "$(cat "$PIDFILE")" 2>/dev/null; then
    echo "demo: stopped agentcell serve (pid $(cat "$PIDFILE")); cells keep running and are re-adopted at the next start"
    rm -f "$PIDFILE"
  else
    echo "demo: no agentcell serve started by make demo is running"
  fi
  exit 0
fi

if answers; then
  echo "== demo: the control plane already answers at $URL — using it =="
else
  echo "== demo: starting the control plane (agentcell serve), log in $LOG =="
  nohup "$AC" serve --state-dir "$STATE" >>"$LOG" 2>&1 &
  echo $! >"$PIDFILE"
  for _ in $(seq 1 150); do
    answers && break
    if ! kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
      echo "demo: agentcell serve exited; its log:" >&2; tail -n 20 "$LOG" >&2; exit 1
    fi
    sleep 0.1
  done
  answers || { echo "demo: agentcell serve did not answer within 15s; log:" >&2; tail -n 20 "$LOG" >&2; exit 1; }
  echo "demo: agentcell serve is up (pid $(cat "$PIDFILE"))"
fi

export AGENTCELL_STATE_DIR="$STATE"
# The demo acts as the admin, whatever token `agentcell login` may have saved.
AGENTCELL_TOKEN="$(cat "$STATE/admin.token")"
export AGENTCELL_TOKEN
echo "== demo: agentcell deploy -f examples/demo.yaml =="
"$AC" deploy -f examples/demo.yaml
echo "== demo: agentcell ps =="
"$AC" ps
echo "== demo: agentcell status acme/researcher =="
"$AC" status acme/researcher
echo "== demo: agentcell verify acme/researcher =="
"$AC" verify acme/researcher
echo "== demo: agentcell egress log acme/researcher (the agent's requests, as its gate decided them) =="
for _ in $(seq 1 100); do
  [ -n "$("$AC" egress log acme/researcher --limit 1)" ] && break
  sleep 0.2
done
"$AC" egress log acme/researcher --limit 5
echo "== demo: agentcell audit --tenant acme (the tenant's trail: lifecycle, policy, egress, ...) =="
"$AC" audit --tenant acme --limit 8
cat <<EOT

demo: done. The control plane keeps running (log: $LOG); 'make stop' stops it.
Try it yourself:
  . .venv/bin/activate
  agentcell logs acme/researcher -f
  agentcell exec acme/researcher -- id
  agentcell token create acme            # a token that sees tenant acme alone
  printf '%s' "sk-test" | agentcell secret set acme demo-key
  agentcell audit -f                     # follow the audit trail
  agentcell rm acme/researcher
EOT
