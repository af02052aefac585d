"""Stick tables with HAProxy 2.6 semantics.

A table maps keys (ip, ipv6, integer, string, binary) to entries holding the data types
declared with `store`. This module holds the declaration grammar (`parse_table_args`), the
table itself (`StickTable`), the per-request counting API used by the HTTP engine, the
read API used by the fetches, and the `show table` line format used by the runtime API.

Memory layout: entries are rows of packed columns (`array` per stored field) instead
of one Python object each, and ip keys are ints, so a million IPv4 entries holding
`http_req_rate(10s),conn_cur` fit in well under 250 MB (see bench/table_memory.py).

Handles: an entry is identified by its row number (an int), returned by `lookup`,
`get_or_create` and `track`. A row number from `lookup`/`get_or_create` is only valid
until control returns to the event loop (a later purge may reuse the row); keep one
longer only while holding a reference (`track`/`acquire` ... `release`).

Expiry queue: like HAProxy, entries sit in an expiry queue keyed by the date they had
when queued; touching an entry only moves its real expiry date, and the purge/expiry
walks re-queue entries whose date moved. This reproduces HAProxy's eviction order and
its "at most twice the batch" candidate budget when a full table must make room.

API in one screen (every method takes an optional `now` in ms, default `now_ms()`):
  config     parse_table_args(words) -> (TableDecl, warnings); StickTable(name, decl);
             StickTable.from_words(name, words); t.ensure_data_types("server_id", ...)
  tracking   row = t.track(sample, http_req=False)   get/create, ref+1, conn_cnt/rate/cur+1
             t.release(row)                          conn_cur-1, ref-1 (pair with track)
             t.count_session(row)                    sess_cnt/rate+1 (session trackers)
  counting   t.inc_http_req/inc_http_err/inc_http_fail(row); t.add_bytes_in/out(row, n)
             t.inc_gpc(row, idx, legacy) t.clr_gpc(...) t.set_gpt(row, v, idx, legacy)
             t.set_server(row, server_id, server_key); t.touch(row)
  reading    t.lookup(sample) -> row|None (no create, no touch); t.get_or_create(sample)
             t.read(row, "http_req_rate") -> int|None; f = t.reader(name, idx) for hot paths
             t.used, t.size, t.use(row), t.expire_in(row)
  upkeep     t.sweep() removes expired entries (the proxy calls it periodically)
  peers      t.entries(), t.raw_values(row), t.apply_remote(key, values, expire_ms),
             t.on_local_update = callback(row) on every local touch
"""
from __future__ import annotations

import heapq
import re
import socket
from array import array
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional

from edgestick.freq_ctr import U32, now_ms, read_freq, set_freq, update_freq

# ---------------------------------------------------------------------------- data types

SINT, UINT, ULL, FRQP, DICT = "sint", "uint", "ull", "frqp", "dict"


@dataclass(frozen=True)
class DataType:
    id: int
    name: str
    std: str                 # storage: sint, uint, ull, frqp, dict
    is_array: bool = False

    @property
    def takes_period(self) -> bool:
        return self.std == FRQP


DATA_TYPES: tuple[DataType, ...] = (
    DataType(0, "server_id", SINT),
    DataType(1, "gpt0", UINT),
    DataType(2, "gpc0", UINT),
    DataType(3, "gpc0_rate", FRQP),
    DataType(4, "conn_cnt", UINT),
    DataType(5, "conn_rate", FRQP),
    DataType(6, "conn_cur", UINT),
    DataType(7, "sess_cnt", UINT),
    DataType(8, "sess_rate", FRQP),
    DataType(9, "http_req_cnt", UINT),
    DataType(10, "http_req_rate", FRQP),
    DataType(11, "http_err_cnt", UINT),
    DataType(12, "http_err_rate", FRQP),
    DataType(13, "bytes_in_cnt", ULL),
    DataType(14, "bytes_in_rate", FRQP),
    DataType(15, "bytes_out_cnt", ULL),
    DataType(16, "bytes_out_rate", FRQP),
    DataType(17, "gpc1", UINT),
    DataType(18, "gpc1_rate", FRQP),
    DataType(19, "server_key", DICT),
    DataType(20, "http_fail_cnt", UINT),
    DataType(21, "http_fail_rate", FRQP),
    DataType(22, "gpt", UINT, is_array=True),
    DataType(23, "gpc", UINT, is_array=True),
    DataType(24, "gpc_rate", FRQP, is_array=True),
)

# edgestick's own data types: the XDP shield's per-source counters, written by its mirror
# (control/bridge.py, docs/bridge.md) with `set table`; read with sc_/src_/table_ fetches.
# Ids from 64 so they never collide with HAProxy's on the peers wire; never sent to peers.
LOCAL_DATA_TYPE_MIN = 64
XDP_DATA_TYPES: tuple[DataType, ...] = (
    DataType(64, "xdp_conn_rate", UINT),     # a rate per the shield's period, as it read it
    DataType(65, "xdp_pkt_rate", UINT),
    DataType(66, "xdp_byte_rate", ULL),
    DataType(67, "xdp_drops", ULL),          # packets dropped at XDP (a counter)
)
DATA_TYPE_BY_ID: dict[int, DataType] = {d.id: d for d in DATA_TYPES + XDP_DATA_TYPES}

DT = {d.name: d.id for d in DATA_TYPE_BY_ID.values()}
MAX_ARRAY = 100


def data_type_id(name: str) -> int:
    """Data type id of a name as the CLI and `store` accept it, -1 when unknown."""
    dt = DT.get(name)
    if dt is not None:
        return dt
    if name == "server_name":           # 2.x alias kept for compatibility
        return DT["server_key"]
    return -1


# ---------------------------------------------------------------------------- key types

KEY_TYPES = {"ip": 4, "ipv6": 16, "integer": 4, "string": 32, "binary": 32}


