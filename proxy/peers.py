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

from .stick_table import DATA_TYPE_BY_ID, DICT, FRQP, SINT, ULL, StickTable

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
