"""Mirror and escalation: one story per source across the XDP shield and the proxy.

Both run in the shield daemon, one cycle a second (`Bridge(config, shield).run(stop)`),
and reach the proxy only through its runtime API, so the proxy may be `edgestick proxy`
or a real HAProxy 2.6.

**Mirror** (`mirror <table> [store ...]`) writes each worthwhile source's XDP counters
into the proxy's stick table with `set table <t> key <src> data.<type> <v> ...`, so
`show table` shows packet-level and HTTP-level counters side by side and ACLs can use
both. Against edgestick the values land in native data types (`xdp_conn_rate`,
`xdp_pkt_rate`, `xdp_byte_rate`, `xdp_drops`); against HAProxy in the gpt/gpc slots the
`store` list names (`store gpt0=xdp_conn_rate,gpc1=xdp_drops`).

**Escalation** (`escalate <table> ban <ttl> if { <type> <op> <v> }`) asks the proxy
`show table <t> data.<type> <op> <v>` each cycle and bans every source listed at XDP for
the TTL (logged once per ban; the ban ends by expiry; an active ban is left alone).

**Fleet bans** (`share-bans <table>`) spread the shield's bans to every edge through a
stick table the proxies replicate with the peers protocol (`table bans type ip size 1m
expire 10m store gpt0` in a `peers` section): each cycle the bridge writes every new
local ban into it (`set table <t> key <src> data.gpt0 <end of the ban, unix time in s>`,
0 = no end of its own) and bans at XDP the entries it has not seen yet, until the
entry's expiry or gpt0's end, whichever comes first (edges need synchronised clocks). A ban learned from the table is
never written back (that would refresh the entry for ever); an entry whose expiry moves
forward was written again by some edge (a new ban there) and is learned again.

How a cycle scales to a million tracked sources
-----------------------------------------------
Sending every source every second would be a million `set table` lines a second, and
a million entries in the proxy's table. Only two kinds of source are worth it:

* sources the proxy already has (they made HTTP requests): their entry gains the XDP
  view. Membership comes from one `show table <t>` dump per sweep of the map (below),
  which also gives the values already written, so a source is only written when a value
  changed;
* sources over a fraction (`HOT_FRACTION`, 1/2) of one of the shield's thresholds, or
  being dropped: the flooders an operator wants to see, at most `MAX_NEW_PER_CYCLE` of
  them a cycle, the worst first, so a spoofed flood cannot flush the proxy's table.

The XDP map is read with BPF_MAP_LOOKUP_BATCH (64k entries a syscall) into one buffer,
and a cheap pre-filter (curr+prev of each rate is an upper bound of its value) keeps the
Python work per uninteresting entry to one struct unpack. A cycle reads at most
`SCAN_BUDGET` entries (256k, about 0.1 s of one core), resuming where the previous cycle
stopped: a map of 1M sources is swept every 4 cycles, one of up to 256k every cycle.
When a sweep ends, proxy entries whose source was not seen in it (evicted from the LRU)
get zeros once, so stale values do not linger. The cost per cycle is therefore
O(proxy table / cycles per sweep + scan budget + changed sources), never O(tracked
sources) in writes; bench/mirror.py measures it (docs/bridge.md has the numbers).

A `set table` refreshes the entry's expiry, and writing only on change is what lets an
idle source's entry expire: once its rates read 0 it is written once more, then left.
"""
from __future__ import annotations

import asyncio
import ctypes
import errno
import heapq
import ipaddress
import logging
import os
import socket
import struct
import threading
import time
from dataclasses import dataclass, field

from edgestick.control.config import FOREIGN_SECTIONS, MIRROR_COUNTERS
from edgestick.control.runtime_client import (
    DumpError, RuntimeApiError, RuntimeClient, Session, parse_table_dump)
from edgestick.freq_ctr import read_freq

log = logging.getLogger("edgestick.bridge")

CYCLE_S = 1.0
HOT_FRACTION = 0.5            # a source over half a threshold is mirrored even if unknown
MAX_NEW_PER_CYCLE = 1000      # sources written into the proxy table that it did not have
SCAN_BUDGET = 262_144         # XDP map entries read per cycle
BATCH = 65_536                # entries per BPF_MAP_LOOKUP_BATCH call

