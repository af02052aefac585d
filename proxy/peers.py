"""Stick-table replication with HAProxy's peers protocol (v2.1, as HAProxy 2.6 speaks it).

Two layers:

* the codec (this first half): varints, message framing, table definitions, entry
  updates (every key type, every data type, expiry), acknowledgements and control
  messages. Decoded messages keep their wire choices (explicit or incremental update id,
  timed or not, dictionary slot defined or referenced) so that encode(decode(bytes)) is
  the same bytes; the session layer makes those choices.
* the session layer (`Peers`): handshake, listener and connectors, teaching a full table
  on RESYNC REQUEST, pushing local changes, acknowledgements, heartbeats, reconnection.

Wire format: /work/shared/reference/haproxy-peers-protocol.md (copied knowledge, own code);
test vectors: tests/fixtures/haproxy-transcripts/peers-exchange.txt.
"""
from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import struct
import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

from edgestick.freq_ctr import U32, now_ms

from .stick_table import DATA_TYPE_BY_ID, DICT, FRQP, SINT, StickTable

log = logging.getLogger("edgestick.peers")

PROTOCOL = "HAProxyS"
VERSION = (2, 1)

# message classes and types
CLASS_CONTROL, CLASS_ERROR, CLASS_TABLE, CLASS_RESERVED = 0, 1, 10, 255
RESYNC_REQUEST, RESYNC_FINISHED, RESYNC_PARTIAL, RESYNC_CONFIRM, HEARTBEAT = 0, 1, 2, 3, 4
ERR_PROTOCOL, ERR_SIZE = 0, 1
UPDATE, INC_UPDATE, DEFINE, SWITCH, ACK, TIMED_UPDATE, TIMED_INC_UPDATE = range(0x80, 0x87)

# key types on the wire (HAProxy's sample types)
KEY_TYPES = {"integer": 2, "ip": 4, "ipv6": 5, "string": 6, "binary": 7}
KEY_TYPE_NAMES = {v: k for k, v in KEY_TYPES.items()}

MAX_PAYLOAD = 16384            # tune.bufsize: larger messages are a size-limit error
DICT_SLOTS = 128

# storage class per data type id as seen on the wire; 25/26 are 3.0's glitch counters,
# mapped so that a newer sender's updates stay decodable
_WIRE_STD = {dt.id: dt.std for dt in DATA_TYPE_BY_ID.values() if dt.id < 64}
_WIRE_STD.update({25: "uint", 26: FRQP})
_WIRE_ARRAY = {22, 23, 24}


class PeerProtocolError(Exception):
    """Malformed or unexpected peer traffic: the session answers `01 00` and closes."""


# ---------------------------------------------------------------------------- handshake

def encode_hello(remote_name: str, local_name: str, pid: int) -> bytes:
    """The caller's three handshake lines."""
    return (f"{PROTOCOL} {VERSION[0]}.{VERSION[1]}\n{remote_name}\n"
            f"{local_name} {pid} 1\n").encode()


def check_hello(lines: Sequence[str], local_name: str, known: Callable[[str], bool]):
    """Status the callee answers to the three hello lines (without their LF):
    (status, caller name, caller speaks 2.0). Checked in HAProxy's order: 501 bad
    protocol line or caller line, 502 unsupported version, 503 not addressed to us,
    504 caller not a peer of the section."""
    proto = lines[0]
    if not proto.startswith(PROTOCOL + " "):
        return 501, None, False
    try:
        major, minor = (int(x) for x in proto[len(PROTOCOL) + 1:].split(".", 1))
    except ValueError:
        return 502, None, False
    if major != VERSION[0] or minor > VERSION[1]:
        return 502, None, False
    if lines[1] != local_name:
        return 503, None, False
    if " " not in lines[2]:
        return 501, None, False
    caller = lines[2].split(" ", 1)[0]
    if not known(caller):
        return 504, caller, False
    return 200, caller, minor < 1


# ---------------------------------------------------------------------------- varints

def encode_varint(v: int) -> bytes:
    """HAProxy's "encoded integer": unsigned, 4-bit first group then 7-bit groups."""
    if v < 0:
        v &= 0xFFFFFFFFFFFFFFFF
    if v < 240:
        return bytes((v,))
    out = bytearray(((v & 0xFF) | 0xF0,))
    v = (v - 240) >> 4
    while v >= 128:
        out.append((v & 0xFF) | 0x80)
        v = (v - 128) >> 7
    out.append(v)
    return bytes(out)


def decode_varint(buf, pos: int, end: Optional[int] = None) -> tuple[int, int]:
    """Decode at buf[pos]; returns (value, new position). Truncated or longer than ten
    bytes (more than 64 bits) raises PeerProtocolError."""
    if end is None:
        end = len(buf)
    if pos >= end:
        raise PeerProtocolError("truncated varint")
    v = buf[pos]
    pos += 1
    if v < 240:
        return v, pos
    shift = 4
    while True:
        if pos >= end:
            raise PeerProtocolError("truncated varint")
        b = buf[pos]
        pos += 1
        v += b << shift
        shift += 7
        if b < 128:
            break
        if shift > 67:
            raise PeerProtocolError("varint longer than 64 bits")
    if v > 0xFFFFFFFFFFFFFFFF:
        raise PeerProtocolError("varint longer than 64 bits")
    return v, pos


# ---------------------------------------------------------------------------- messages

@dataclass
class Control:
    type: int                         # RESYNC_REQUEST .. HEARTBEAT


@dataclass
class Error:
    type: int                         # ERR_PROTOCOL / ERR_SIZE


@dataclass
class TableDef:
    table_id: int
    name: str
    key_type: int                     # wire key type (KEY_TYPES)
    key_len: int
    data_types: int                   # bitfield of data type ids
    expire: int                       # ms
    # per rate/array type, in id order: (type_id, element count or None, period or None)
    params: list = field(default_factory=list)
    has_tail: bool = True             # False for very old senders (no expire/params)

    def nbelem(self, dt: int) -> int:
        for t, n, _ in self.params:
            if t == dt:
                return n if n is not None else 1
        return 1

    def period(self, dt: int) -> int:
        for t, _, p in self.params:
            if t == dt and p is not None:
                return p
        return 0


