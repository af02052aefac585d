# Sourced by attacker.sh and client.sh after common.sh: make the scenario runner ready.
# The runner and the scapy layers the floods build frames with import here (scapy writes
# its cache on the first import: paid now, not in the first flood).
"$PY" -c 'import edgestick.lab.scenarios, scapy.layers.l2, scapy.layers.inet, scapy.layers.inet6'
if [ "$EDGESTICK_NO_SYSTEMD" != 1 ]; then
    # On a VM: `edgestick-scenario NAME --target ...` for vagrant/run-scenarios.sh.
    cat > /usr/local/bin/edgestick-scenario <<WRAP
#!/bin/sh
exec "$PY" -m edgestick.lab.scenarios "\$@"
WRAP
    chmod 755 /usr/local/bin/edgestick-scenario
fi
log "scenario runner ready: $PY -m edgestick.lab.scenarios"