def _parse_size_err(text: str) -> tuple[int, Optional[str]]:
    """HAProxy's parse_size_err: digits then an optional k/m/g; returns (value, bad char)."""
    i, value = 0, 0
    while i < len(text) and text[i].isdigit():
        value = value * 10 + int(text[i])
        i += 1
    if i < len(text):
        shift = {"k": 10, "K": 10, "m": 20, "M": 20, "g": 30, "G": 30}.get(text[i])
        if shift is None:
            return value, text[i]
        value <<= shift
        i += 1
        if i < len(text):
            return value, text[i]
    return value, None


_TIME_UNITS = (("us", 0), ("ms", 1), ("s", 1000), ("m", 60_000), ("h", 3_600_000),
               ("d", 86_400_000))


def parse_time_err(text: str) -> tuple[int, Optional[str], Optional[str]]:
    """HAProxy 2.6's parse_time_err for one `<number>[unit]` in ms.

    Returns (value, error, warning): error is None, 'over' or the unexpected character;
    trailing characters after the unit are ignored with a warning, as 2.6 does."""
    i, n = 0, len(text)
    while i < n and text[i].isdigit():
        i += 1
    if i == 0:
        return 0, (text[0] if text else "\0"), None
    num = int(text[:i])
    mult = 1
    if i < n:
        for unit, m in _TIME_UNITS:
            if text.startswith(unit, i):
                mult = m
                i += len(unit)
                break
        else:
            return 0, text[i], None
    value = (num + 999) // 1000 if mult == 0 else num * mult
    if value > 0x7FFFFFFF:
        return value, "over", None
    warning = None
    if i < n:
        warning = (f"unexpected character '{text[i]}' after the timer value '{text}', only "
                   "(us=microseconds,ms=milliseconds,s=seconds,m=minutes,h=hours,d=days) are "
                   "supported. This will be reported as an error in next versions.")
    return value, None, warning


@dataclass
class TableDecl:
    """A parsed `stick-table` declaration (the words after `stick-table`)."""
    type: str = ""
    key_size: int = 0
    size: int = 0
    expire_ms: int = 0
    nopurge: bool = False
    peers: Optional[str] = None
    srvkey: str = "name"
    # data type id -> (number of elements, period in ms or 0), in declaration order
    stores: dict[int, tuple[int, int]] = field(default_factory=dict)

    def stored(self, name: str) -> bool:
        return data_type_id(name) in self.stores


def parse_table_args(words, in_peers_section: bool = False) -> tuple[TableDecl, list[str]]:
    """Parse the words after `stick-table` (or after `table <name>` in a peers section).

    Returns (declaration, warnings). Raises ValueError with HAProxy's message (without
    the `parsing [file:line] : stick-table:` prefix, which the config parser adds)."""
    words = list(words)
    d = TableDecl()
    warnings: list[str] = []
    have_type = False
    i = 0

    def arg_after() -> str:
        if i + 1 >= len(words) or not words[i + 1]:
            raise ValueError(f"missing argument after '{words[i]}'.")
        return words[i + 1]

    while i < len(words):
        w = words[i]
        if w == "size":
            value, bad = _parse_size_err(arg_after())
            if bad is not None:
                raise ValueError(f"unexpected character '{bad}' in argument of 'size'.")
            d.size = value
            i += 2
        elif w == "peers" and not in_peers_section:
            d.peers = arg_after()
            i += 2
        elif w == "expire":
            text = arg_after()
            value, err, warn = parse_time_err(text)
            if warn:
                warnings.append(warn)
            if err == "over":
                raise ValueError(f"timer overflow in argument <{text}> to <expire>, maximum "
                                 "value is 2147483647 ms (~24.8 days).")
            if err is not None:
                raise ValueError(f"unexpected character '{err}' in argument of 'expire'.")
            d.expire_ms = value
            i += 2
        elif w == "nopurge":
            d.nopurge = True
            i += 1
        elif w == "type":
            i += 1
            kw = words[i] if i < len(words) else ""
            if kw not in KEY_TYPES:
                raise ValueError(f"unknown type '{kw}'.")
            d.type, d.key_size = kw, KEY_TYPES[kw]
            i += 1
            if kw in ("string", "binary") and i < len(words) and words[i] == "len":
                i += 1
                n = _atol(words[i] if i < len(words) else "")
                if n <= 0:
                    raise ValueError(f"unknown type '{words[i] if i < len(words) else ''}'.")
                d.key_size = n + 1 if kw == "string" else n
                i += 1
            have_type = True
        elif w == "store":
            i += 1
            spec = words[i] if i < len(words) else ""
            for name, arg1, arg2 in _split_store_list(spec):
                _alloc_data_type(d, name, arg1, arg2, warnings)
            i += 1
            ids = d.stores
            if DT["gpt"] in ids and DT["gpt0"] in ids:
                raise ValueError("simultaneous usage of 'gpt' and 'gpt0' in a same table is not "
                                 "permitted as 'gpt' overrides 'gpt0'.")
            if DT["gpc"] in ids and (DT["gpc0"] in ids or DT["gpc1"] in ids):
                raise ValueError("simultaneous usage of 'gpc' and 'gpc[0/1]' in a same table is "
                                 "not permitted as 'gpc' overrides 'gpc[0/1]'.")
            if DT["gpc_rate"] in ids and (DT["gpc0_rate"] in ids or DT["gpc1_rate"] in ids):
                raise ValueError("simultaneous usage of 'gpc_rate' and 'gpc[0/1]_rate' in a same "
                                 "table is not permitted as 'gpc_rate' overrides "
                                 "'gpc[0/1]_rate'.")
        elif w == "srvkey":
            kind = words[i + 1] if i + 1 < len(words) else ""
            if kind not in ("name", "addr"):
                raise ValueError(f"unknown server key type '{kind}'.")
            d.srvkey = kind
            i += 2
        else:
            raise ValueError(f"unknown argument '{w}'.")
    if not d.size:
        raise ValueError("missing size.")
    if not have_type:
        raise ValueError("missing type.")
    return d, warnings