@dataclass
class Switch:
    table_id: int


@dataclass
class Ack:
    table_id: int
    update_id: int


@dataclass
class DictRef:
    """A server_key value on the wire: cache slot key (1..128) and, when the sender
    (re)defines the slot, the string; `value` is filled from the cache when referenced."""
    slot_key: int
    value: Optional[str]
    defines: bool


@dataclass
class Update:
    key: object                       # int (ip/integer), bytes (ipv6/string/binary)
    values: dict                      # data type id -> value (list of values for arrays)
    update_id: Optional[int] = None   # None: incremental (previous + 1)
    expire: Optional[int] = None      # remaining ms for timed updates, else None

    @property
    def msg_type(self) -> int:
        if self.expire is None:
            return UPDATE if self.update_id is not None else INC_UPDATE
        return TIMED_UPDATE if self.update_id is not None else TIMED_INC_UPDATE


@dataclass
class Unknown:
    cls: int
    type: int
    payload: bytes


def frame(cls: int, mtype: int, payload: bytes = b"") -> bytes:
    if mtype < 0x80:
        return bytes((cls, mtype))
    return bytes((cls, mtype)) + encode_varint(len(payload)) + payload


def split_message(buf, pos: int = 0, max_payload: int = MAX_PAYLOAD):
    """One framed message at buf[pos:]: (cls, type, payload, next pos), or None when more
    bytes are needed. A payload over `max_payload` raises PeerProtocolError('size')."""
    if len(buf) - pos < 2:
        return None
    cls, mtype = buf[pos], buf[pos + 1]
    if cls == CLASS_RESERVED:
        raise PeerProtocolError("reserved message class")
    if mtype < 0x80:
        return cls, mtype, b"", pos + 2
    try:
        length, p = decode_varint(buf, pos + 2)
    except PeerProtocolError:
        if len(buf) - pos < 12:
            return None                       # varint not complete yet
        raise
    if length > max_payload:
        raise PeerProtocolError("size")
    if len(buf) - p < length:
        return None
    return cls, mtype, bytes(buf[p:p + length]), p + length


# ---- table definitions

def encode_table_def(d: TableDef) -> bytes:
    name = d.name.encode()
    out = bytearray()
    out += encode_varint(d.table_id) + encode_varint(len(name)) + name
    out += encode_varint(d.key_type) + encode_varint(d.key_len) + encode_varint(d.data_types)
    if d.has_tail:
        out += encode_varint(d.expire)
        for t, n, p in d.params:
            out += encode_varint(t)
            if n is not None:
                out += encode_varint(n)
            if p is not None:
                out += encode_varint(p)
    return frame(CLASS_TABLE, DEFINE, bytes(out))


def decode_table_def(payload: bytes) -> TableDef:
    end = len(payload)
    tid, p = decode_varint(payload, 0)
    nlen, p = decode_varint(payload, p)
    if p + nlen > end:
        raise PeerProtocolError("truncated table name")
    name = payload[p:p + nlen].decode("latin-1")
    p += nlen
    key_type, p = decode_varint(payload, p)
    key_len, p = decode_varint(payload, p)
    types, p = decode_varint(payload, p)
    d = TableDef(tid, name, key_type, key_len, types, 0, [], has_tail=p < end)
    if p < end:
        d.expire, p = decode_varint(payload, p)
        while p < end:
            t, p = decode_varint(payload, p)
            std = _WIRE_STD.get(t)
            if std is None:
                raise PeerProtocolError(f"unknown data type {t} in table definition")
            n = per = None
            if t in _WIRE_ARRAY:
                n, p = decode_varint(payload, p)
            if std == FRQP:
                per, p = decode_varint(payload, p)
            d.params.append((t, n, per))
    return d


def table_def_for(table: StickTable, table_id: int) -> TableDef:
    """The definition edgestick announces for one of its tables."""
    types = 0
    params = []
    for dt in table.stored_ids:
        if dt >= 64:
            continue                          # edgestick-only types never go on the wire
        types |= 1 << dt
        t = DATA_TYPE_BY_ID[dt]
        nbelem, period = table.decl.stores[dt]
        if t.is_array or t.std == FRQP:
            params.append((dt, nbelem if t.is_array else None,
                           period if t.std == FRQP else None))
    key_len = table.key_size
    return TableDef(table_id, wire_name(table), KEY_TYPES[table.type], key_len, types,
                    table.expire_ms, params)


def wire_name(table: StickTable) -> str:
    """Proxy tables travel under their name; `table` lines of a peers section under
    `/<name>` (the part after the section name)."""
    name = table.name
    i = name.find("/")
    return name[i:] if i >= 0 else name


# ---- keys

def encode_key(key, key_type: int, key_len: int) -> bytes:
    if key_type in (2, 4):
        return struct.pack(">I", key & U32)
    if key_type == 5:
        return bytes(key)
    if key_type == 6:
        return encode_varint(len(key)) + bytes(key)
    return bytes(key)[:key_len].ljust(key_len, b"\0")


def decode_key(payload: bytes, p: int, key_type: int, key_len: int):
    end = len(payload)
    if key_type in (2, 4):
        if p + 4 > end:
            raise PeerProtocolError("truncated key")
        return struct.unpack_from(">I", payload, p)[0], p + 4
    if key_type == 5:
        if p + 16 > end:
            raise PeerProtocolError("truncated key")
        return payload[p:p + 16], p + 16
    if key_type == 6:
        n, p = decode_varint(payload, p)
        if n > key_len or p + n > end:
            raise PeerProtocolError("bad string key length")
        return payload[p:p + n], p + n
    if key_type == 7:
        if p + key_len > end:
            raise PeerProtocolError("truncated key")
        return payload[p:p + key_len], p + key_len
    raise PeerProtocolError(f"unknown key type {key_type}")


