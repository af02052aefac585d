"""`edgestick top`: a live terminal view of the top sources, one story per source.

    edgestick top [-S proxy.sock] [--shield shield.sock] [--table NAME] [-n N]
                  [--by conn_rate|pkt_rate|byte_rate|drops] [--interval S] [--once]

Each frame joins, per source address, the shield's XDP counters (`show sources top N`)
with the proxy's HTTP counters (`show table NAME`), marks banned sources (`show bans`),
and heads them with the shield's packets by verdict and drops by reason (`show shield`)
and each frontend's responses and denials (`show stat`: 2xx, 4xx, and `dreq`, the
requests the deny rules refused with their 403/429). Either socket alone is enough; the
proxy socket may be a real HAProxy's. IPv6: the shield counts per prefix (/64 by
default), so each proxy address shows its prefix's XDP counters and ban. The screen is redrawn with ANSI escapes (no
curses); `--once` prints one plain frame for scripts and tests.
"""
from __future__ import annotations

import argparse
import ipaddress
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass, field

from edgestick.control.runtime_client import (DumpError, RuntimeApiError, RuntimeClient,
                                              TableEntry, parse_table_dump)

DEFAULT_PROXY_SOCKET = "/run/edgestick/proxy.sock"
DEFAULT_SHIELD_SOCKET = "/run/edgestick/shield.sock"
ORDERS = ("conn_rate", "pkt_rate", "byte_rate", "drops")
CLEAR = "\x1b[H\x1b[2J"
BOLD, RESET = "\x1b[1m", "\x1b[0m"


# ---- what the sockets say ---------------------------------------------------------------

@dataclass
class XdpSource:
    key: str
    period_ms: int
    conn_rate: int = 0
    pkt_rate: int = 0
    byte_rate: int = 0
    drops: int = 0


@dataclass
class ShieldView:
    name: str = ""
    mode: str = ""
    interfaces: list[str] = field(default_factory=list)        # "ext0 attach=xdp"
    maps: dict[str, tuple[int, int]] = field(default_factory=dict)   # name -> (used, size)
    packets: dict[str, int] = field(default_factory=dict)     # verdict -> packets
    drops: dict[str, int] = field(default_factory=dict)       # reason -> packets dropped
    tracked: int = 0
    sources: list[XdpSource] = field(default_factory=list)
    bans: dict[str, str] = field(default_factory=dict)        # source -> "reason/time left"


@dataclass
class Frontend:
    name: str
    requests: int = 0
    hrsp: dict[str, int] = field(default_factory=dict)       # "2xx" -> count
    denied: int = 0


@dataclass
class ProxyView:
    table: str = ""
    table_used: int = 0
    table_size: int = 0
    tables: list[str] = field(default_factory=list)
    entries: list[TableEntry] = field(default_factory=list)
    frontends: list[Frontend] = field(default_factory=list)


_KV = re.compile(r"(\w+)(?:\((\d+)\))?=(\S*)")


def _kv(text: str) -> dict[str, str]:
    return {m[1]: m[3] for m in _KV.finditer(text)}


def _int(text: str | None) -> int:
    try:
        return int(text or 0)
    except ValueError:
        return 0


def parse_show_shield(text: str, view: ShieldView) -> None:
    for line in text.splitlines():
        key, _, rest = line.partition(": ")
        if key == "shield":
            view.name = rest
        elif key == "mode":
            view.mode = rest
        elif key == "interface":
            name, _, attrs = rest.partition(" ")
            view.interfaces.append(f"{name} {_kv(attrs).get('attach', '')}".strip())
        elif key == "map":
            name, _, attrs = rest.partition(" ")
            kv = _kv(attrs)
            view.maps[name] = (_int(kv.get("used")), _int(kv.get("size")))
        elif key == "counter":
            verdict, _, attrs = rest.partition(" ")
            kv = _kv(attrs)
            packets = _int(kv.get("packets"))
            view.packets[verdict] = view.packets.get(verdict, 0) + packets
            if verdict != "pass":
                reason = kv.get("reason", "?")
                label = reason if verdict == "drop" else f"{reason}({verdict})"
                view.drops[label] = view.drops.get(label, 0) + packets


