# Sourced by attacker.sh and client.sh after common.sh: make the scenario runner ready.
# scapy writes its cache on the first import (2 s): pay it now, not in the first flood.
"$PY" -c 'import scapy.all, edgestick.lab.scenarios' >/dev/null
"$PY" -m edgestick.lab.scenarios --help >/dev/null
if [ "$EDGESTICK_NO_SYSTEMD" != 1 ]; then
    # On a VM: `edgestick-scenario NAME --target ...` for vagrant/run-scenarios.sh.
    cat > /usr/local/bin/edgestick-scenario <<WRAP
#!/bin/sh
exec "$PY" -m edgestick.lab.scenarios "\$@"
WRAP
    chmod 755 /usr/local/bin/edgestick-scenario
fi
log "scenario runner ready: $PY -m edgestick.lab.scenarios"