# ---- updates

def encode_update(u: Update, d: TableDef) -> bytes:
    out = bytearray()
    if u.update_id is not None:
        out += struct.pack(">I", u.update_id & U32)
    if u.expire is not None:
        out += struct.pack(">I", u.expire & U32)
    out += encode_key(u.key, d.key_type, d.key_len)
    types = d.data_types
    dt = 0
    while types >> dt:
        if types >> dt & 1:
            std = _WIRE_STD[dt]
            v = u.values[dt]
            if dt in _WIRE_ARRAY:
                for e in v:
                    out += _encode_value(std, e)
            else:
                out += _encode_value(std, v)
        dt += 1
    return frame(CLASS_TABLE, u.msg_type, bytes(out))


def _encode_value(std: str, v) -> bytes:
    if std == FRQP:
        return encode_varint(v[0]) + encode_varint(v[1]) + encode_varint(v[2])
    if std == DICT:
        if v is None:
            return b"\0"
        body = encode_varint(v.slot_key)
        if v.defines:
            raw = v.value.encode("latin-1")
            body += encode_varint(len(raw)) + raw
        return encode_varint(len(body)) + body
    if std == SINT:
        return encode_varint(v & 0xFFFFFFFFFFFFFFFF)   # sign-extended like HAProxy
    return encode_varint(v)


def decode_update(mtype: int, payload: bytes, d: TableDef, rx_dict: Optional[list] = None) -> Update:
    """Decode an update of any of the four kinds against the sender's definition `d`.
    `rx_dict` (128 slots) resolves and records server_key dictionary entries."""
    p = 0
    end = len(payload)
    u = Update(None, {})
    if mtype in (UPDATE, TIMED_UPDATE):
        if p + 4 > end:
            raise PeerProtocolError("truncated update id")
        u.update_id = struct.unpack_from(">I", payload, p)[0]
        p += 4
    if mtype in (TIMED_UPDATE, TIMED_INC_UPDATE):
        if p + 4 > end:
            raise PeerProtocolError("truncated expire")
        u.expire = struct.unpack_from(">I", payload, p)[0]
        p += 4
    u.key, p = decode_key(payload, p, d.key_type, d.key_len)
    types = d.data_types
    dt = 0
    while types >> dt:
        if types >> dt & 1:
            std = _WIRE_STD.get(dt)
            if std is None:
                raise PeerProtocolError(f"unknown data type {dt}")
            if dt in _WIRE_ARRAY:
                vals = []
                for _ in range(d.nbelem(dt)):
                    v, p = _decode_value(std, payload, p, rx_dict)
                    vals.append(v)
                u.values[dt] = vals
            else:
                u.values[dt], p = _decode_value(std, payload, p, rx_dict)
        dt += 1
    if p != end:
        raise PeerProtocolError("trailing bytes in update")
    return u


def _decode_value(std: str, payload: bytes, p: int, rx_dict):
    if std == FRQP:
        a, p = decode_varint(payload, p)
        b, p = decode_varint(payload, p)
        c, p = decode_varint(payload, p)
        return (a & U32, b & U32, c & U32), p
    if std == DICT:
        n, p = decode_varint(payload, p)
        if n == 0:
            return None, p
        end = p + n
        if end > len(payload):
            raise PeerProtocolError("truncated dictionary entry")
        k, p = decode_varint(payload, p, end)
        if not 1 <= k <= DICT_SLOTS:
            raise PeerProtocolError("bad dictionary slot")
        if p < end:
            ln, p = decode_varint(payload, p, end)
            if p + ln != end:
                raise PeerProtocolError("bad dictionary entry length")
            value = payload[p:end].decode("latin-1")
            if rx_dict is not None:
                rx_dict[k - 1] = value
            return DictRef(k, value, True), end
        value = rx_dict[k - 1] if rx_dict is not None else None
        return DictRef(k, value, False), end
    v, p = decode_varint(payload, p)
    if std == SINT:
        v &= U32
        return (v - (1 << 32) if v >= 1 << 31 else v), p
    if std == "uint":
        return v & U32, p
    return v, p                               # ull


def encode_ack(a: Ack) -> bytes:
    return frame(CLASS_TABLE, ACK, encode_varint(a.table_id) + struct.pack(">I", a.update_id & U32))


def decode_ack(payload: bytes) -> Ack:
    tid, p = decode_varint(payload, 0)
    if p + 4 != len(payload):
        raise PeerProtocolError("bad ack length")
    return Ack(tid, struct.unpack_from(">I", payload, p)[0])


def encode(msg, d: Optional[TableDef] = None) -> bytes:
    """Bytes of a decoded message (`d`: the current table definition, for updates)."""
    if isinstance(msg, Control):
        return frame(CLASS_CONTROL, msg.type)
    if isinstance(msg, Error):
        return frame(CLASS_ERROR, msg.type)
    if isinstance(msg, TableDef):
        return encode_table_def(msg)
    if isinstance(msg, Switch):
        return frame(CLASS_TABLE, SWITCH, encode_varint(msg.table_id))
    if isinstance(msg, Ack):
        return encode_ack(msg)
    if isinstance(msg, Update):
        return encode_update(msg, d)
    if isinstance(msg, Unknown):
        return frame(msg.cls, msg.type, msg.payload)
    raise TypeError(msg)