def parse_show_sources(text: str, view: ShieldView) -> None:
    for line in text.splitlines():
        if line.startswith("# sources:"):
            view.tracked = _int(_kv(line).get("tracked"))
            continue
        if not line.startswith("key="):
            continue
        src = XdpSource(key=line.split()[0][4:], period_ms=0)
        for m in _KV.finditer(line):
            name, period, value = m[1], m[2], m[3]
            if name in ("conn_rate", "pkt_rate", "byte_rate", "drops"):
                setattr(src, name, _int(value))
                if period:
                    src.period_ms = int(period)
        view.sources.append(src)


def parse_show_bans(text: str, view: ShieldView) -> None:
    for line in text.splitlines():
        if line.startswith("key="):
            kv = _kv(line)
            exp = kv.get("exp", "-")
            left = "forever" if exp == "-" else f"{_int(exp) // 1000}s"
            view.bans[line.split()[0][4:]] = f"{kv.get('reason', 'ban')}/{left}"   # one word


def parse_show_stat(text: str) -> list[Frontend]:
    """FRONTEND rows of `show stat` (HAProxy's CSV, header line `# pxname,svname,...`)."""
    lines = text.splitlines()
    if not lines or not lines[0].startswith("# pxname"):
        return []
    header = lines[0][2:].split(",")
    out = []
    for line in lines[1:]:
        row = dict(zip(header, line.split(",")))
        if row.get("svname") != "FRONTEND":
            continue
        out.append(Frontend(row["pxname"], requests=_int(row.get("req_tot")),
                            hrsp={c: _int(row.get(f"hrsp_{c}")) for c in ("2xx", "4xx", "5xx")},
                            denied=_int(row.get("dreq"))))
    return out


def _rate_sort_key(entry: TableEntry) -> tuple:
    rates = [v for k, v in entry.data.items() if "_rate" in k and not k.startswith("xdp_")
             and isinstance(v, int)]
    counts = [v for v in entry.data.values() if isinstance(v, int)]
    return (-(rates[0] if rates else 0), -sum(counts), entry.key)


# ---- one snapshot -------------------------------------------------------------------------

@dataclass
class Snapshot:
    shield: ShieldView | None = None
    proxy: ProxyView | None = None
    problems: list[str] = field(default_factory=list)
    at: float = 0.0


def collect(proxy: RuntimeClient | None, shield: RuntimeClient | None, top: int, by: str,
            table: str | None) -> Snapshot:
    snap = Snapshot(at=time.time())
    if shield is not None:
        try:
            view = ShieldView()
            parse_show_shield(shield.command("show shield"), view)
            parse_show_sources(shield.command(f"show sources top {top} by {by}"), view)
            parse_show_bans(shield.command("show bans"), view)
            snap.shield = view
        except RuntimeApiError as e:
            snap.problems.append(f"shield: {e}")
    if proxy is not None:
        try:
            snap.proxy = _collect_proxy(proxy, top, table, snap.problems)
        except RuntimeApiError as e:
            snap.problems.append(f"proxy: {e}")
        except DumpError as e:
            snap.problems.append(f"proxy: show table: {e}")
    return snap


def _collect_proxy(proxy: RuntimeClient, top: int, table: str | None,
                   problems: list[str]) -> ProxyView:
    view = ProxyView()
    headers, _ = parse_table_dump(proxy.command("show table"))
    view.tables = [h.name for h in headers]
    chosen = next((h for h in headers if h.name == table), None) if table else \
        next((h for h in headers if h.type in ("ip", "ipv6") and h.used), None) or \
        next((h for h in headers if h.type in ("ip", "ipv6")), None)
    if table and chosen is None:
        problems.append(f"proxy: no table '{table}' (tables: {', '.join(view.tables) or 'none'})")
    if chosen is not None:
        view.table, view.table_used, view.table_size = chosen.name, chosen.used, chosen.size
        _, entries = parse_table_dump(proxy.command(f"show table {chosen.name}"))
        view.entries = sorted(entries, key=_rate_sort_key)[:top]
    view.frontends = parse_show_stat(proxy.command("show stat"))
    return view


# ---- rendering -----------------------------------------------------------------------------

