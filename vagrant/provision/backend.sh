#!/usr/bin/env bash
# Backend role: the lab's HTTP backend (lab/backend.py) as a service.
#   EDGESTICK_BACKENDS  "NAME=ADDR:PORT ..." servers this host runs, one process for all
#                       (a VM runs one, the namespace lab's backend host runs two)
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

: "${EDGESTICK_BACKENDS:?EDGESTICK_BACKENDS must list NAME=ADDR:PORT servers}"
args=()
for server in $EDGESTICK_BACKENDS; do
    name=${server%%=*} bind=${server#*=}
    if [ "$name" = "$server" ] || [ -z "$name" ] || [[ $bind != *:* ]]; then
        log "bad server '$server' in EDGESTICK_BACKENDS (expects NAME=ADDR:PORT)"; exit 2
    fi
    addr=${bind%:*}
    # Every address a backend binds must be local: a VM gets it from Vagrant, the lab
    # from topology.py; anything else is added to the lab interface.
    if [ -n "${EDGESTICK_IF:-}" ]; then
        ensure_addr "$EDGESTICK_IF" "$addr" "$EDGESTICK_PREFIX4"
    fi
    args+=(--bind "$bind" --name "$name")
done

run_service edgestick-backend "edgestick lab backend ($EDGESTICK_BACKENDS)" \
    "$PY" -m edgestick.lab.backend "${args[@]}"