def _atol(text: str) -> int:
    m = re.match(r"\s*([+-]?\d+)", text)
    return int(m.group(1)) if m else 0


def _split_store_list(spec: str):
    """Split `a,b(10s),gpc_rate(4,1m)` into (name, arg1, arg2) triples like HAProxy:
    commas inside parentheses separate the arguments of one type."""
    i, n = 0, len(spec)
    while i < n:
        j = i
        name_end = None
        args: list[str] = []
        while j < n and spec[j] != ",":
            if spec[j] == "(":
                name_end = j
                k = j + 1
                start = k
                while True:
                    if k >= n:
                        raise ValueError("missing closing parenthesis after store option "
                                         f"'{spec[i:name_end]}'.")
                    if spec[k] == ",":
                        args.append(spec[start:k])
                        start = k + 1
                    elif spec[k] == ")":
                        args.append(spec[start:k])
                        break
                    k += 1
                j = k + 1
                # HAProxy ignores what follows ')' up to the next comma
                while j < n and spec[j] != ",":
                    j += 1
                break
            j += 1
        name = spec[i:name_end if name_end is not None else j]
        yield name, (args[0] if args else None), (args[1] if len(args) > 1 else None)
        i = j + 1


def _alloc_data_type(d: TableDecl, name: str, sa: Optional[str], sa2: Optional[str],
                     warnings: list[str]) -> None:
    dt = data_type_id(name)
    if dt < 0:
        raise ValueError(f"unknown store option '{name}'.")
    if dt in d.stores:
        warnings.append(f"store option '{name}' already enabled, ignored.")
        return
    t = DATA_TYPE_BY_ID[dt]
    nbelem = 1
    if t.is_array:
        if sa is None:
            raise ValueError(f"missing argument to store option '{name}'.")
        nbelem = _atol(sa)
        if not 1 <= nbelem <= MAX_ARRAY:
            raise ValueError(f"array size is out of allowed range (1-{MAX_ARRAY}) for store "
                             f"option '{name}'.")
        sa = sa2
    period = 0
    if t.takes_period:
        if sa is None:
            raise ValueError(f"missing argument to store option '{name}'.")
        value, err, warn = parse_time_err(sa)
        if warn:
            warnings.append(warn)
        if err is not None:
            raise ValueError(f"error when processing store option '{name}'.")
        period = value
    elif sa is not None:
        raise ValueError(f"unexpected argument to store option '{name}'.")
    d.stores[dt] = (nbelem, period)


# ---------------------------------------------------------------------------- keys

_pton, _AF_INET, _from_bytes = socket.inet_pton, socket.AF_INET, int.from_bytes

def _ip4_to_int(text: str) -> Optional[int]:
    try:
        return int.from_bytes(socket.inet_pton(socket.AF_INET, text), "big")
    except (OSError, TypeError):
        return None


def cli_ipv4(text: str) -> int:
    """HAProxy's lenient inetaddr_host() used by the CLI: never fails ('foo' is 0.0.0.0,
    '1.2.3' is 1.2.3.0); each dotted group keeps its last three digits."""
    zero = 0x30303030
    dig1 = dig10 = dig100 = zero
    s = 24
    b = text.encode("latin-1", "replace") + b"\0"
    start = p = 0
    while True:
        if 0x30 <= b[p] <= 0x39:
            p += 1
            continue
        if p != start:
            d = p - 1
            dig1 |= (b[d] << s)
            if d != start:
                d -= 1
                dig10 |= (b[d] << s)
                if d != start:
                    d -= 1
                    dig100 |= (b[d] << s)
        if not s or b[p] != 0x2E:
            break
        s -= 8
        p += 1
        start = p
    dig100 = (dig100 - zero) & U32
    dig10 = (dig10 - zero) & U32
    dig1 = (dig1 - zero) & U32
    return (((dig100 * 10 + dig10) & U32) * 10 + dig1) & U32


def _dump_text(key: bytes) -> str:
    out = []
    for c in key:
        if c == 0:
            break
        if c in (0x5C, 0x20, 0x3D):
            out.append("\\" + chr(c))
        elif 0x21 <= c <= 0x7E:
            out.append(chr(c))
        elif c == 0x09:
            out.append("\\t")
        elif c == 0x0A:
            out.append("\\n")
        elif c == 0x0D:
            out.append("\\r")
        elif c == 0x1B:
            out.append("\\e")
        else:
            out.append("\\x%02X" % c)
    return "".join(out)


# ---------------------------------------------------------------------------- the table

class _ExpiryQueue:
    """Entries ordered by the date they had when queued, like HAProxy's expiry tree.

    New entries are queued at now + expire, never earlier than anything already queued,
    so they go to a FIFO made of packed arrays (16 bytes an entry, no Python object).
    Re-queued entries (their date moved while queued) may land anywhere: they go to a
    small heap. pop() merges both by (date, sequence)."""

    __slots__ = ("dates", "seqs", "rows", "head", "heap", "seq")

    def __init__(self):
        self.dates = array("q")
        self.seqs = array("I")
        self.rows = array("I")
        self.head = 0
        self.heap: list[int] = []          # (date << 64) | (seq << 32) | row
        self.seq = 0

    def __bool__(self) -> bool:
        return self.head < len(self.dates) or bool(self.heap)

    def push(self, date: int, row: int) -> int:
        """Queue `row` at `date`; returns the item's sequence number."""
        self.seq = seq = (self.seq + 1) & 0xFFFFFFFF
        dates = self.dates
        if self.head == len(dates) or dates[-1] <= date:
            dates.append(date)
            self.seqs.append(seq)
            self.rows.append(row)
        else:
            heapq.heappush(self.heap, (date << 64) | (seq << 32) | row)
        return seq

    def put_back(self, date: int, seq: int, row: int) -> None:
        heapq.heappush(self.heap, (date << 64) | (seq << 32) | row)

    def peek_date(self) -> Optional[int]:
        h, heap = self.head, self.heap
        fifo = self.dates[h] if h < len(self.dates) else None
        top = heap[0] >> 64 if heap else None
        if fifo is None:
            return top
        return fifo if top is None or fifo <= top else top

    def pop(self) -> tuple[int, int, int]:
        h, heap, dates = self.head, self.heap, self.dates
        if h < len(dates):
            if heap:
                top = heap[0]
                if (dates[h] << 32 | self.seqs[h]) > (top >> 32):
                    heapq.heappop(heap)
                    return top >> 64, (top >> 32) & 0xFFFFFFFF, top & 0xFFFFFFFF
            item = dates[h], self.seqs[h], self.rows[h]
            h += 1
            if h >= 4096 and h * 2 >= len(dates):
                del dates[:h], self.seqs[:h], self.rows[:h]
                h = 0
            self.head = h
            return item
        top = heapq.heappop(heap)
        return top >> 64, (top >> 32) & 0xFFFFFFFF, top & 0xFFFFFFFF