def _human(n: int) -> str:
    """Short counts: exact below 10,000, then 12.3k / 4.5M / 1.2G."""
    for unit, size, start in (("G", 10**9, 10**9), ("M", 10**6, 10**6), ("k", 10**3, 10**4)):
        if abs(n) >= start:
            return f"{n / size:.1f}{unit}"
    return str(n)


def _period(ms: int) -> str:
    return f"{ms // 1000}s" if ms and ms % 1000 == 0 else f"{ms}ms"


def _ipv6_group(key: str, prefixes: set[int], groups) -> str | None:
    """The shield's key ("fd00:18:1:5::/64") for a proxy entry's IPv6 address, if listed."""
    if ":" not in key or "/" in key:
        return None
    for plen in prefixes:
        try:
            group = str(ipaddress.ip_network((key, plen), strict=False))
        except ValueError:
            return None
        if group in groups:
            return group
    return None


def join_sources(sh: ShieldView | None, px: ProxyView | None):
    """Rows {source: (XDP counters, HTTP entry)} in the shield's order, then the proxy's,
    and bans {source: "reason/left"}. The shield counts IPv6 per prefix: a proxy entry's
    address takes its prefix's counters and ban, in the prefix's place."""
    shield_rows = {s.key: s for s in (sh.sources if sh else ())}
    bans = dict(sh.bans) if sh else {}
    listed = shield_rows.keys() | bans.keys()
    prefixes = {int(k.rsplit("/", 1)[1]) for k in listed if ":" in k and "/" in k}
    members: dict[str, list[TableEntry]] = {}     # shield key -> the proxy entries it counts
    for e in px.entries if px else ():
        group = (_ipv6_group(e.key, prefixes, listed) if prefixes else None) or e.key
        members.setdefault(group, []).append(e)
    for group, entries in members.items():        # a prefix's ban shows on its members' rows
        if group in bans and any(e.key != group for e in entries):
            ban = bans.pop(group)
            for e in entries:
                bans[e.key] = ban
    rows: dict[str, tuple[XdpSource | None, TableEntry | None]] = {}
    for key, s in shield_rows.items():
        for e in members.pop(key, None) or [None]:
            rows[e.key if e else key] = (s, e)
    for entries in members.values():              # sources the shield did not list
        for e in entries:
            rows[e.key] = (None, e)
    return rows, bans


def render(snap: Snapshot, by: str = "conn_rate", width: int = 120, color: bool = False) -> str:
    b, r = (BOLD, RESET) if color else ("", "")
    out = [f"{b}edgestick top{r}  {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(snap.at))}"]
    sh, px = snap.shield, snap.proxy
    if sh is not None:
        used, size = sh.maps.get("sources", (sh.tracked, 0))
        out.append(f"shield {sh.name or '-'} ({sh.mode or '-'}) on {', '.join(sh.interfaces) or '-'}: "
                   f"sources {used}/{size}  bans {len(sh.bans)}  packets "
                   + " ".join(f"{v}={_human(n)}" for v, n in sorted(sh.packets.items())))
        drops = " ".join(f"{k}={_human(n)}" for k, n in sorted(sh.drops.items(), key=lambda kv: -kv[1]))
        out.append(f"  XDP drops by reason: {drops or 'none'}")
    if px is not None:
        for fe in px.frontends:
            out.append(f"frontend {fe.name}: requests {fe.requests}  2xx {fe.hrsp.get('2xx', 0)}  "
                       f"4xx {fe.hrsp.get('4xx', 0)}  5xx {fe.hrsp.get('5xx', 0)}  "
                       f"denied (403/429) {fe.denied}")
        if px.table:
            out.append(f"table {px.table}: used {px.table_used}/{px.table_size}")
        elif not any(p.startswith("proxy: no table") for p in snap.problems):
            out.append(f"table: none of type ip/ipv6 (tables: {', '.join(px.tables) or 'none'})")
    out += [f"! {p}" for p in snap.problems]

    # The joined rows: every source either side reports, the shield's order first.
    rows, bans = join_sources(sh, px)
    http_cols: list[str] = []
    for _, e in rows.values():
        for name in e.data if e else ():
            if name not in http_cols and not (sh is not None and name.startswith("xdp_")):
                http_cols.append(name)
    period = next((s.period_ms for s in (sh.sources if sh else ()) if s.period_ms), 0)
    xdp_cols = [f"conn/{_period(period)}", f"pkt/{_period(period)}", f"B/{_period(period)}", "drops"] \
        if sh is not None else []
    # "http_req_rate(10000)" reads better as "http_req_rate(10s)"
    names = [re.sub(r"\((\d+)\)$", lambda m: f"({_period(int(m[1]))})", c) for c in http_cols]
    header = ["source", *xdp_cols, *(["ban"] if sh is not None else []), *names]
    table = [header]
    for key, (s, e) in rows.items():
        row = [key]
        if sh is not None:
            row += [_human(s.conn_rate), _human(s.pkt_rate), _human(s.byte_rate), _human(s.drops)] \
                if s else ["-"] * 4
            row.append(bans.get(key, "-"))
        row += [str(e.data.get(c, "-")) if e else "-" for c in http_cols]
        table.append(row)
    for key, ban in bans.items():
        if key not in rows:                  # banned, quiet now: still worth a line
            table.append([key, *["-"] * len(xdp_cols), ban, *["-"] * len(http_cols)])
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    out.append("")
    for n, row in enumerate(table):
        line = "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
        line = line[:width].rstrip()
        out.append(f"{b}{line}{r}" if n == 0 else line)
    if len(table) == 1:
        out.append("(no sources)")
    return "\n".join(out) + "\n"