# struct es_addr holds an IPv4 source v4-mapped (::ffff:a.b.c.d), see bpf/edgestick.h.
V4_MAPPED = ipaddress.IPv6Address("::ffff:0.0.0.0").packed[:12]

# The shield counter behind each mirrored type; edgestick's proxy stores the types natively.
_FIELD = {"xdp_conn_rate": "conn_rate", "xdp_pkt_rate": "pkt_rate",
          "xdp_byte_rate": "byte_rate", "xdp_drops": "drops"}
DEFAULT_STORE = {t: t for t in MIRROR_COUNTERS}


@dataclass(frozen=True)
class SourceCounters:
    source: str               # "a.b.c.d", or "2001:db8::/64" for IPv6 (per prefix)
    conn_rate: int
    pkt_rate: int
    byte_rate: int
    drops: int

    def value(self, xdp_type: str) -> int:
        return getattr(self, _FIELD[xdp_type])


ZERO = SourceCounters("", 0, 0, 0, 0)


@dataclass
class CycleReport:
    scanned: int = 0            # XDP map entries read this cycle
    sweep_done: bool = False
    proxy_entries: int = 0      # entries in the mirrored table(s)
    candidates: int = 0         # sources considered (members seen + hot)
    written: int = 0            # `set table` commands sent
    new: int = 0                # of which created entries
    banned: list[str] = field(default_factory=list)
    published: list[str] = field(default_factory=list)   # local bans written to the fleet table
    learned: list[str] = field(default_factory=list)     # fleet bans installed at XDP
    errors: list[str] = field(default_factory=list)
    scan_s: float = 0.0
    dump_s: float = 0.0
    write_s: float = 0.0
    total_s: float = 0.0


# --- reading the shield's sources map ----------------------------------------------------

class SourceScanner:
    """Resumable, batched scan of the shield's `sources` LRU hash.

    `scan(budget)` yields (keys buffer, values buffer, count) chunks of raw struct
    es_addr / es_source, about `budget` entries in all, continuing where the previous call
    stopped; `sweep_done` then says whether the end of the map was reached."""

    def __init__(self, shield):
        from edgestick.control import xdp
        self.xdp = xdp
        self.map = shield.maps["sources"]
        self.ksize = ctypes.sizeof(xdp.EsAddr)
        self.vsize = ctypes.sizeof(xdp.EsSource)
        self._cursor = ctypes.create_string_buffer(8)     # the kernel's batch token (a bucket)
        self._next = ctypes.create_string_buffer(8)
        self._started = False
        self._keys = ctypes.create_string_buffer(self.ksize * BATCH)
        self._values = ctypes.create_string_buffer(self.vsize * BATCH)
        lib = xdp.LIBBPF
        lib.bpf_map_lookup_batch.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p,
                                             ctypes.c_void_p, ctypes.c_void_p,
                                             ctypes.POINTER(ctypes.c_uint32), ctypes.c_void_p]
        self._batch = lib.bpf_map_lookup_batch
        self.batched = True

    def scan(self, budget: int):
        """Yield (keys buffer, values buffer, count) chunks; sets self.sweep_done."""
        self.sweep_done = False
        left = budget
        while left > 0:
            if not self.batched:
                yield from self._scan_slow()
                return
            want = min(BATCH, max(left, 256))   # whole hash buckets: never ask for a handful
            count = ctypes.c_uint32(want)
            rc = self._batch(self.map.fd, self._cursor if self._started else None, self._next,
                             self._keys, self._values, ctypes.byref(count), None)
            code = ctypes.get_errno() if rc < 0 else 0
            if rc < 0 and code in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP) and not self._started:
                self.batched = False           # kernel without batch ops on this map type
                continue
            if rc < 0 and code == errno.ENOSPC and count.value == 0:
                return                         # the next bucket does not fit: next cycle
            if rc < 0 and code not in (errno.ENOENT,):
                raise OSError(code, f"batch lookup of the sources map: {errno.errorcode.get(code, code)}")
            n = count.value
            if n:
                yield self._keys, self._values, n
            left -= n
            if rc < 0:                         # ENOENT: the end of the map
                self._started = False
                self.sweep_done = True
                return
            ctypes.memmove(self._cursor, self._next, 8)
            self._started = True

    def _scan_slow(self):
        """Fallback: one get_next_key and one lookup per entry (whole map per sweep)."""
        keys = ctypes.create_string_buffer(self.ksize)
        values = ctypes.create_string_buffer(self.vsize)
        for key in self.map.keys():
            value = self.map.lookup(key)
            if value is None:
                continue
            ctypes.memmove(keys, ctypes.byref(key), self.ksize)
            ctypes.memmove(values, ctypes.byref(value), self.vsize)
            yield keys, values, 1
        self.sweep_done = True


