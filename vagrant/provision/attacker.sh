#!/usr/bin/env bash
# Attacker role: the scenario runner (lab/scenarios.py) and the real extra source
# addresses the HTTP request flood binds.
#   EDGESTICK_EXTRA_ADDRS  "ADDR ..." more addresses on the lab interface (198.18.0.67-70)
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

for addr in ${EDGESTICK_EXTRA_ADDRS:-}; do
    ensure_addr "${EDGESTICK_IF:?EDGESTICK_ADDR4 or EDGESTICK_IF must name the lab interface}" \
        "$addr" "$EDGESTICK_PREFIX4"
done
. "$PROVISION_DIR/scenario-runner.sh"