class StreamDecoder:
    """Decodes one direction of a session: keeps the current table definition, the
    definitions by sender id and the dictionary cache, as a receiver must."""

    def __init__(self, max_payload: int = MAX_PAYLOAD):
        self.buf = bytearray()
        self.defs: dict[int, TableDef] = {}
        self.current: Optional[TableDef] = None
        self.rx_dict: list = [None] * DICT_SLOTS
        self.max_payload = max_payload

    def feed(self, data: bytes) -> list:
        """Messages completed by `data` (decoded objects)."""
        self.buf += data
        out = []
        pos = 0
        while True:
            m = split_message(self.buf, pos, self.max_payload)
            if m is None:
                break
            cls, mtype, payload, pos = m
            out.append(self.decode(cls, mtype, payload))
        del self.buf[:pos]
        return out

    def decode(self, cls: int, mtype: int, payload: bytes):
        if cls == CLASS_CONTROL and mtype < 0x80:
            return Control(mtype)
        if cls == CLASS_ERROR and mtype < 0x80:
            return Error(mtype)
        if cls == CLASS_TABLE:
            if mtype == DEFINE:
                d = decode_table_def(payload)
                if d.table_id not in self.defs and len(self.defs) >= 1024:
                    raise PeerProtocolError("too many table definitions")
                self.defs[d.table_id] = d
                self.current = d
                return d
            if mtype == SWITCH:
                tid, p = decode_varint(payload, 0)
                if p != len(payload):
                    raise PeerProtocolError("bad switch length")
                self.current = self.defs.get(tid)
                return Switch(tid)
            if mtype == ACK:
                return decode_ack(payload)
            if mtype in (UPDATE, INC_UPDATE, TIMED_UPDATE, TIMED_INC_UPDATE):
                if self.current is None:
                    raise PeerProtocolError("update without a table definition")
                return decode_update(mtype, payload, self.current, self.rx_dict)
        return Unknown(cls, mtype, payload)


# ============================================================================ sessions

HEARTBEAT_S = 3.0               # send a heartbeat after this much silence
WATCHDOG_S = 5.0                # close a session that received nothing for this long
HANDSHAKE_TIMEOUT_S = 5.0
RECONNECT_S = 1.0               # retry period of a connector (HAProxy retries a failed connect 1 s later)
RESYNC_TIMEOUT_S = 5.0          # give up waiting for a lesson after this
LOCAL_WAIT_S = 5.0              # after a reload, wait this long for the old process's lesson


class PeerTable:
    """Replication state of one local table: the update ids of its local changes.

    Every local touch (the table's `on_local_update` hook) gives the entry a new update
    id; sessions push entries whose latest id is past their cursor, in id order."""

    def __init__(self, owner: "Peers", table: StickTable, local_id: int):
        self.owner = owner
        self.table = table
        self.local_id = local_id
        self.definition = table_def_for(table, local_id)
        self.update = 0
        self.dirty: dict = {}                 # key -> update id of its latest local change
        self.log: list = []                   # (update id, key), increasing ids
        table.on_local_update = self.touched

    def touched(self, row: int) -> None:
        self.update = uid = self.update + 1
        key = self.table.key(row)
        self.dirty[key] = uid
        self.log.append((uid, key))
        if len(self.log) > 2 * len(self.dirty) + 4096:
            self._compact()
        self.owner.wake()

    def _compact(self) -> None:
        index = self.table._index
        self.dirty = {k: u for k, u in self.dirty.items() if k in index}
        self.log = sorted((u, k) for k, u in self.dirty.items())

    def changes_after(self, cursor: int):
        """(update id, key) of the latest change of each entry changed after `cursor`."""
        log, dirty = self.log, self.dirty
        lo, hi = 0, len(log)
        while lo < hi:                         # first position with id > cursor
            mid = (lo + hi) // 2
            if log[mid][0] <= cursor:
                lo = mid + 1
            else:
                hi = mid
        for i in range(lo, len(log)):
            uid, key = log[i]
            if dirty.get(key) == uid:
                yield uid, key


@dataclass
class RemotePeer:
    name: str
    host: Optional[str]
    port: Optional[int]
    local: bool = False
    session: Optional["Session"] = None
    last_acked: dict = field(default_factory=dict)     # local table id -> update id
    last_status: str = "NONE"
    last_hdshk: Optional[float] = None
    new_conn: int = 0
    proto_err: int = 0
    coll: int = 0
    tx_hbt: int = 0
    rx_hbt: int = 0
    reconnect_at: float = 0.0