def _row_struct(xdp) -> tuple[struct.Struct, tuple[str, ...]]:
    """A struct reading one es_source as a flat row: each rate's curr_tick, curr_ctr and
    prev_ctr (conn_*, pkt_*, bytes_*) and drops, at the offsets edgestick.h gives them."""
    src, freq = xdp.EsSource, xdp.EsFreq
    fields = []
    for name in ("conn", "pkt", "bytes"):
        base = getattr(src, name).offset
        for part in ("curr_tick", "curr_ctr", "prev_ctr"):
            fields.append((base + getattr(freq, part).offset, "I", f"{name}_{part}"))
    fields.append((src.drops.offset, "Q", "drops"))
    fields.sort()
    fmt, pos = "<", 0
    for offset, code, _ in fields:
        fmt += f"{offset - pos}x{code}" if offset > pos else code
        pos = offset + struct.calcsize("<" + code)
    fmt += f"{ctypes.sizeof(src) - pos}x"
    return struct.Struct(fmt), tuple(name for _, _, name in fields)


# --- the bridge --------------------------------------------------------------------------

def proxy_socket_from_global(path: str) -> str | None:
    """The first admin-level `stats socket` of the file's `global` section (the proxy's),
    so one configuration for `edgestick run` needs no second socket line."""
    from edgestick.cfgsyntax import read_file
    in_global, fallback = False, None
    for line in read_file(path):
        kw = line.words[0]
        if kw in FOREIGN_SECTIONS or kw == "shield":
            in_global = kw == "global"
            continue
        if in_global and kw == "stats" and len(line.words) >= 3 and line.words[1] == "socket":
            words = line.words
            level = words[words.index("level") + 1] if "level" in words[:-1] else "user"
            if level == "admin":
                return words[2]
            fallback = fallback or words[2]
    return fallback


@dataclass
class _MirrorState:
    table: str
    store: dict[str, str]                 # proxy data type -> xdp type
    members_seen: set[str] = field(default_factory=set)   # during the current sweep
    printed: dict[str, str] = field(default_factory=dict)  # data type -> name in dumps


def _printed_names(store: dict[str, str], entries) -> dict[str, str]:
    """How the dump prints each stored slot: rates carry their period, `gpc0_rate(1000)`."""
    if not entries:
        return {}
    names = entries[0].data
    out = {}
    for slot in store:
        if slot in names:
            out[slot] = slot
        else:
            out[slot] = next((n for n in names if n.startswith(slot + "(")), slot)
    return out


