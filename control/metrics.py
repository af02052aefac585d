"""Prometheus metrics of the XDP shield, read from the BPF maps at scrape time.

A custom collector on a private registry: no polling thread, no python_*/process_*
series. Labels stay low-cardinality (interface, verdict, reason, map); a source address
is never a label: the busiest sources are on the runtime API (`show sources`).

The program's counters are shared by every interface it is attached to, so the
`interface` label of a counter names all of them, comma-separated.
"""
from __future__ import annotations

from prometheus_client import start_http_server
from prometheus_client.core import CollectorRegistry, CounterMetricFamily, GaugeMetricFamily

VERDICTS = ("pass", "drop", "would_drop")
# Drop reasons as labels (the allow/none/non_ip reasons never drop).
DROP_REASONS = ("deny", "ban", "conn_rate", "pkt_rate", "byte_rate", "flood", "malformed")


class ShieldCollector:
    """Collects from a Shield (control/shield.py): `counters()`, `bans_active()`,
    `sources_tracked()`, `capacities()`, `attachments()`."""

    def __init__(self, shield):
        self.shield = shield

    def collect(self):
        s = self.shield
        ifaces = ",".join(name for name, _, _ in s.attachments())
        counters = s.counters()          # {(verdict, reason): (packets, bytes)}
        packets = CounterMetricFamily("edgestick_xdp_packets", "Packets seen by the XDP shield, by verdict",
                                      labels=["interface", "verdict"])
        nbytes = CounterMetricFamily("edgestick_xdp_bytes", "Frame bytes seen by the XDP shield, by verdict",
                                     labels=["interface", "verdict"])
        drops = CounterMetricFamily("edgestick_xdp_drops", "Packets dropped, by reason",
                                    labels=["interface", "reason"])
        would = CounterMetricFamily("edgestick_xdp_would_drops",
                                    "Packets dry-run mode passed but would have dropped, by reason",
                                    labels=["interface", "reason"])
        for verdict in VERDICTS:
            p = sum(v[0] for (vd, _), v in counters.items() if vd == verdict)
            b = sum(v[1] for (vd, _), v in counters.items() if vd == verdict)
            packets.add_metric([ifaces, verdict], p)
            nbytes.add_metric([ifaces, verdict], b)
        for reason in DROP_REASONS:
            drops.add_metric([ifaces, reason], counters.get(("drop", reason), (0, 0))[0])
            would.add_metric([ifaces, reason], counters.get(("would_drop", reason), (0, 0))[0])
        yield packets
        yield nbytes
        yield drops
        yield would
        yield GaugeMetricFamily("edgestick_xdp_bans_active", "Sources banned right now",
                                value=s.bans_active())
        yield GaugeMetricFamily("edgestick_xdp_sources_tracked",
                                "Sources seen within the table's expire", value=s.sources_tracked())
        capacity = GaugeMetricFamily("edgestick_xdp_map_capacity", "Maximum entries of each BPF map",
                                     labels=["map"])
        for name, size in sorted(s.capacities().items()):
            capacity.add_metric([name], size)
        yield capacity
        info = GaugeMetricFamily("edgestick_xdp_program_info", "The attached XDP program (always 1)",
                                 labels=["interface", "mode", "prog_id"])
        for name, mode, prog_id in s.attachments():
            info.add_metric([name, mode, str(prog_id)], 1)
        yield info


def serve(shield, addr: str, port: int):
    """Start the endpoint; returns (server, thread): `server.shutdown()` stops it."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ShieldCollector(shield))
    return start_http_server(port, addr=addr, registry=registry)