class Session:
    """One established peers session (either direction), used both ways."""

    def __init__(self, owner: "Peers", peer: RemotePeer, reader, writer, downgraded=False):
        self.owner = owner
        self.peer = peer
        self.reader = reader
        self.writer = writer
        self.downgraded = downgraded           # peer speaks 2.0: no timed updates
        self.decoder = StreamDecoder()
        self.rx_tables: dict[int, Optional[PeerTable]] = {}
        self.rx_last: dict[int, int] = {}      # sender table id -> last update id received
        self.rx_unacked: set[int] = set()
        self.tx_slots: list = [None] * DICT_SLOTS
        self.tx_slot_of: dict = {}
        self.tx_next_slot = 0
        self.tx_table: Optional[int] = None    # local id of the table last written
        self.tx_last_id: Optional[int] = None  # last update id written for tx_table
        self.cursors = {pt.local_id: peer.last_acked.get(pt.local_id, 0)
                        for pt in owner.tables}
        self.teaching = False
        self.teach_started = 0.0
        self.closed = False
        self._rx_current: Optional[int] = None
        self.src = self.addr = None
        self.last_rx = self.last_tx = time.monotonic()
        self.task: Optional[asyncio.Task] = None

    # ---- output

    def send(self, data: bytes) -> None:
        if self.closed or not data:
            return
        self.writer.write(data)
        self.last_tx = time.monotonic()

    def _define(self, pt: PeerTable, out: bytearray) -> None:
        if self.tx_table != pt.local_id:
            out += encode_table_def(pt.definition)
            self.tx_table = pt.local_id
            self.tx_last_id = None

    def _update_bytes(self, pt: PeerTable, row: int, uid: int, timed: bool, now: int) -> bytes:
        t = pt.table
        d = pt.definition
        values = {}
        for dt, vals in t.raw_values(row).items():
            std = _WIRE_STD[dt]
            conv = []
            for v in vals:
                if std == FRQP:
                    v = ((now - v[0]) & U32, v[1], v[2])
                elif std == DICT:
                    v = self._dict_ref(v)
                conv.append(v)
            values[dt] = conv if dt in _WIRE_ARRAY else conv[0]
        incremental = self.tx_last_id is not None and uid == (self.tx_last_id + 1) & U32
        u = Update(t.key(row), values, None if incremental else uid,
                   t.expire_in(row, now) if timed else None)
        self.tx_last_id = uid
        return encode_update(u, d)

    def _dict_ref(self, value: Optional[str]) -> Optional[DictRef]:
        if value is None:
            return None
        slot = self.tx_slot_of.get(value)
        if slot is not None:
            return DictRef(slot + 1, value, False)
        slot = self.tx_next_slot
        self.tx_next_slot = (slot + 1) % DICT_SLOTS
        old = self.tx_slots[slot]
        if old is not None:
            self.tx_slot_of.pop(old, None)
        self.tx_slots[slot] = value
        self.tx_slot_of[value] = slot
        return DictRef(slot + 1, value, True)

    def push(self) -> None:
        """Send every local change past this session's cursors (normal push)."""
        if self.closed or self.teaching or (self.peer.local and not self.owner.handing_over):
            return                              # the new process of a reload only learns
        transport = self.writer.transport
        if transport is not None and transport.get_write_buffer_size() > 4 << 20:
            # the peer reads slowly: try again later, cursors only move as we send
            self.owner._loop.call_later(0.05, self.push)
            return
        out = bytearray()
        now = now_ms()
        for pt in self.owner.tables:
            cursor = self.cursors.get(pt.local_id, 0)
            for uid, key in list(pt.changes_after(cursor)):
                row = pt.table.lookup_key(key, now)
                cursor = uid
                if row is None:
                    continue
                self._define(pt, out)
                out += self._update_bytes(pt, row, uid, False, now)
                if len(out) > 65536:
                    self.send(bytes(out))
                    out.clear()
            self.cursors[pt.local_id] = cursor
        self.send(bytes(out))

    def teach(self) -> None:
        """Send the whole content of every shared table (a resync lesson)."""
        self.teaching = True
        self.teach_started = time.monotonic()
        now = now_ms()
        out = bytearray()
        for pt in self.owner.tables:
            self.tx_table = None
            self._define(pt, out)
            uid = 0
            for key, row in pt.table.entries():
                if pt.table.lookup_key(key, now) is None:
                    continue
                uid += 1
                out += self._update_bytes(pt, row, uid, not self.downgraded, now)
                if len(out) > 65536:
                    self.send(bytes(out))
                    out.clear()
            self.cursors[pt.local_id] = pt.update
        out += frame(CLASS_CONTROL, RESYNC_FINISHED if self.owner.synced else RESYNC_PARTIAL)
        self.send(bytes(out))

    # ---- input

    def handle(self, msg) -> None:
        if isinstance(msg, Control):
            t = msg.type
            if t == RESYNC_REQUEST:
                self.teach()
            elif t in (RESYNC_FINISHED, RESYNC_PARTIAL):
                self.send(frame(CLASS_CONTROL, RESYNC_CONFIRM))
                self.owner.lesson_done(self, finished=(t == RESYNC_FINISHED))
            elif t == RESYNC_CONFIRM:
                self.teaching = False
                self.push()
            elif t == HEARTBEAT:
                self.peer.rx_hbt += 1
            return
        if isinstance(msg, Error):
            raise PeerProtocolError(f"peer reported error {msg.type}")
        if isinstance(msg, TableDef):
            self.rx_tables[msg.table_id] = self.owner.match_table(msg)
            self.rx_last.setdefault(msg.table_id, 0)
            self._rx_current = msg.table_id
            return
        if isinstance(msg, Switch):
            if msg.table_id not in self.rx_tables:
                raise PeerProtocolError("switch to an undefined table")
            self._rx_current = msg.table_id
            return
        if isinstance(msg, Ack):
            if not self.teaching:
                for pt in self.owner.tables:
                    if pt.local_id == msg.table_id:
                        self.peer.last_acked[pt.local_id] = msg.update_id
            return
        if isinstance(msg, Update):
            tid = self._rx_current
            uid = msg.update_id
            if uid is None:
                uid = (self.rx_last.get(tid, 0) + 1) & U32
            self.rx_last[tid] = uid
            self.rx_unacked.add(tid)
            pt = self.rx_tables.get(tid)
            if pt is not None:
                self.owner.apply(pt, msg)
            return
        # unknown classes/types are skipped

    def flush_acks(self) -> None:
        out = bytearray()
        for tid in sorted(self.rx_unacked):
            out += encode_ack(Ack(tid, self.rx_last[tid]))
        self.rx_unacked.clear()
        self.send(bytes(out))

    async def run(self) -> None:
        """Read and process until the session ends (EOF, error, watchdog)."""
        try:
            while not self.closed:
                try:
                    data = await asyncio.wait_for(self.reader.read(65536), WATCHDOG_S)
                except asyncio.TimeoutError:
                    log.info("peers %s: %s: no traffic for %ss, closing", self.owner.name,
                             self.peer.name, WATCHDOG_S)
                    break
                if not data:
                    break
                self.last_rx = time.monotonic()
                try:
                    for msg in self.decoder.feed(data):
                        self.handle(msg)
                except Exception as e:                # hostile or broken input: this session only
                    self.peer.proto_err += 1
                    log.warning("peers %s: %s: protocol error: %s", self.owner.name,
                                self.peer.name, e)
                    self.send(frame(CLASS_ERROR, ERR_SIZE if str(e) == "size" else ERR_PROTOCOL))
                    break
                self.flush_acks()
                await self.writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        log.debug("peers %s: %s: session closed", self.owner.name, self.peer.name)
        try:
            self.writer.close()
        except Exception:
            pass
        if self.peer.session is self:
            self.peer.session = None
            self.peer.reconnect_at = time.monotonic() + random.uniform(0.05, 2.049)
        self.owner.session_closed(self)