class StickTable:
    """One stick table. `name` is the proxy name (or `peers/name`)."""

    def __init__(self, name: str, decl: TableDecl):
        self.name = name
        self.decl = decl
        self.type = decl.type
        self.key_size = decl.key_size
        self.size = decl.size
        self.expire_ms = decl.expire_ms
        self.nopurge = decl.nopurge
        self.peers = decl.peers
        self.srvkey = decl.srvkey
        self._index: dict = {}                    # key -> row
        self._keys: list = []                     # row -> key (None when free)
        self._free: list[int] = []
        self._exp = array("q")                    # real expiry date (ms) / last touch without expire
        self._use = array("I")                    # references (trackers)
        self._qseq = array("I")                   # sequence of the row's live queue item
        self._queue = _ExpiryQueue()
        self._ptr_base = 0x7F0000000000 | ((id(self) & 0xFFFFF) << 16)
        self.on_local_update: Optional[Callable[[int], None]] = None   # peers hook
        self._columns: list = [self._exp, self._use, self._qseq]
        self._fields: dict[int, list] = {}        # data type id -> per element column/rate
        self._rebuild_fields()

    # ---- construction

    @classmethod
    def from_words(cls, name: str, words, in_peers_section: bool = False) -> "StickTable":
        decl, _ = parse_table_args(words, in_peers_section)
        return cls(name, decl)

    def ensure_data_types(self, *names: str) -> None:
        """Allocate extra data types (e.g. `server_id`, `server_key` for tables used by
        stick rules). Only on an empty table, at configuration time."""
        added = False
        for n in names:
            dt = data_type_id(n)
            if dt >= 0 and dt not in self.decl.stores:
                self.decl.stores[dt] = (1, 0)
                added = True
        if added:
            if self._index:
                raise RuntimeError("data types can only be added to an empty table")
            self._rebuild_fields()

    def _rebuild_fields(self) -> None:
        self._columns = [self._exp, self._use, self._qseq]
        self._fields = {}
        self.stored_ids = sorted(self.decl.stores)
        for dt in self.stored_ids:
            t = DATA_TYPE_BY_ID[dt]
            nbelem, period = self.decl.stores[dt]
            elems = []
            for _ in range(nbelem):
                if t.std == FRQP:
                    cols = (array("I", bytes(4 * len(self._keys))),
                            array("I", bytes(4 * len(self._keys))),
                            array("I", bytes(4 * len(self._keys))))
                    self._columns.extend(cols)
                    elems.append((cols[0], cols[1], cols[2], period))
                elif t.std == DICT:
                    col = [None] * len(self._keys)
                    self._columns.append(col)
                    elems.append(col)
                else:
                    code = {SINT: "i", UINT: "I", ULL: "Q"}[t.std]
                    col = array(code, bytes(array(code).itemsize * len(self._keys)))
                    self._columns.append(col)
                    elems.append(col)
            self._fields[dt] = elems
        f = self._fields
        # hot-path shortcuts: the first element of each type, or None
        g = lambda name: f[DT[name]][0] if DT[name] in f else None   # noqa: E731
        self._conn_cnt, self._conn_rate, self._conn_cur = g("conn_cnt"), g("conn_rate"), g("conn_cur")
        self._sess_cnt, self._sess_rate = g("sess_cnt"), g("sess_rate")
        self._req_cnt, self._req_rate = g("http_req_cnt"), g("http_req_rate")
        self._err_cnt, self._err_rate = g("http_err_cnt"), g("http_err_rate")
        self._fail_cnt, self._fail_rate = g("http_fail_cnt"), g("http_fail_rate")
        self._bin_cnt, self._bin_rate = g("bytes_in_cnt"), g("bytes_in_rate")
        self._bout_cnt, self._bout_rate = g("bytes_out_cnt"), g("bytes_out_rate")
        self._readers: dict = {}

    # ---- keys

    def key_of(self, value) -> Optional[object]:
        """The table key for a sample value (str address/number/text, bytes, int), or
        None when it cannot be converted (e.g. a non-mapped IPv6 address for an ip
        table). str text is taken as latin-1 bytes (how the proxy decodes HTTP)."""
        t = self.type
        if t == "ip":
            if type(value) is str:
                try:                              # the per-request case: a dotted quad
                    return _from_bytes(_pton(_AF_INET, value), "big")
                except OSError:
                    pass
            if isinstance(value, int) and not isinstance(value, bool):
                return value & U32
            if isinstance(value, (bytes, bytearray)):
                if len(value) == 4:
                    return int.from_bytes(value, "big")
                if len(value) == 16 and value[:12] == b"\0" * 10 + b"\xff\xff":
                    return int.from_bytes(value[12:], "big")
                return None
            if isinstance(value, str):
                k = _ip4_to_int(value)
                if k is None and ":" in value:
                    try:
                        raw = socket.inet_pton(socket.AF_INET6, value)
                    except OSError:
                        return None
                    if raw[:12] == b"\0" * 10 + b"\xff\xff":
                        return int.from_bytes(raw[12:], "big")
                return k
            return None
        if t == "ipv6":
            if isinstance(value, (bytes, bytearray)):
                if len(value) == 16:
                    return bytes(value)
                if len(value) == 4:
                    return b"\0" * 10 + b"\xff\xff" + bytes(value)
                return None
            if isinstance(value, str):
                try:
                    return socket.inet_pton(socket.AF_INET6, value)
                except OSError:
                    k = _ip4_to_int(value)
                    return None if k is None else b"\0" * 10 + b"\xff\xff" + k.to_bytes(4, "big")
            return None
        if t == "integer":
            if isinstance(value, bool):
                return int(value)
            if isinstance(value, int):
                return value & U32
            if isinstance(value, (str, bytes)):
                try:
                    return int(value) & U32
                except ValueError:
                    k = _ip4_to_int(value) if isinstance(value, str) else None
                    return k
            return None
        # string / binary
        if isinstance(value, str):
            try:
                raw = value.encode("latin-1")
            except UnicodeEncodeError:
                raw = value.encode("utf-8")
        elif isinstance(value, (bytes, bytearray)):
            raw = bytes(value)
        elif isinstance(value, int):
            raw = str(value).encode() if t == "string" else value.to_bytes(8, "big", signed=True)
        else:
            return None
        if t == "string":
            nul = raw.find(b"\0")
            if nul >= 0:
                raw = raw[:nul]
            return raw[: self.key_size - 1]
        return raw[: self.key_size].ljust(self.key_size, b"\0")

    def format_key(self, key) -> str:
        t = self.type
        if t == "ip":
            return socket.inet_ntoa(key.to_bytes(4, "big"))
        if t == "ipv6":
            return socket.inet_ntop(socket.AF_INET6, key)
        if t == "integer":
            return str(key)
        if t == "string":
            return _dump_text(key)
        return key.hex().upper()

    def _sort_key(self):
        if self.type == "integer":
            return lambda k: int.from_bytes(k.to_bytes(4, "little"), "big")
        return None

    # ---- allocation and the expiry queue

    def _queue_push(self, row: int, date: int) -> None:
        self._qseq[row] = self._queue.push(date, row)

    def _new_row(self, key, now: int) -> int:
        if self._free:
            row = self._free.pop()
            self._keys[row] = key
        else:
            row = len(self._keys)
            self._keys.append(key)
            for col in self._columns:
                col.append(0 if not isinstance(col, list) else None)
        self._index[key] = row
        self._exp[row] = date = now + self.expire_ms
        self._queue_push(row, date)
        return row

    def _free_row(self, row: int) -> None:
        key = self._keys[row]
        del self._index[key]
        self._keys[row] = None
        for col in self._columns:
            col[row] = None if isinstance(col, list) else 0
        self._free.append(row)

    def _purge_oldest(self, batch: int) -> int:
        """Evict up to `batch` unreferenced entries with the earliest expiry dates,
        examining at most twice as many queued entries (HAProxy's trash_oldest)."""
        queue, qseq, use, exp, keys = self._queue, self._qseq, self._use, self._exp, self._keys
        budget = 2 * batch
        evicted = 0
        held = []
        while evicted < batch and queue:
            date, seq, row = queue.pop()
            if keys[row] is None or qseq[row] != seq:
                continue                      # stale item of a removed/re-queued entry
            budget -= 1
            if budget < 0:
                held.append((date, seq, row))
                break
            if use[row]:
                held.append((date, seq, row))
                continue
            if exp[row] != date:
                self._queue_push(row, exp[row])
                continue
            self._free_row(row)
            evicted += 1
        for item in held:
            queue.put_back(*item)
        return evicted

    def sweep(self, now: Optional[int] = None) -> int:
        """Remove the unreferenced entries whose expiry date has passed (HAProxy's expire
        task). Cheap when nothing is due; the proxy may call it periodically. Returns the
        number of entries removed."""
        queue = self._queue
        if not self.expire_ms or not queue:
            return 0
        if now is None:
            now = now_ms()
        qseq, use, exp, keys = self._qseq, self._use, self._exp, self._keys
        removed = 0
        held = []
        while queue:
            if queue.peek_date() > now:
                break
            date, seq, row = queue.pop()
            if keys[row] is None or qseq[row] != seq:
                continue
            if use[row]:
                held.append((date, seq, row))
                continue
            if exp[row] > now:
                self._queue_push(row, exp[row])
                continue
            self._free_row(row)
            removed += 1
        for item in held:
            queue.put_back(*item)
        return removed

    def next_expiry(self) -> Optional[int]:
        """Earliest queued expiry date (ms on `now_ms()`'s clock), None if nothing queued."""
        if not self.expire_ms or not self._queue:
            return None
        return self._queue.peek_date()

    def _touch(self, row: int, now: int) -> None:
        self._exp[row] = now + self.expire_ms
        if self.on_local_update is not None:
            self.on_local_update(row)

    def _alive(self, row: int, now: int) -> bool:
        """False when the row's entry is past its expiry (and unreferenced): it is removed
        here so readers never see it, as if the expire task had run on time."""
        if self.expire_ms and self._exp[row] <= now and not self._use[row]:
            self._free_row(row)
            return False
        return True

    # ---- public entry API

    @property
    def used(self) -> int:
        """Number of entries (after removing the expired ones)."""
        self.sweep()
        return len(self._index)

    def __len__(self) -> int:
        return len(self._index)

    def lookup(self, value, now: Optional[int] = None) -> Optional[int]:
        """Entry (row) for a sample value or table key, or None. Never creates, never
        touches (like `src_*` fetches and `show table key`)."""
        key = self.key_of(value)
        if key is None:
            return None
        return self.lookup_key(key, now)

    def lookup_key(self, key, now: Optional[int] = None) -> Optional[int]:
        """Like lookup(), for a key already normalised by key_of()."""
        row = self._index.get(key)
        if row is None:
            return None
        if self.expire_ms and not self._alive(row, now_ms() if now is None else now):
            return None
        return row

    def get_or_create(self, value, now: Optional[int] = None) -> Optional[int]:
        """Entry for the value, created (all data at 0, expiry now+expire) if absent; a
        full table evicts its oldest unreferenced entries first, or with `nopurge` gives
        None. Does not touch an existing entry. None also when the value gives no key."""
        key = self.key_of(value)
        if key is None:
            return None
        return self.get_or_create_key(key, now)

    def get_or_create_key(self, key, now: Optional[int] = None) -> Optional[int]:
        if now is None:
            now = now_ms()
        row = self._index.get(key)
        if row is not None and (not self.expire_ms or self._alive(row, now)):
            return row
        if len(self._index) >= self.size:
            if self.nopurge:
                return None
            if not self._purge_oldest((self.size >> 8) + 1):
                return None
        return self._new_row(key, now)

    def acquire(self, row: int) -> None:
        """Hold a reference: the entry is never removed while referenced."""
        self._use[row] += 1

    def track(self, value, http_req: bool = False, now: Optional[int] = None) -> Optional[int]:
        """Start tracking the entry for `value` (a `track-scN` rule): get or create it, take
        a reference, count conn_cnt/conn_rate/conn_cur +1 and touch it. With
        `http_req=True` (an `http-request track-sc*` rule) the current request is counted
        too (http_req_cnt/rate +1). Returns the row, or None when nothing is tracked
        (no key, or table full with nopurge). Pair with `release(row)`."""
        if now is None:
            now = now_ms()
        if self.type == "ip" and type(value) is str:
            try:                                  # key_of's per-request case, one call less
                key = _from_bytes(_pton(_AF_INET, value), "big")
            except OSError:
                key = self.key_of(value)
        else:
            key = self.key_of(value)
        if key is None:
            return None
        row = self._index.get(key)
        if row is None or (self.expire_ms and self._exp[row] <= now and not self._use[row]):
            row = self.get_or_create_key(key, now)      # new, or replacing a due entry
            if row is None:
                return None
        self._use[row] += 1
        c = self._conn_cur
        if c is not None:
            c[row] = (c[row] + 1) & U32
        c = self._conn_cnt
        if c is not None:
            c[row] = (c[row] + 1) & U32
        if self._conn_rate is not None:
            _bump(self._conn_rate, row, 1, now)
        if http_req:
            c = self._req_cnt
            if c is not None:
                c[row] = (c[row] + 1) & U32
            rate = self._req_rate
            if rate is not None:        # _bump, spelt out (once a request)
                tick, curr, prev, period = rate
                t = tick[row]
                if ((now - t) & U32) < period:
                    curr[row] = (curr[row] + 1) & U32
                else:
                    tick[row], curr[row], prev[row] = update_freq(t, curr[row], prev[row],
                                                                  period, 1, now)
        self._exp[row] = now + self.expire_ms           # touch
        if self.on_local_update is not None:
            self.on_local_update(row)
        return row

    def release(self, row: int, now: Optional[int] = None) -> None:
        """End of a tracking (stream or session end): conn_cur -1 (not below 0, touches
        the entry), drop the reference; an entry already past its expiry goes away."""
        if now is None:
            now = now_ms()
        c = self._conn_cur
        if c is not None:
            if c[row]:
                c[row] -= 1
            self._exp[row] = now + self.expire_ms       # touch
            if self.on_local_update is not None:
                self.on_local_update(row)
        use = self._use
        if use[row]:
            use[row] -= 1
        if self.expire_ms and not use[row] and self._exp[row] <= now:
            self._free_row(row)

    def unref(self, row: int) -> None:
        """Drop a reference taken with acquire() (no counter change)."""
        if self._use[row]:
            self._use[row] -= 1

    def count_session(self, row: int, now: Optional[int] = None) -> None:
        """A session-level tracker's session was accepted: sess_cnt/sess_rate +1."""
        self._count(row, self._sess_cnt, self._sess_rate, 1, now)

    def inc_http_req(self, row: int, now: Optional[int] = None) -> None:
        """One more HTTP request seen by a tracker of this entry."""
        self._count(row, self._req_cnt, self._req_rate, 1, now)

    def inc_http_err(self, row: int, now: Optional[int] = None) -> None:
        """One more client error (4xx from a server, deny, tarpit, bad request...)."""
        self._count(row, self._err_cnt, self._err_rate, 1, now)

    def inc_http_fail(self, row: int, now: Optional[int] = None) -> None:
        """One more server failure (5xx except 501/505, HAProxy 502/504 of the server)."""
        self._count(row, self._fail_cnt, self._fail_rate, 1, now)

    def add_bytes_in(self, row: int, nbytes: int, now: Optional[int] = None) -> None:
        self._count(row, self._bin_cnt, self._bin_rate, nbytes, now, 0xFFFFFFFFFFFFFFFF)

    def add_bytes_out(self, row: int, nbytes: int, now: Optional[int] = None) -> None:
        self._count(row, self._bout_cnt, self._bout_rate, nbytes, now, 0xFFFFFFFFFFFFFFFF)

    def add_conn(self, row: int, now: Optional[int] = None) -> None:
        """conn_cnt/conn_rate +1 without tracking (the `src_updt_conn_cnt` fetch)."""
        self._count(row, self._conn_cnt, self._conn_rate, 1, now)

    def _count(self, row, cnt, rate, inc, now, mask=U32) -> None:
        if cnt is None and rate is None:
            return
        if now is None:
            now = now_ms()
        if cnt is not None:
            cnt[row] = (cnt[row] + inc) & mask
        if rate is not None:
            _bump(rate, row, inc, now)
        self._touch(row, now)

    # general purpose counters and tags

    def _gpc_cols(self, idx: int, legacy: bool):
        """(counter column, rate) for gpc `idx`; legacy gpc0/gpc1 fall back on the array."""
        f = self._fields
        if legacy and idx in (0, 1):
            c = f.get(DT["gpc0" if idx == 0 else "gpc1"])
            r = f.get(DT["gpc0_rate" if idx == 0 else "gpc1_rate"])
            if c is not None or r is not None:
                return (c[0] if c else None), (r[0] if r else None)
        c = f.get(DT["gpc"])
        r = f.get(DT["gpc_rate"])
        return (c[idx] if c and idx < len(c) else None), (r[idx] if r and idx < len(r) else None)

    def inc_gpc(self, row: int, idx: int = 0, legacy: bool = True,
                now: Optional[int] = None) -> Optional[int]:
        """sc-inc-gpc0/1 (legacy=True: gpc0/gpc1, else array element 0/1) or
        sc-inc-gpc(idx) (legacy=False). Returns the new counter value, None when neither
        the counter nor its rate is stored."""
        c, r = self._gpc_cols(idx, legacy)
        if c is None and r is None:
            return None
        if now is None:
            now = now_ms()
        if r is not None:
            _bump(r, row, 1, now)
        value = None
        if c is not None:
            c[row] = value = (c[row] + 1) & U32
        self._touch(row, now)
        return value

    def clr_gpc(self, row: int, idx: int = 0, legacy: bool = True,
                now: Optional[int] = None) -> Optional[int]:
        """Reset a gpc to 0; returns its previous value (None when not stored)."""
        c, _ = self._gpc_cols(idx, legacy)
        if c is None:
            return None
        prev = c[row]
        c[row] = 0
        self._touch(row, now_ms() if now is None else now)
        return prev

    def set_gpt(self, row: int, value: int, idx: int = 0, legacy: bool = True,
                now: Optional[int] = None) -> bool:
        """sc-set-gpt0 (legacy) / sc-set-gpt(idx): store a tag. False when not stored."""
        f = self._fields
        col = None
        if legacy and idx == 0 and DT["gpt0"] in f:
            col = f[DT["gpt0"]][0]
        elif DT["gpt"] in f and idx < len(f[DT["gpt"]]):
            col = f[DT["gpt"]][idx]
        if col is None:
            return False
        col[row] = value & U32
        self._touch(row, now_ms() if now is None else now)
        return True

    def set_server(self, row: int, server_id: int, server_key: Optional[str],
                   now: Optional[int] = None) -> None:
        """A `stick store-*` commit: record the server that served (id and key), touch."""
        f = self._fields
        if DT["server_id"] in f:
            f[DT["server_id"]][0][row] = server_id
        if DT["server_key"] in f:
            f[DT["server_key"]][0][row] = server_key
        self._touch(row, now_ms() if now is None else now)

    def touch(self, row: int, now: Optional[int] = None) -> None:
        """Refresh the expiry date (e.g. a `stick match` hit)."""
        self._touch(row, now_ms() if now is None else now)

    # reads

    def stores(self, name: str) -> bool:
        return data_type_id(name) in self._fields

    def _element(self, name: str, idx: int):
        """(data type id, stored element) that `name`[idx] reads, or None when not stored.
        Legacy names gpc0/gpc1/gpt0 and their rates fall back on the gpc/gpt/gpc_rate
        arrays."""
        f = self._fields
        dt = data_type_id(name)
        elems = f.get(dt) if dt >= 0 else None
        if elems is None and name in ("gpc0", "gpc1", "gpc0_rate", "gpc1_rate", "gpt0"):
            arr = {"gpc0": "gpc", "gpc1": "gpc", "gpt0": "gpt"}.get(name, "gpc_rate")
            idx = 1 if name.startswith("gpc1") else 0
            elems = f.get(DT[arr])
            dt = DT[arr]
        if elems is None or idx >= len(elems):
            return None
        return dt, elems[idx]

    def reader(self, name: str, idx: int = 0) -> Callable[..., Optional[object]]:
        """A function `f(row, now=None)` giving the value of data type `name` (rates read
        at `now`), or None when the table does not store it (see _element). Build it
        once at configuration time for the per-request path."""
        ck = (name, idx)
        r = self._readers.get(ck)
        if r is not None:
            return r
        found = self._element(name, idx)
        if found is None:
            def r(row, now=None):
                return None
        else:
            dt, e = found
            if DATA_TYPE_BY_ID[dt].std == FRQP:
                tick, curr, prev, period = e

                def r(row, now=None):
                    return read_freq(tick[row], curr[row], prev[row], period,
                                     now_ms() if now is None else now)
            else:
                def r(row, now=None):
                    return e[row]
        self._readers[ck] = r
        return r

    def rate_columns(self, name: str, idx: int = 0):
        """(tick, curr, prev, period) columns of the rate `name`[idx] as reader() reads
        it, or None when it is not a stored rate (the per-request path reads them
        directly)."""
        found = self._element(name, idx)
        if found is None or DATA_TYPE_BY_ID[found[0]].std != FRQP:
            return None
        return found[1]

    def read(self, row: int, name: str, idx: int = 0, now: Optional[int] = None):
        """Value of data type `name` for the entry, None when not stored (see reader)."""
        return self.reader(name, idx)(row, now)

    def use(self, row: int) -> int:
        return self._use[row]

    def expire_in(self, row: int, now: Optional[int] = None) -> int:
        """Milliseconds until expiry as `show table` prints it (0 when due or no expire)."""
        left = self._exp[row] - (now_ms() if now is None else now)
        return left if left > 0 else 0

    def key(self, row: int):
        return self._keys[row]

    # ---- iteration, removal, CLI support

    def rows(self, now: Optional[int] = None) -> list[int]:
        """All live rows in key order (the `show table` order)."""
        self.sweep(now)
        keys = sorted(self._index, key=self._sort_key())
        index = self._index
        return [index[k] for k in keys]

    def entries(self) -> Iterator[tuple[object, int]]:
        """(key, row) pairs in no particular order (for peers)."""
        return iter(list(self._index.items()))

    def remove(self, row: int) -> bool:
        """Remove an entry unless referenced; False when it is in use."""
        if self._use[row]:
            return False
        self._free_row(row)
        return True

    def clear(self) -> int:
        """Remove every unreferenced entry; returns how many were removed."""
        n = 0
        for row in list(self._index.values()):
            if not self._use[row]:
                self._free_row(row)
                n += 1
        return n

    def cli_value(self, row: int, dt: int, now: Optional[int] = None) -> int:
        """The value `data.<type>` filters compare: element 0, rates read now, 0 for
        server_key."""
        t = DATA_TYPE_BY_ID[dt]
        e = self._fields[dt][0]
        if t.std == FRQP:
            tick, curr, prev, period = e
            return read_freq(tick[row], curr[row], prev[row], period,
                             now_ms() if now is None else now)
        if t.std == DICT:
            return 0
        return e[row]

    def cli_set(self, row: int, dt: int, value: int, now: Optional[int] = None) -> None:
        """`set table ... data.<type> <value>` on element 0 (C integer conversion)."""
        t = DATA_TYPE_BY_ID[dt]
        e = self._fields[dt][0]
        if t.std == SINT:
            v = value & U32
            e[row] = v - (1 << 32) if v >= 1 << 31 else v
        elif t.std == UINT:
            e[row] = value & U32
        elif t.std == ULL:
            e[row] = value & 0xFFFFFFFFFFFFFFFF
        elif t.std == FRQP:
            tick, curr, prev, _ = e
            ti, c, p = set_freq(value, now_ms() if now is None else now)
            tick[row], curr[row], prev[row] = ti & ~1 & U32, c, p
        # server_key (dict) cannot be set from the CLI: silently ignored like HAProxy

    def header(self) -> str:
        return (f"# table: {self.name}, type: {self.type}, size:{self.size}, "
                f"used:{len(self._index)}\n")

    def format_entry(self, row: int, now: Optional[int] = None) -> str:
        """One `show table` line: `0x...: key=K use=N exp=MS[ field=value]*\\n`."""
        if now is None:
            now = now_ms()
        left = self._exp[row] - now
        parts = [f"0x{self._ptr_base + row * 0x70:x}: key={self.format_key(self._keys[row])} "
                 f"use={self._use[row]} exp={left if left > 0 else 0}"]
        for dt in self.stored_ids:
            t = DATA_TYPE_BY_ID[dt]
            elems = self._fields[dt]
            if t.is_array:
                us = t.name.find("_")
                pfx, sfx = (t.name, "") if us < 0 else (t.name[:us], t.name[us:])
                for i, e in enumerate(elems):
                    if t.std == FRQP:
                        parts.append(f"{pfx}{i}{sfx}({e[3]})="
                                     f"{read_freq(e[0][row], e[1][row], e[2][row], e[3], now)}")
                    else:
                        parts.append(f"{pfx}{i}{sfx}={e[row]}")
                continue
            e = elems[0]
            if t.std == FRQP:
                parts.append(f"{t.name}({e[3]})="
                             f"{read_freq(e[0][row], e[1][row], e[2][row], e[3], now)}")
            elif t.std == DICT:
                v = e[row]
                parts.append(f"{t.name}={v if v is not None else '-'}")
            else:
                parts.append(f"{t.name}={e[row]}")
        return " ".join(parts) + "\n"

    # ---- raw state, for peers

    def raw_values(self, row: int) -> dict[int, list]:
        """Stored data of an entry by type id: per element an int, a str/None
        (server_key), or (curr_tick, curr_ctr, prev_ctr) for rates."""
        out = {}
        for dt in self.stored_ids:
            if dt >= LOCAL_DATA_TYPE_MIN:       # edgestick-only types stay off the wire
                continue
            t = DATA_TYPE_BY_ID[dt]
            vals = []
            for e in self._fields[dt]:
                if t.std == FRQP:
                    vals.append((e[0][row], e[1][row], e[2][row]))
                else:
                    vals.append(e[row])
            out[dt] = vals
        return out

    def apply_remote(self, key, values: dict[int, list], expire_ms: Optional[int] = None,
                     now: Optional[int] = None) -> Optional[int]:
        """Apply an update learned from a peer: create the entry if needed, overwrite
        the stored values given (conn_cur is never applied), set the expiry to now + the
        table's expire, or now + `expire_ms` for a resync. Not reported to on_local_update."""
        if now is None:
            now = now_ms()
        row = self.get_or_create_key(key, now)
        if row is None:
            return None
        for dt, vals in values.items():
            if dt == DT["conn_cur"] or dt not in self._fields:
                continue
            t = DATA_TYPE_BY_ID[dt]
            for e, v in zip(self._fields[dt], vals):
                if t.std == FRQP:
                    e[0][row], e[1][row], e[2][row] = (v[0] & U32, v[1] & U32, v[2] & U32)
                else:
                    e[row] = v
        self._exp[row] = now + (self.expire_ms if expire_ms is None else expire_ms)
        return row


def _bump(rate, row: int, inc: int, now: int) -> None:
    """update_freq on a rate stored in columns (fast path when the period is current)."""
    tick, curr, prev, period = rate
    t = tick[row]
    if ((now - t) & U32) < period:
        curr[row] = (curr[row] + inc) & U32
    else:
        tick[row], curr[row], prev[row] = update_freq(t, curr[row], prev[row], period, inc, now)
