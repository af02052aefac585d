#!/usr/bin/env bash
# Shared first step of every role's provisioning, sourced by attacker.sh, client.sh,
# edge.sh and backend.sh. The same scripts provision the Vagrant VMs and the hosts of
# the network-namespace lab (lab/provision.py), so everything here is a parameter:
#
#   EDGESTICK_ROLE        attacker | client | edge | backend                  (required)
#   EDGESTICK_REPO        the repository (default: two folders above this script)
#   EDGESTICK_VENV        the venv scripts/setup-host.sh builds (default $EDGESTICK_REPO/.venv)
#   EDGESTICK_ADDR4       this host's address on its lab network (finds the interface)
#   EDGESTICK_ADDR6       its IPv6 address, added to that interface when missing
#   EDGESTICK_PREFIX4/6   prefix lengths (24 / 64)
#   EDGESTICK_ETC         where rendered configuration goes (default /etc/edgestick)
#   EDGESTICK_RUN_DIR     runtime sockets (default /run/edgestick)
#   EDGESTICK_NO_SYSTEMD  1: no systemd units; a role's service runs in the foreground
#                         instead (exec), so whoever started the script supervises it
#                         (the lab tracks it and destroy() kills it)
set -euo pipefail

: "${EDGESTICK_ROLE:?EDGESTICK_ROLE must be attacker, client, edge or backend}"
case "$EDGESTICK_ROLE" in
    attacker|client|edge|backend) ;;
    *) echo "provision: unknown role '$EDGESTICK_ROLE'" >&2; exit 2 ;;
esac
PROVISION_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
EDGESTICK_REPO=${EDGESTICK_REPO:-$(cd "$PROVISION_DIR/../.." && pwd)}
EDGESTICK_VENV=${EDGESTICK_VENV:-$EDGESTICK_REPO/.venv}
EDGESTICK_PREFIX4=${EDGESTICK_PREFIX4:-24}
EDGESTICK_PREFIX6=${EDGESTICK_PREFIX6:-64}
EDGESTICK_ETC=${EDGESTICK_ETC:-/etc/edgestick}
EDGESTICK_RUN_DIR=${EDGESTICK_RUN_DIR:-/run/edgestick}
EDGESTICK_NO_SYSTEMD=${EDGESTICK_NO_SYSTEMD:-0}
PY=$EDGESTICK_VENV/bin/python

log() { echo "provision[$EDGESTICK_ROLE]: $*" >&2; }

# The interface that holds an IPv4 address (VM interface names differ by provider).
iface_of() {
    local dev
    dev=$(ip -o -4 addr show | awk -v a="$1" '{split($4, p, "/"); if (p[1] == a) {print $2; exit}}')
    [ -n "$dev" ] || { log "no interface has address $1"; return 1; }
    echo "$dev"
}

# Add an address unless it is there already (idempotent; NODAD: usable at once).
ensure_addr() {
    local dev=$1 addr=$2 plen=$3
    if ! ip -o addr show dev "$dev" | awk '{split($4, p, "/"); print p[1]}' | grep -qxF "$addr"; then
        if [[ $addr == *:* ]]; then
            ip addr add "$addr/$plen" dev "$dev" nodad
        else
            ip addr add "$addr/$plen" dev "$dev"
        fi
        log "added $addr/$plen on $dev"
    fi
}

# Run a long-lived service: a systemd unit on a VM, the foreground in the lab.
#   run_service NAME DESCRIPTION ARGV...
run_service() {
    local name=$1 description=$2; shift 2
    if [ "$EDGESTICK_NO_SYSTEMD" = 1 ]; then
        log "running $name in the foreground: $*"
        exec "$@"
    fi
    local args="" a
    for a in "$@"; do args+=" $(printf '%q' "$a")"; done
    cat > "/etc/systemd/system/$name.service" <<UNIT
[Unit]
Description=$description
After=network-online.target
Wants=network-online.target

[Service]
ExecStart=${args# }
Restart=on-failure
RestartSec=1

[Install]
WantedBy=multi-user.target
UNIT
    systemctl daemon-reload
    systemctl enable "$name.service" >/dev/null 2>&1
    systemctl restart "$name.service"
    log "systemd unit $name.service started"
}

# Packages, bpffs, bcc headers and the venv: the host set-up every edgestick machine runs
# (idempotent; seconds on a second run).
log "host set-up (scripts/setup-host.sh $EDGESTICK_VENV)"
bash "$EDGESTICK_REPO/scripts/setup-host.sh" "$EDGESTICK_VENV"

if [ -n "${EDGESTICK_ADDR4:-}" ]; then
    EDGESTICK_IF=${EDGESTICK_IF:-$(iface_of "$EDGESTICK_ADDR4")}
    ip link set dev "$EDGESTICK_IF" up
    if [ -n "${EDGESTICK_ADDR6:-}" ]; then
        ensure_addr "$EDGESTICK_IF" "$EDGESTICK_ADDR6" "$EDGESTICK_PREFIX6"
    fi
fi