class Peers:
    """One `peers` section at run time: a listener on the local peer's address, one
    connector per remote peer, and the sessions that replicate the shared tables.

        peers = Peers("mypeers", local_name, [(name, host, port), ...], tables)
        await peers.start(); ...; await peers.stop()

    `tables` are the StickTables replicated by this section (those declared with `peers
    <section>` and the section's own `table` lines), in declaration order."""

    def __init__(self, name: str, local_name: str, peers: Sequence[tuple],
                 tables: Sequence[StickTable], bind: Optional[tuple] = None,
                 expect_local: bool = False):
        self.name = name
        self.local_name = local_name
        self.peers: list[RemotePeer] = []
        for pname, host, port in peers:
            self.peers.append(RemotePeer(pname, host, port, local=(pname == local_name)))
        self.bind = bind
        self.tables = [PeerTable(self, t, i + 1) for i, t in enumerate(tables)]
        self.synced = False
        self.resync_from: Optional[RemotePeer] = None
        # reload hand-over (HAProxy's -sf): the new process waits up to LOCAL_WAIT_S for
        # the old one's lesson over the local peer before asking a remote peer; the old
        # one, soft-stopping, is `handing_over` (see hand_over())
        self.expect_local = expect_local
        self.local_lesson_done = False
        self.handing_over = False
        self.started_at = time.monotonic()
        self.server: Optional[asyncio.AbstractServer] = None
        self.tasks: list[asyncio.Task] = []
        self._wake_pending = False
        self._loop: Optional[asyncio.AbstractEventLoop] = None

    # ---- life cycle

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        local = next((p for p in self.peers if p.local), None)
        if local is None:
            # HAProxy drops such a section ("no peer named ..."): nothing to replicate
            log.warning("peers %s: no peer named '%s' (the local peer): section not started",
                        self.name, self.local_name)
            for t in self.tables:
                t.table.on_local_update = None
            return
        addr = self.bind or ((local.host, local.port) if local and local.host else None)
        if addr is not None:
            # SO_REUSEPORT: the new process of a reload listens before the old one stops
            self.server = await asyncio.start_server(self._accept, addr[0], addr[1],
                                                     reuse_address=True, reuse_port=True)
        if not any(not p.local for p in self.peers):
            self.synced = True
        self.tasks.append(self._loop.create_task(self._maintain()))

    async def stop(self) -> None:
        for t in self.tables:
            t.table.on_local_update = None
        for task in self.tasks:
            task.cancel()
        if self.server is not None:
            self.server.close()
        for p in self.peers:
            if p.session is not None:
                p.session.close()
        for task in self.tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        if self.server is not None:
            await self.server.wait_closed()

    def wake(self) -> None:
        """A local change: push it on every session soon (once per loop turn)."""
        if self._wake_pending or self._loop is None:
            return
        self._wake_pending = True
        self._loop.call_soon(self._push_all)

    def _push_all(self) -> None:
        self._wake_pending = False
        for p in self.peers:
            s = p.session
            if s is not None and not s.closed:
                try:
                    s.push()
                except Exception as e:                 # a broken session must not stop others
                    log.warning("peers %s: %s: push failed: %r", self.name, p.name, e)
                    s.close()

    async def _maintain(self) -> None:
        """Connectors, heartbeats and the resync timeout, checked every 100 ms."""
        while True:
            now = time.monotonic()
            wait = RESYNC_TIMEOUT_S + (LOCAL_WAIT_S if self.expect_local else 0)
            if not self.synced and now - self.started_at > wait:
                self.synced = True
            if not self.synced and self.resync_from is None and not self._waiting_local(now):
                for p in self.peers:                  # ask a remote peer already connected
                    if not p.local and p.session is not None and not p.session.closed:
                        self.resync_from = p
                        p.session.send(frame(CLASS_CONTROL, RESYNC_REQUEST))
                        break
            for p in self.peers:
                s = p.session
                if p.local and s is None:
                    continue                          # only the old process calls its local peer
                if s is None:
                    if self.handing_over:
                        continue
                    if now >= p.reconnect_at and p.host:
                        p.reconnect_at = now + RECONNECT_S
                        self.tasks.append(self._loop.create_task(self._connect(p)))
                else:
                    if s.teaching and now - s.teach_started > RESYNC_TIMEOUT_S:
                        s.teaching = False            # no confirm came: resume pushing
                        s.push()
                    if now - s.last_tx >= HEARTBEAT_S:
                        s.send(frame(CLASS_CONTROL, HEARTBEAT))
                        p.tx_hbt += 1
            self.tasks = [t for t in self.tasks if not t.done() or t is asyncio.current_task()]
            await asyncio.sleep(0.1)

    # ---- handshake

    async def _connect(self, p: RemotePeer) -> None:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(p.host, p.port), HANDSHAKE_TIMEOUT_S)
        except (OSError, asyncio.TimeoutError):
            p.last_status = "CONN"
            return
        try:
            writer.write(encode_hello(p.name, self.local_name, os.getpid()))
            line = await asyncio.wait_for(reader.readline(), HANDSHAKE_TIMEOUT_S)
            status = line.strip().decode("latin-1", "replace")
        except (OSError, asyncio.TimeoutError):
            writer.close()
            p.last_status = "HSHK"
            return
        p.last_hdshk = time.monotonic()
        if status != "200":
            p.last_status = {"300": "TOOM", "501": "BADP", "502": "BADV", "503": "LPRB",
                             "504": "BPRB"}.get(status, "HSHK")
            log.warning("peers %s: %s refused the session (status %r)", self.name, p.name, status)
            writer.close()
            return
        if p.session is not None or self.handing_over:  # an inbound session won the race
            writer.close()
            return
        self._establish(p, reader, writer)

    async def _accept(self, reader, writer) -> None:
        try:
            lines = []
            for _ in range(3):
                line = await asyncio.wait_for(reader.readline(), HANDSHAKE_TIMEOUT_S)
                if not line.endswith(b"\n"):
                    raise ConnectionError("handshake cut short")
                lines.append(line.rstrip(b"\r\n").decode("latin-1", "replace"))
        except (OSError, ConnectionError, asyncio.TimeoutError, ValueError):
            writer.close()
            return
        status, p, downgraded = self._check_hello(lines)
        writer.write(f"{status}\n".encode())
        if status != 200:
            log.warning("peers %s: refused a session from %s (status %d)", self.name,
                        lines[2].split(" ")[0] if len(lines) > 2 else "?", status)
            try:
                await writer.drain()
            except OSError:
                pass
            writer.close()
            return
        p.last_hdshk = time.monotonic()
        if p.session is not None:                      # collision: the new session wins
            p.coll += 1
            p.session.close()
        self._establish(p, reader, writer, downgraded)

    def _check_hello(self, lines: list[str]):
        status, caller, downgraded = check_hello(
            lines, self.local_name, lambda name: any(x.name == name for x in self.peers))
        if status != 200:
            return status, None, False
        p = next(x for x in self.peers if x.name == caller)
        if p.local and (p.session is not None or self.handing_over):
            return 300, None, False                    # one hand-over at a time
        return 200, p, downgraded

    def _waiting_local(self, now: float) -> bool:
        """True while the new process of a reload still expects the old one's lesson."""
        return (self.expect_local and not self.local_lesson_done
                and now - self.started_at < LOCAL_WAIT_S)

    def _establish(self, p: RemotePeer, reader, writer, downgraded: bool = False) -> None:
        s = Session(self, p, reader, writer, downgraded)
        log.debug("peers %s: %s: session established", self.name, p.name)
        try:
            s.src = writer.get_extra_info("sockname")
            s.addr = writer.get_extra_info("peername")
        except Exception:
            pass
        p.session = s
        p.last_status = "ESTA"
        p.new_conn += 1
        if p.local:
            if self.handing_over:
                s.teach()                              # the old process teaches unasked
        elif not self.synced and self.resync_from is None \
                and not self._waiting_local(time.monotonic()):
            self.resync_from = p
            s.send(frame(CLASS_CONTROL, RESYNC_REQUEST))
        s.push()
        s.task = self._loop.create_task(s.run())
        self.tasks.append(s.task)

    # ---- table mapping and applying updates

    def match_table(self, d: TableDef) -> Optional[PeerTable]:
        for pt in self.tables:
            ld = pt.definition
            if ld.name == d.name:
                if ld.key_type != d.key_type or ld.key_len != d.key_len:
                    log.warning("peers %s: table %s: key type/length differ from the peer's, "
                                "its updates are ignored", self.name, d.name)
                    return None
                return pt
        return None

    def apply(self, pt: PeerTable, u: Update) -> None:
        t = pt.table
        now = now_ms()
        values = {}
        for dt, v in u.values.items():
            if dt not in t._fields:
                continue
            std = _WIRE_STD[dt]
            vals = v if dt in _WIRE_ARRAY else [v]
            conv = []
            for e in vals:
                if std == FRQP:
                    e = ((now - e[0]) & ~1 & U32, e[1], e[2])
                elif std == DICT:
                    e = None if e is None else e.value
                conv.append(e)
            values[dt] = conv
        key = t.key_of(u.key)                       # normalised like local keys
        if key is not None:
            t.apply_remote(key, values, u.expire, now)

    def lesson_done(self, s: Session, finished: bool) -> None:
        if s.peer.local:
            self.local_lesson_done = True
            log.info("peers %s: learned the tables from the old process (%s)", self.name,
                     "complete" if finished else "partial")
        if finished or s.peer is self.resync_from:
            self.synced = True

    def session_closed(self, s: Session) -> None:
        if self.resync_from is s.peer and not self.synced:
            self.resync_from = None
        if s.peer.local:
            self.local_lesson_done = True              # whatever came, stop waiting

    async def hand_over(self, timeout: float = LOCAL_WAIT_S) -> bool:
        """Soft stop of the old process of a reload (HAProxy's -sf): stop listening and
        close the remote sessions, call the local peer's address (where the new process
        listens now), teach it every shared table with timed updates, and wait for its
        confirmation. The session stays up to push what in-flight requests still change
        until stop(). Returns True when the lesson was confirmed."""
        local = next((p for p in self.peers if p.local), None)
        if local is None or self._loop is None:
            return False
        self.handing_over = True
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None
        for p in self.peers:
            if not p.local and p.session is not None:
                p.session.close()
        addr = self.bind or ((local.host, local.port) if local.host else None)
        if addr is None:
            return False
        deadline = time.monotonic() + timeout
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(*addr), timeout)
            writer.write(encode_hello(self.local_name, self.local_name, os.getpid()))
            line = await asyncio.wait_for(reader.readline(), timeout)
        except (OSError, asyncio.TimeoutError) as e:
            log.warning("peers %s: no new process at the local peer address %s:%s (%s): "
                        "tables not handed over", self.name, addr[0], addr[1], e)
            return False
        if line.strip() != b"200":
            log.warning("peers %s: the local peer refused the hand-over (status %r)",
                        self.name, line.strip().decode("latin-1", "replace"))
            writer.close()
            return False
        local.last_hdshk = time.monotonic()
        self._establish(local, reader, writer)
        s = local.session
        while s is not None and not s.closed and s.teaching and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        done = s is not None and not s.closed and not s.teaching
        log.info("peers %s: tables handed over to the new process: %s", self.name,
                 "confirmed" if done else "no confirmation")
        return done