class Bridge:
    """Mirror and escalation for one shield. `Bridge(config, shield).run_forever()` or,
    inside the shield's event loop, `await Bridge(config, shield).run(stop_event)`."""

    def __init__(self, config, shield, proxy_socket: str | None = None, *,
                 period_s: float = CYCLE_S, hot_fraction: float = HOT_FRACTION,
                 max_new: int = MAX_NEW_PER_CYCLE, scan_budget: int = SCAN_BUDGET,
                 timeout: float = 5.0):
        self.config = config
        self.shield = shield
        address = proxy_socket or config.proxy_socket \
            or (proxy_socket_from_global(config.file) if os.path.isfile(config.file) else None)
        share = getattr(config, "share_bans", None)
        if not address and (config.mirrors or config.escalations or share):
            raise ValueError(f"shield '{config.name}': mirror/escalate/share-bans need the proxy's runtime socket: "
                             "add 'proxy-socket <path>' to the shield section or an admin "
                             "'stats socket' to the global section")
        self.client = RuntimeClient(address, timeout=timeout) if address else None
        self.period_s = period_s
        self.hot_fraction = hot_fraction
        self.max_new = max_new
        self.scan_budget = scan_budget
        self.mirrors = [_MirrorState(t, dict(config.mirror_store.get(t) or DEFAULT_STORE))
                        for t in config.mirrors]
        self.scanner = None
        if shield is not None:
            from edgestick.control import xdp
            self.xdp = xdp
            if self.mirrors:
                self.scanner = SourceScanner(shield)
                self._rows, self._row_names = _row_struct(xdp)
        self.bans: dict[str, float] = {}      # source -> monotonic time its ban ends
        # drop counters by raw map key, to tell a source dropped since the last sweep
        self._drops_before: dict[bytes, int] = {}
        self._drops_now: dict[bytes, int] = {}
        self._sweep_dumps = None              # the mirrored tables as dumped at sweep start
        self._down: str | None = None         # the proxy error being reported, once
        self._reported: set[str] = set()
        self.share = share
        self.fleet = _FleetState()
        self.totals = {"cycles": 0, "written": 0, "bans": 0, "errors": 0}
        self.last: CycleReport | None = None

    # -- one cycle --

    def cycle(self) -> CycleReport:
        report = CycleReport()
        t0 = time.perf_counter()
        try:
            if self.mirrors or self.config.escalations or self.share:
                with self.client.session() as session:
                    if self.mirrors:
                        self._mirror(session, report)
                    for rule in self.config.escalations:
                        self._escalate(session, rule, report)
                    if self.share:
                        self._share_bans(session, report)
            if self._down:
                log.warning("proxy runtime API %s is back", self.client.address)
                self._down = None
        except RuntimeApiError as e:
            report.errors.append(str(e))
            if self._down != str(e):
                log.warning("proxy runtime API unreachable, mirror/escalation paused: %s", e)
                self._down = str(e)
        report.total_s = time.perf_counter() - t0
        self.totals["cycles"] += 1
        self.totals["written"] += report.written
        self.totals["bans"] += len(report.banned)
        self.totals["errors"] += len(report.errors)
        self.last = report
        return report

    def _report_once(self, key: str, message: str, report: CycleReport) -> None:
        report.errors.append(message)
        if key not in self._reported:
            self._reported.add(key)
            log.error("%s", message)

    def _dump(self, session: Session, table: str, report: CycleReport, use: str, filters: str = ""):
        """`show table` of an ip or ipv6 table: (header, entries), or (None, []) after
        reporting (once) a failed dump or a table of another type. `use`: what it is
        for ("mirror", "escalate", "share-bans"), and what the report names."""
        t0 = time.perf_counter()
        reply = session.command(f"show table {table}" + (f" {filters}" if filters else ""))
        report.dump_s += time.perf_counter() - t0
        try:
            headers, entries = parse_table_dump(reply)
        except DumpError as e:
            self._report_once(f"dump:{table}:{e}", f"show table {table}: {e}", report)
            return None, []
        if not headers:
            self._report_once(f"dump:{table}", f"show table {table}: {reply.strip() or 'no reply'}", report)
            return None, []
        self._reported.discard(f"dump:{table}")
        header = headers[0]
        if header.type not in ("ip", "ipv6"):
            need = "mirroring needs" if use == "mirror" else "bans need"
            self._report_once(f"type:{table}", f"{use} {table}: the table's type is "
                              f"{header.type}; {need} an ip or ipv6 table", report)
            return None, []
        return header, entries

    # -- mirror --

    def read_sources(self, report: CycleReport, members: set[bytes]) -> list[SourceCounters]:
        """This cycle's worthwhile sources: proxy members (by raw map key) in the scanned
        part of the map, then hot sources (over a fraction of a threshold, or dropped since
        the last sweep), at most max_new of those, the worst first."""
        cfg = self.shield.get_config()
        period, prefix = cfg.period_ms, cfg.ipv6_prefix
        limits = {
            "conn": min(filter(None, (cfg.conn_rate_limit, cfg.ban_conn_rate)), default=None),
            "pkt": min(filter(None, (cfg.pkt_rate_limit, cfg.ban_pkt_rate)), default=None),
            "bytes": min(filter(None, (cfg.byte_rate_limit, cfg.ban_byte_rate)), default=None),
        }
        frac = self.hot_fraction
        # curr+prev bounds a rate from above: below these floors a source cannot be hot
        inf = float("inf")
        conn_floor, pkt_floor, bytes_floor = (limits[k] * frac if limits[k] else inf
                                              for k in ("conn", "pkt", "bytes"))
        rows, names = self._rows, self._row_names
        i_ct, i_cc, i_cp = (names.index(f"conn_{p}") for p in ("curr_tick", "curr_ctr", "prev_ctr"))
        i_pt, i_pc, i_pp = (names.index(f"pkt_{p}") for p in ("curr_tick", "curr_ctr", "prev_ctr"))
        i_bt, i_bc, i_bp = (names.index(f"bytes_{p}") for p in ("curr_tick", "curr_ctr", "prev_ctr"))
        i_dr = names.index("drops")
        ksize, vsize = self.scanner.ksize, self.scanner.vsize
        drops_before, drops_now = self._drops_before, self._drops_now
        now = self.xdp.now_tick_ms()      # the program's clock (the ms of bpf_ktime_get_ns)
        v4_head = V4_MAPPED

        def decode(raw: bytes, row) -> SourceCounters:
            if raw[:12] == v4_head:
                name = socket.inet_ntoa(raw[12:])
            else:
                name = str(ipaddress.ip_network((raw, prefix), strict=False))
            return SourceCounters(name, read_freq(row[i_ct], row[i_cc], row[i_cp], period, now),
                                  read_freq(row[i_pt], row[i_pc], row[i_pp], period, now),
                                  read_freq(row[i_bt], row[i_bc], row[i_bp], period, now), row[i_dr])

        out: list[SourceCounters] = []
        hot: list[tuple[float, int, SourceCounters]] = []
        seq = 0                            # tie-breaker: the heap never compares counters
        t0 = time.perf_counter()
        for keys, values, n in self.scanner.scan(self.scan_budget):
            report.scanned += n
            raw_keys = keys.raw
            for i, row in enumerate(rows.iter_unpack(memoryview(values)[:n * vsize])):
                raw = raw_keys[i * ksize:(i + 1) * ksize]
                if raw in members:
                    out.append(decode(raw, row))
                    continue
                drops = row[i_dr]
                if drops:
                    drops_now[raw] = drops
                    new_drops = drops != drops_before.get(raw)
                else:
                    new_drops = False
                if (not new_drops and row[i_cc] + row[i_cp] < conn_floor
                        and row[i_pc] + row[i_pp] < pkt_floor and row[i_bc] + row[i_bp] < bytes_floor):
                    continue
                c = decode(raw, row)
                score = max(c.conn_rate / limits["conn"] if limits["conn"] else 0,
                            c.pkt_rate / limits["pkt"] if limits["pkt"] else 0,
                            c.byte_rate / limits["bytes"] if limits["bytes"] else 0)
                if new_drops:
                    score = max(score, 1.0)
                elif score < frac:
                    continue
                seq -= 1
                item = (score, seq, c)
                if len(hot) < self.max_new:
                    heapq.heappush(hot, item)
                elif item > hot[0]:
                    heapq.heapreplace(hot, item)
        report.sweep_done = self.scanner.sweep_done
        if report.sweep_done:
            self._drops_before, self._drops_now = drops_now, {}
        report.scan_s = time.perf_counter() - t0
        out += [c for _, _, c in sorted(hot, reverse=True)]
        return out

    def _members(self, keys) -> tuple[set[bytes], dict[str, str]]:
        """The raw map keys (struct es_addr) of the proxy's keys, and for IPv6 keys the
        shield's source name (its /prefix) each one falls in."""
        raw: set[bytes] = set()
        v6_name: dict[str, str] = {}
        prefix = self.config.ipv6_prefix
        aton = socket.inet_aton
        for key in keys:
            if ":" not in key:
                try:
                    raw.add(V4_MAPPED + aton(key))
                except OSError:
                    pass
                continue
            try:
                net = ipaddress.ip_network((key, prefix), strict=False)
            except ValueError:
                continue
            raw.add(net.network_address.packed)
            v6_name[key] = str(net)
        return raw, v6_name

    def _dump_mirrored(self, session: Session, report: CycleReport):
        """Dump every mirrored table: ({table: (header, entries by key, IPv6 /prefix ->
        keys, IPv6 key -> /prefix)}, raw map keys of all the proxy's sources)."""
        dumps = {}
        members: set[bytes] = set()
        for m in self.mirrors:
            header, entries = self._dump(session, m.table, report, "mirror")
            if header is None:
                continue
            by_key = {e.key: e for e in entries}
            raw, v6_name = self._members(by_key)
            index: dict[str, list[str]] = {}
            for key, name in v6_name.items():
                index.setdefault(name, []).append(key)
            m.printed = _printed_names(m.store, entries)
            dumps[m.table] = (header, by_key, index, v6_name)
            members |= raw
        return dumps, members

    def _mirror(self, session: Session, report: CycleReport,
                sources: list[SourceCounters] | None = None, sweep_done: bool = False) -> None:
        """One mirror pass: read the worthwhile sources (or take `sources` as given, with
        `sweep_done` saying whether they cover the whole map) and write what changed.

        The tables are dumped once per sweep of the shield's map, when it starts: each
        source is met once in a sweep, so the dump's values are what it is compared with,
        and a large proxy table is parsed once per sweep rather than once per cycle."""
        if sources is not None:
            dumps, members = self._dump_mirrored(session, report)
        else:
            if self._sweep_dumps is None:
                self._sweep_dumps = self._dump_mirrored(session, report)
            dumps, members = self._sweep_dumps
        report.proxy_entries = sum(len(d[1]) for d in dumps.values())
        if not dumps:
            self._sweep_dumps = None
            return
        if sources is None:
            sources = self.read_sources(report, members)
            if report.sweep_done:
                self._sweep_dumps = None       # the next sweep starts with fresh dumps
        else:
            report.sweep_done = sweep_done
        report.candidates = len(sources)
        commands: list[str] = []
        for m in self.mirrors:
            if m.table not in dumps:
                continue
            header, by_key, index, v6_name = dumps[m.table]
            for counters in sources:
                source = counters.source
                if "/" in source:                      # an IPv6 /prefix
                    keys = index.get(source)
                    if not keys:                       # new to the proxy: its network address
                        if header.type != "ipv6":
                            continue
                        keys = [source.split("/")[0]]
                elif header.type == "ip":
                    keys = [source]
                else:
                    continue
                m.members_seen.add(source)             # a member from now on
                for key in keys:
                    cmd = self._set_command(m, key, counters, by_key.get(key))
                    if cmd:
                        commands.append(cmd)
                        report.new += key not in by_key
            if report.sweep_done:
                # members whose source left the map (LRU eviction): zero their values once
                for key, entry in by_key.items():
                    if v6_name.get(key, key) in m.members_seen:
                        continue
                    cmd = self._set_command(m, key, ZERO, entry)
                    if cmd:
                        commands.append(cmd)
                m.members_seen.clear()
        t0 = time.perf_counter()
        replies = session.pipeline(commands) if commands else []
        report.write_s = time.perf_counter() - t0
        report.written = len(commands)
        for cmd, reply in zip(commands, replies):
            if reply.strip():
                table = cmd.split()[2]
                self._report_once(f"set:{table}:{reply.strip()}", f"mirror: '{cmd}': {reply.strip()}", report)

    def mirror_sources(self, sources: list[SourceCounters], sweep_done: bool = False) -> CycleReport:
        """Write the given counters into the mirrored tables as a cycle would (no shield
        read): how the mirror is driven against a proxy without a kernel at hand."""
        report = CycleReport()
        with self.client.session() as session:
            self._mirror(session, report, sources, sweep_done)
        return report

    def find_abusers(self, rule) -> list[tuple[str, int | str | None]]:
        """(key, value) of the entries an escalation rule's filter lists now."""
        report = CycleReport()
        with self.client.session() as session:
            return [(e.key, e.get(rule.condition.metric)) for e in self._abusers(session, rule, report)]

    @staticmethod
    def _set_command(m: _MirrorState, key: str, counters: SourceCounters, entry) -> str | None:
        parts = []
        for slot, xdp_type in m.store.items():
            value = counters.value(xdp_type)
            current = None
            if entry is not None:
                current = entry.data.get(m.printed.get(slot, slot))
                if current is None:
                    current = entry.get(slot)
            if entry is None or current != value:
                if entry is None and value == 0:
                    continue
                parts.append(f"data.{slot} {value}")
        if not parts:
            return None
        return f"set table {m.table} key {key} " + " ".join(parts)

    # -- escalation --

    def _abusers(self, session: Session, rule, report: CycleReport) -> list:
        cond = rule.condition
        _, entries = self._dump(session, rule.table, report, "escalate",
                                f"data.{cond.metric} {cond.op} {cond.value}")
        return entries

    def _escalate(self, session: Session, rule, report: CycleReport) -> None:
        cond = rule.condition
        now = time.monotonic()
        for e in self._abusers(session, rule, report):
            if self.bans.get(e.key, 0) > now or self._banned_already(e.key, now):
                continue
            try:
                source = self.shield.add_ban(e.key, rule.ttl_ms, origin="escalate")
            except (ValueError, OSError) as err:
                self._report_once(f"ban:{e.key}", f"escalate {rule.table}: cannot ban {e.key}: {err}", report)
                continue
            self.bans[e.key] = now + rule.ttl_ms / 1000
            report.banned.append(source)
            log.warning("escalate: banned %s at XDP for %s (table %s: %s=%s %s %d)", source,
                        _fmt_ms(rule.ttl_ms), rule.table, cond.metric, e.get(cond.metric), cond.op, cond.value)
        for key in [k for k, until in self.bans.items() if until <= now]:
            del self.bans[key]

    def _banned_already(self, key: str, now: float) -> bool:
        """An active ban in the map (by hand, by the program's own limits, or by this bridge
        before a restart) is left as it is: escalation neither extends nor re-logs it."""
        try:
            ban = self.shield.maps["bans"].lookup(self.xdp.source_key(key, self.config.ipv6_prefix))
        except ValueError:
            return False
        if ban is None:
            return False
        left_ns = ban.expires_ns - time.monotonic_ns()
        if left_ns <= 0:
            return False
        self.bans[key] = now + left_ns / 1e9
        return True

    # -- fleet bans --

    def _share_bans(self, session: Session, report: CycleReport) -> None:
        """Learn the table's new entries as XDP bans, then publish the new local bans."""
        table, st = self.share, self.fleet
        header, entries = self._dump(session, table, report, "share-bans")
        if header is None:
            return
        now, wall = time.monotonic(), time.time()
        if st.started_at is None:
            st.started_at = now
        prefix = self.shield.get_config().ipv6_prefix
        listed: set[str] = set()
        for e in entries:
            source = _fleet_source(e.key, prefix)
            if source is None:
                continue
            listed.add(source)
            end = now + e.exp / 1000
            seen = st.entry_end.get(source, _ABSENT)
            st.entry_end[source] = end
            if seen is None or (seen is not _ABSENT and end <= seen + REFRESH_SLACK_S):
                continue                      # ours just written, or nothing new
            ttl_ms = e.exp
            until = e.get("gpt0") or 0
            if isinstance(until, int) and until > 0:   # the origin's end of the ban
                left = int((until - wall) * 1000)
                ttl_ms = min(ttl_ms, left) if ttl_ms > 0 else left
            if ttl_ms <= 0 or self._active_ban(source) is not None:
                continue
            try:
                listed_as = self.shield.add_ban(source, ttl_ms, origin="fleet")
            except (ValueError, OSError) as err:
                self._report_once(f"fleet:{source}", f"share-bans {table}: cannot ban {source}: {err}", report)
                continue
            ban = self._active_ban(listed_as)
            st.ban_seen[listed_as] = ban.expires_ns if ban is not None else None
            report.learned.append(listed_as)
            log.warning("share-bans: banned %s at XDP for %s (learned from table %s)",
                        listed_as, _fmt_ms(ttl_ms), table)
        for source in [s for s in st.entry_end if s not in listed]:
            del st.entry_end[source]          # expired (or cleared): a later entry is news
        commands, sources = [], []
        bans = self.shield.bans()
        if st.startup is None:                # bans older than this daemon: maybe published
            st.startup = {b.source: b.expires_ns for b in bans}
        for b in bans:
            if st.ban_seen.get(b.source, _ABSENT) == b.expires_ns:
                continue
            if st.startup.get(b.source) == b.expires_ns:
                # listed: the fleet has it. Not listed: the proxy may still be learning
                # the table (its resync takes up to 5 s); publish only after that.
                if b.source not in listed and now - st.started_at < STARTUP_GRACE_S:
                    continue
                del st.startup[b.source]
                if b.source in listed:
                    st.ban_seen[b.source] = b.expires_ns
                    continue
            st.ban_seen[b.source] = b.expires_ns
            key = _fleet_key(b.source, header.type)
            if key is None:
                continue
            until = 0 if b.remaining_ms is None else int(wall + b.remaining_ms / 1000) + 1
            commands.append(f"set table {table} key {key} data.gpt0 {until}")
            sources.append(b.source)
        active = {b.source for b in bans}
        for source in [s for s in st.ban_seen if s not in active]:
            del st.ban_seen[source]
        for source, cmd, reply in zip(sources, commands, session.pipeline(commands) if commands else []):
            if reply.strip():
                self._report_once(f"set:{table}:{reply.strip()}", f"share-bans: '{cmd}': {reply.strip()}", report)
                continue
            st.entry_end[source] = None       # ours: its entry is not news next cycle
            report.published.append(source)
            log.info("share-bans: published the ban of %s in table %s", source, table)

    def _active_ban(self, source: str):
        try:
            ban = self.shield.maps["bans"].lookup(self.xdp.source_key(source, self.config.ipv6_prefix))
        except ValueError:
            return None
        if ban is None or ban.expires_ns <= time.monotonic_ns():
            return None
        return ban

    # -- running --

    def _cycle_guarded(self) -> None:
        try:
            self.cycle()
        except Exception as e:                    # one bad cycle must not end the bridge
            key = f"crash:{type(e).__name__}:{e}"
            if key not in self._reported:         # a traceback once, not every second
                self._reported.add(key)
                log.exception("bridge cycle failed")

    def run_forever(self, stop: threading.Event | None = None) -> None:
        stop = stop or threading.Event()
        while not stop.is_set():
            started = time.monotonic()
            self._cycle_guarded()
            stop.wait(max(0.0, self.period_s - (time.monotonic() - started)))

    async def run(self, stop: asyncio.Event) -> None:
        """The cycle loop as an asyncio task; each cycle runs in its own thread so the
        daemon's event loop (runtime socket, metrics) never waits on it."""
        while not stop.is_set():
            started = time.monotonic()
            await asyncio.to_thread(self._cycle_guarded)
            try:
                await asyncio.wait_for(stop.wait(), max(0.0, self.period_s - (time.monotonic() - started)))
            except asyncio.TimeoutError:
                pass


