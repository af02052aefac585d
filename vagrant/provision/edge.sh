#!/usr/bin/env bash
# Edge role: `edgestick run` (proxy + XDP shield) with vagrant/edge.cfg.
#   EDGESTICK_OUTSIDE_ADDR4  the edge's outside address (finds the shield's interface)
#   EDGESTICK_INSIDE_ADDR4   its inside address, towards the backends (checked to be here)
#   EDGESTICK_CONFIG         the template (default vagrant/edge.cfg); @OUTSIDE_IF@,
#                            @RUN_DIR@ and @PIN_DIR@ are filled in for this host
#   EDGESTICK_PIN_DIR        the shield's bpffs folder (default /sys/fs/bpf/edgestick/edge)
#   EDGESTICK_INSIDE_ADDR6   its inside IPv6 address, added when missing
#   EDGESTICK_SPOOF_NETS     the attacker's spoofing ranges: routed nowhere, so the edge's
#                            SYN-ACKs to spoofed sources die here instead of leaving by a
#                            VM's default route (the NAT network, and beyond)
# On a VM the repo's systemd/edgestick.service runs it; with EDGESTICK_NO_SYSTEMD=1 it
# runs here, in the foreground.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

OUTSIDE_IF=$(iface_of "${EDGESTICK_OUTSIDE_ADDR4:?EDGESTICK_OUTSIDE_ADDR4 must be set}")
iface_of "${EDGESTICK_INSIDE_ADDR4:?EDGESTICK_INSIDE_ADDR4 must be set}" >/dev/null
EDGESTICK_CONFIG=${EDGESTICK_CONFIG:-$EDGESTICK_REPO/vagrant/edge.cfg}
EDGESTICK_PIN_DIR=${EDGESTICK_PIN_DIR:-/sys/fs/bpf/edgestick/edge}

mkdir -p "$EDGESTICK_ETC" "$EDGESTICK_RUN_DIR"
CFG=$EDGESTICK_ETC/edgestick.cfg
sed -e "s|@OUTSIDE_IF@|$OUTSIDE_IF|g" -e "s|@RUN_DIR@|$EDGESTICK_RUN_DIR|g" \
    -e "s|@PIN_DIR@|$EDGESTICK_PIN_DIR|g" "$EDGESTICK_CONFIG" > "$CFG.new"
if grep -n '@[A-Z_]*@' "$CFG.new" >&2; then
    log "$EDGESTICK_CONFIG: placeholders left unfilled (above)"; exit 2
fi
mv "$CFG.new" "$CFG"
log "configuration $CFG (shield on $OUTSIDE_IF)"
# A configuration error stops provisioning here, with file:line, not in a restart loop:
# the proxy checks its sections, the shield's parser its own.
"$EDGESTICK_VENV/bin/edgestick" proxy -c -f "$CFG" >&2
"$PY" -c 'import sys; from edgestick.control import config; config.load(sys.argv[1])' "$CFG"
if [ -n "${EDGESTICK_INSIDE_ADDR6:-}" ]; then
    ensure_addr "$(iface_of "$EDGESTICK_INSIDE_ADDR4")" "$EDGESTICK_INSIDE_ADDR6" "$EDGESTICK_PREFIX6"
fi

for net in ${EDGESTICK_SPOOF_NETS:-}; do
    ip route replace unreachable "$net"
done
if [ -n "${EDGESTICK_SPOOF_NETS:-}" ]; then
    # Reverse-path filtering would drop the spoofed packets before the TCP stack (they have
    # no route back now); the lab measures what reaches the proxy, as on an edge whose
    # attackers spoof routable addresses. XDP sees every packet before this either way.
    sysctl -qw net.ipv4.conf.all.rp_filter=0 "net.ipv4.conf.$OUTSIDE_IF.rp_filter=0"
    log "spoofing ranges routed nowhere: $EDGESTICK_SPOOF_NETS"
fi

if [ "$EDGESTICK_NO_SYSTEMD" = 1 ]; then
    log "running edgestick run -f $CFG in the foreground"
    exec "$EDGESTICK_VENV/bin/edgestick" run -f "$CFG"
fi
# The repo's one-unit deployment (systemd/edgestick.service runs `edgestick run`); the
# units expect /usr/local/bin/edgestick and /etc/edgestick/edgestick.cfg.
ln -sfn "$EDGESTICK_VENV/bin/edgestick" /usr/local/bin/edgestick
install -m 644 "$EDGESTICK_REPO"/systemd/*.service /etc/systemd/system/
if [ "$CFG" != /etc/edgestick/edgestick.cfg ]; then
    sed -i "s|/etc/edgestick/edgestick.cfg|$CFG|g" /etc/systemd/system/edgestick*.service
fi
systemctl daemon-reload
systemctl enable edgestick.service >/dev/null 2>&1
systemctl restart edgestick.service
log "edgestick.service started"
