#!/usr/bin/env bash
# One command after `vagrant up`: the lab's scenarios across the VMs. A legitimate client
# runs on `client` for the whole run while `attacker` sends, one after the other, a spoofed
# SYN flood, a spoofed UDP flood, an HTTP request flood from its four real extra
# addresses and credential stuffing; then the edge shows what it saw.
#   vagrant/run-scenarios.sh
# Results (one JSON line per scenario) land in vagrant/results/. Every scenario is bounded
# in count and time; the knobs below are environment variables.
#
# EDGESTICK_LAB=<prefix> runs the same commands in the namespace lab `edgestick lab up`
# built (provisioned with lab/provision.py) instead of the VMs, which is how CI runs it.
set -euo pipefail
cd "$(dirname "$0")"

EDGE=${EDGE:-198.18.0.1}
LEGIT_RATE=${LEGIT_RATE:-5}              # requests/s: well under the 100 per 10 s limit
FLOOD_SECONDS=${FLOOD_SECONDS:-15}
FLOOD_FRAMES=${FLOOD_FRAMES:-1000000}
FLOOD_SOURCES=${FLOOD_SOURCES:-16384}     # the whole spoofing range: ~1 frame per source per 16k frames
HTTP_FLOOD_REQUESTS=${HTTP_FLOOD_REQUESTS:-50000}
STUFFING_REQUESTS=${STUFFING_REQUESTS:-2000}
EDGE_RUN_DIR=${EDGE_RUN_DIR:-/run/edgestick}
RESULTS=${RESULTS:-results}
LEGIT_SECONDS=${LEGIT_SECONDS:-$(( 4 * FLOOD_SECONDS + 10 ))}   # the client outlasts the attacks

if [ -n "${EDGESTICK_LAB:-}" ]; then
    PY=${EDGESTICK_VENV:-$(cd .. && pwd)/.venv}/bin/python
    SCENARIO=("$PY" -m edgestick.lab.scenarios)
    EDGESTICK=("$PY" -m edgestick)
    on() {   # on HOST CMD...: backend1/backend2 are the lab's one backend host
        local host=${1/backend[12]/backend}; shift
        nsenter --net="/run/netns/$EDGESTICK_LAB-$host" -- "$@"
    }
else
    SCENARIO=(edgestick-scenario)                 # installed by provision/{attacker,client}.sh
    EDGESTICK=(/opt/edgestick-venv/bin/edgestick)
    on() {
        local host=$1; shift
        vagrant ssh "$host" -c "sudo $(printf '%q ' "$@")" -- -q
    }
fi
mkdir -p "$RESULTS"

scenario() {   # scenario HOST NAME ARGS...: run one, keep its JSON result
    local host=$1 name=$2; shift 2
    echo "== $host: $name $*" >&2
    on "$host" "${SCENARIO[@]}" "$name" --target "$EDGE" "$@" > "$RESULTS/$name.json"
}

set -m     # the background client gets its own process group: a failure below stops it all
scenario client legit --rate "$LEGIT_RATE" --count $(( LEGIT_RATE * LEGIT_SECONDS )) \
    --duration "$LEGIT_SECONDS" 2> "$RESULTS/legit.txt" &
legit=$!
trap 'kill -- -"$legit" 2>/dev/null || true' EXIT
sleep 2
scenario attacker syn-flood --count "$FLOOD_FRAMES" --sources "$FLOOD_SOURCES" --duration "$FLOOD_SECONDS"
scenario attacker udp-flood --count "$FLOOD_FRAMES" --sources "$FLOOD_SOURCES" --duration "$FLOOD_SECONDS"
scenario attacker http-flood --count "$HTTP_FLOOD_REQUESTS" --concurrency 16 --duration "$FLOOD_SECONDS"
scenario attacker cred-stuff --count "$STUFFING_REQUESTS" --duration "$FLOOD_SECONDS"   # from .66
wait "$legit"

echo "== legitimate client during the attacks" >&2
cat "$RESULTS/legit.txt" >&2
echo "== edge: top sources, shield counters, bans" >&2
on edge "${EDGESTICK[@]}" top -S "$EDGE_RUN_DIR/proxy.sock" --shield "$EDGE_RUN_DIR/shield.sock" --once || true
on edge "${EDGESTICK[@]}" ctl -S "$EDGE_RUN_DIR/shield.sock" "show bans" || true
echo "results in $(cd "$RESULTS" && pwd)" >&2