REFRESH_SLACK_S = 2.0     # an entry whose end moves later than this was written again
STARTUP_GRACE_S = 8.0     # a restarted proxy relearns its tables within 5 s (peers resync)
_ABSENT = object()


@dataclass
class _FleetState:
    started_at: float | None = None       # monotonic time of the first cycle
    # bans already in the map at the first cycle (source -> expires_ns), not yet known to
    # be in the table: published after STARTUP_GRACE_S unless the table lists them by then
    startup: dict | None = None
    # source -> monotonic end of its table entry as last dumped (None: written by us, not
    # dumped since); sources whose entry has gone are forgotten
    entry_end: dict = field(default_factory=dict)
    # source as the bans map lists it -> expires_ns of the ban already handled
    # (published, or learned from the table): anything else in the map is a new ban
    ban_seen: dict = field(default_factory=dict)


def _fleet_key(source: str, table_type: str) -> str | None:
    """The fleet table's key for a shield source: IPv4 in an ip table; in an ipv6 table
    IPv4 as ::ffff:a.b.c.d and an IPv6 /prefix as its network address."""
    if table_type == "ip":
        return None if ":" in source else source
    if ":" not in source:
        return f"::ffff:{source}"
    return source.split("/")[0]


def _fleet_source(key: str, ipv6_prefix: int) -> str | None:
    """The shield source a fleet table key bans (inverse of _fleet_key)."""
    try:
        addr = ipaddress.ip_address(key)
    except ValueError:
        return None
    if addr.version == 4:
        return str(addr)
    if addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return str(ipaddress.ip_network((addr, ipv6_prefix), strict=False))


def _fmt_ms(ms: int) -> str:
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"