async def start_peers(cfg, tables: dict, cli_local_name: Optional[str] = None,
                      commands=None, expect_local: bool = False) -> list[Peers]:
    """Start replication for a parsed configuration: one `Peers` per enabled peers
    section, over the proxy's tables (name -> StickTable); registers `show peers` in a
    runtime API registry when given. Stop them with `stop_peers()` (and start again with
    the new tables after a reload)."""
    sections = peers_for_config(cfg, tables, local_peer_name(cfg, cli_local_name))
    for sec in sections:
        sec.expect_local = expect_local
        await sec.start()
    if commands is not None:
        register_commands(lambda: sections, commands)
    return sections


async def hand_over(sections: Sequence[Peers]) -> None:
    """The old process of a reload teaches its tables to the new one (Peers.hand_over)."""
    await asyncio.gather(*(sec.hand_over() for sec in sections))


async def stop_peers(sections: Sequence[Peers]) -> None:
    for sec in sections:
        await sec.stop()


def local_peer_name(cfg, cli_name: Optional[str] = None) -> str:
    """The local peer name as HAProxy chooses it: `-L`, else `localpeer`, else the host
    name."""
    return cli_name or getattr(cfg.global_, "localpeer", None) or socket.gethostname()


def peers_for_config(cfg, tables: dict, local_name: str) -> list[Peers]:
    """Build the `Peers` of every enabled peers section of a parsed configuration
    (proxy/model.Config). `tables`: name -> StickTable as the proxy built them."""
    out = []
    for sec in cfg.peers.values():
        if sec.disabled:
            continue
        shared = [t for name, t in tables.items()
                  if t.peers == sec.name or name.startswith(sec.name + "/")]
        bind = (sec.bind.host, sec.bind.port) if sec.bind is not None else None
        out.append(Peers(sec.name, local_name, [(p.name, p.host, p.port) for p in sec.peers],
                         shared, bind))
    return out