# ---- command ---------------------------------------------------------------------------------

def _client(path: str | None, default: str, what: str) -> tuple[RuntimeClient | None, str | None]:
    """A client for an explicit address, or for the default path when it exists."""
    if path is None:
        if not os.path.exists(default):
            return None, None
        path = default
    try:
        return RuntimeClient(path, timeout=2.0), None
    except ValueError as e:
        return None, f"{what}: {e}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="edgestick top", description=__doc__.split("\n\n")[0])
    p.add_argument("-S", "--socket", dest="proxy",
                   help=f"the proxy's (or HAProxy's) stats socket (default {DEFAULT_PROXY_SOCKET} if it exists)")
    p.add_argument("--shield", help=f"the shield's runtime socket (default {DEFAULT_SHIELD_SOCKET} if it exists)")
    p.add_argument("--table", help="the proxy stick table to join (default: the first ip table in use)")
    p.add_argument("-n", type=int, default=20, help="sources per side (default 20)")
    p.add_argument("--by", choices=ORDERS, default="conn_rate", help="shield order (default conn_rate)")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between frames (default 1)")
    p.add_argument("--once", action="store_true", help="print one frame, without screen control, and exit")
    a = p.parse_args(sys.argv[1:] if argv is None else argv)
    if a.n <= 0 or a.interval <= 0:
        p.error("-n and --interval must be positive")

    proxy, err1 = _client(a.proxy, DEFAULT_PROXY_SOCKET, "proxy")
    shield, err2 = _client(a.shield, DEFAULT_SHIELD_SOCKET, "shield")
    for err in (err1, err2):
        if err:
            print(f"edgestick top: {err}", file=sys.stderr)
            return 2
    if proxy is None and shield is None:
        print(f"edgestick top: no socket: give -S and/or --shield (none at {DEFAULT_PROXY_SOCKET}, "
              f"{DEFAULT_SHIELD_SOCKET})", file=sys.stderr)
        return 2

    if a.once:
        snap = collect(proxy, shield, a.n, a.by, a.table)
        sys.stdout.write(render(snap, a.by, width=10_000))
        return 0 if snap.shield is not None or snap.proxy is not None else 1
    color = sys.stdout.isatty()
    try:
        while True:
            snap = collect(proxy, shield, a.n, a.by, a.table)
            size = shutil.get_terminal_size((120, 40))
            lines = render(snap, a.by, size.columns, color).splitlines()
            if len(lines) > size.lines - 1:      # a frame taller than the screen would scroll
                lines = lines[:size.lines - 2] + [f"... {len(lines) - size.lines + 2} more (-n)"]
            sys.stdout.write(CLEAR + "\n".join(lines) + "\n")
            sys.stdout.flush()
            time.sleep(a.interval)
    except KeyboardInterrupt:
        sys.stdout.write("\n")
        return 0


if __name__ == "__main__":
    sys.exit(main())