# ============================================================================ show peers

def _ago(t: Optional[float], now: float) -> str:
    return "<NEVER>" if t is None else f"{max(0, int(now - t))}s"


def _addr(a) -> str:
    return f"{a[0]}:{a[1]}" if a else "-"


def show_peers(sections: Sequence[Peers], name: Optional[str] = None) -> str:
    """`show peers [section]` in HAProxy's layout (pointers are ids; flags are not kept)."""
    now = time.monotonic()
    out = []
    for sec in sections:
        if name and sec.name != name:
            continue
        started = time.strftime("%d/%b/%Y:%H:%M:%S",
                                time.localtime(time.time() - (now - sec.started_at)))
        left = RESYNC_TIMEOUT_S - (now - sec.started_at)
        resync = "<PAST>" if sec.synced or left <= 0 else f"{int(left)}s"
        out.append(f"0x{id(sec):x}: [{started}] id={sec.name} disabled=0 flags=0x0 "
                   f"resync_timeout={resync} task_calls=0\n")
        for p in reversed(sec.peers):
            s = p.session
            role = "local" if p.local else "remote"
            addr = f"{p.host}:{p.port}" if p.host else (
                f"{sec.bind[0]}:{sec.bind[1]}" if sec.bind else "-")
            out.append(f"  0x{id(p):x}: id={p.name}({role},{'active' if s else 'inactive'}) "
                       f"addr={addr} last_status={p.last_status} "
                       f"last_hdshk={_ago(p.last_hdshk, now)}\n")
            reconnect = "<NEVER>" if p.local else f"{max(0, int(p.reconnect_at - now))}s"
            heartbeat = "<NEVER>" if s is None else f"{max(0, int(HEARTBEAT_S - (now - s.last_tx)))}s"
            out.append(f"        reconnect={reconnect} heartbeat={heartbeat} confirm=0 "
                       f"tx_hbt={p.tx_hbt} rx_hbt={p.rx_hbt} no_hbt=0 new_conn={p.new_conn} "
                       f"proto_err={p.proto_err} coll={p.coll}\n")
            if s is None:
                out.append("        flags=0x0\n")
            else:
                out.append(f"        flags=0x0 appctx:0x{id(s):x} st0=7 st1=0 task_calls=0 "
                           f"state=EST\n")
                out.append(f"        xprt=RAW src={_addr(s.src)} addr={_addr(s.addr)}\n")
            out.append("        shared tables:\n")
            for pt in reversed(sec.tables):
                remote_id = 0
                remote_data = 0
                if s is not None:
                    for rid, rpt in s.rx_tables.items():
                        if rpt is pt:
                            remote_id = rid
                            d = s.decoder.defs.get(rid)
                            remote_data = d.data_types if d else 0
                acked = p.last_acked.get(pt.local_id, 0)
                pushed = s.cursors.get(pt.local_id, 0) if s is not None else 0
                got = s.rx_last.get(remote_id, 0) if s is not None else 0
                out.append(f"          0x{id(pt):x} local_id={pt.local_id} remote_id={remote_id} "
                           f"flags=0x0 remote_data=0x{remote_data:x}\n")
                out.append(f"              last_acked={acked} last_pushed={pushed} last_get={got} "
                           f"teaching_origin=0 update={pt.update}\n")
                out.append(f"              table:0x{id(pt.table):x} id={pt.table.name} "
                           f"update={pt.update} localupdate={pt.update} commitupdate={acked} "
                           f"refcnt=1\n")
                out.append('        Dictionary cache not dumped (use "show peers dict")\n')
    return "".join(out)


def register_commands(sections: Callable[[], Sequence[Peers]], registry) -> None:
    """Add `show peers [section]` to a runtime API command registry."""
    def handler(cli, args):
        rest = [a for a in args[2:] if a not in ("dict", "-")]
        return show_peers(sections(), rest[0] if rest else None)
    registry.register(("show", "peers"), handler,
                      "show peers [dict|-] [section]           : dump some information about "
                      "all the peers or this peers section")
