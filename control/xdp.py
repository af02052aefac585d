"""The XDP shield's loader and map access: build bpf/edgestick.c with bcc, pin its maps and
program under bpffs, attach/detach it per interface (any network namespace), and read or
change its state (config, allow/deny lists, bans, sources, counters).

The C structs come from bpf/edgestick.h, parsed here (see the header's first comment for
the subset it may use), so the program and this module share one definition.

Typical use (root):

    shield = Shield.build("/sys/fs/bpf/edgestick", ShieldConfig(conn_rate_limit=200))
    shield.attach("eth0", mode="native")            # or "generic", "auto"; netns="ns1"
    shield.list_add("deny", "203.0.113.0/24")
    shield.add_ban("198.51.100.7", ttl_ms=600_000)
    for s in shield.sources(): print(s.source, s.conn_rate, s.pkt_rate)
    shield.counters()                               # {("drop", "deny"): Counter(...), ...}

A restarted control plane calls `Shield.build()` with the same pin folder: the pinned maps
(config, lists, bans, sources, counters) are adopted as they are, and so is the pinned
program when it was built from the same source and flags (no compile); a new build is
compiled, and attaching with the same mode replaces the program atomically. `Shield.open()` adopts the pins without
compiling (readers: metrics, ctl). Maps are read and written with libbpf through ctypes.

Times: the program reads CLOCK_MONOTONIC_COARSE (`bpf_ktime_get_coarse_ns()`: the
CLOCK_MONOTONIC base at tick resolution, a few ms behind `time.monotonic_ns()` at most;
the precise clock costs a third of the per-packet path). Ban expiries and last-seen are
nanoseconds on it (`kernel_now_ns()`); rates use HAProxy's ms tick, its low 32 bits in ms
(`now_tick_ms()`).
"""
from __future__ import annotations

import ctypes
import errno
import hashlib
import ipaddress
import os
import re
import shutil
import time
from dataclasses import dataclass, fields
from pathlib import Path

from edgestick import freq_ctr
from edgestick.bpf import SOURCE_DIR

HEADER = SOURCE_DIR / "edgestick.h"
PROGRAM = SOURCE_DIR / "edgestick.c"
DEFAULT_PIN_DIR = "/sys/fs/bpf/edgestick"
PROG_FUNC = "edgestick_xdp"
PROG_PIN = "prog"

# XDP attach flags (uapi/linux/if_link.h)
XDP_FLAGS_SKB_MODE = 1 << 1
XDP_FLAGS_DRV_MODE = 1 << 2
MODE_FLAGS = {"auto": 0, "generic": XDP_FLAGS_SKB_MODE, "native": XDP_FLAGS_DRV_MODE}
BPF_NOEXIST = 1
BPF_F_NO_COMMON_LRU = 1 << 1
BPF_F_TEST_XDP_LIVE_FRAMES = 1 << 1
XDP_ACTIONS = {0: "aborted", 1: "drop", 2: "pass", 3: "tx", 4: "redirect"}


# ---- the shared header ---------------------------------------------------------------

_CTYPES = {"__u8": ctypes.c_uint8, "__u16": ctypes.c_uint16, "__u32": ctypes.c_uint32,
           "__u64": ctypes.c_uint64}


def _int(text: str, consts: dict[str, int]) -> int:
    text = text.strip()
    if text in consts:
        return consts[text]
    return int(re.sub(r"[uUlL]+$", "", text), 0)


def parse_header(text: str) -> tuple[dict[str, int], dict[str, type]]:
    """Constants (#define ES_*, enum members) and ctypes structs of edgestick.h."""
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    text = re.sub(r"//[^\n]*", " ", text)
    consts: dict[str, int] = {}
    for name, value in re.findall(r"^\s*#define\s+(ES_\w+)\s+(\S+)\s*$", text, flags=re.M):
        consts[name] = _int(value, consts)
    for body in re.findall(r"\benum\s+\w+\s*\{(.*?)\}\s*;", text, flags=re.S):
        value = -1
        for item in filter(None, (i.strip() for i in body.split(","))):
            name, _, explicit = item.partition("=")
            value = _int(explicit, consts) if explicit.strip() else value + 1
            consts[name.strip()] = value
    structs: dict[str, type] = {}
    for name, body in re.findall(r"\bstruct\s+(\w+)\s*\{(.*?)\}\s*;", text, flags=re.S):
        members = []
        for decl in filter(None, (d.strip() for d in body.split(";"))):
            m = re.fullmatch(r"(struct\s+\w+|__u\d+)\s+(\w+)\s*(?:\[\s*(\w+)\s*\])?", decl)
            if not m:
                raise ValueError(f"edgestick.h: struct {name}: cannot parse member {decl!r}")
            ctype_name, field, count = m.groups()
            if ctype_name.startswith("struct"):
                ctype = structs[ctype_name.split()[1]]
            else:
                ctype = _CTYPES[ctype_name]
            if count:
                ctype = ctype * _int(count, consts)
            members.append((field, ctype))
        structs[name] = type(name, (ctypes.Structure,), {"_fields_": members})
    return consts, structs


C, STRUCTS = parse_header(HEADER.read_text())
EsAddr = STRUCTS["es_addr"]
EsLpmKey = STRUCTS["es_lpm_key"]
EsFreq = STRUCTS["es_freq"]
EsSource = STRUCTS["es_source"]
EsBan = STRUCTS["es_ban"]
EsListValue = STRUCTS["es_list_value"]
EsCounter = STRUCTS["es_counter"]
EsConfig = STRUCTS["es_config"]


def _enum_names(prefix: str, count_name: str) -> list[str]:
    names = {v: k[len(prefix):].lower() for k, v in C.items()
             if k.startswith(prefix) and k != count_name}
    return [names[i] for i in range(C[count_name])]


REASONS = _enum_names("ES_R_", "ES_REASON_COUNT")      # "none", "allow", "deny", "ban", ...
VERDICTS = _enum_names("ES_V_", "ES_VERDICT_COUNT")    # "pass", "drop", "would_drop"
BAN_ORIGINS = _enum_names("ES_BO_", "ES_BO_COUNT")      # "rule", "manual", "escalate", "fleet"

# map name -> (key type, value type, per-CPU)
MAPS = {
    "config": (ctypes.c_uint32, EsConfig, False),
    "allow": (EsLpmKey, EsListValue, False),
    "deny": (EsLpmKey, EsListValue, False),
    "bans": (EsAddr, EsBan, False),
    "sources": (EsAddr, EsSource, False),
    "counters": (ctypes.c_uint32, EsCounter, True),
    "new_sources": (ctypes.c_uint32, EsFreq, True),
}


# ---- libbpf through ctypes -----------------------------------------------------------

class BpfTestRunOpts(ctypes.Structure):
    """struct bpf_test_run_opts of libbpf 1.1."""
    _fields_ = [("sz", ctypes.c_size_t), ("data_in", ctypes.c_void_p),
                ("data_out", ctypes.c_void_p), ("data_size_in", ctypes.c_uint32),
                ("data_size_out", ctypes.c_uint32), ("ctx_in", ctypes.c_void_p),
                ("ctx_out", ctypes.c_void_p), ("ctx_size_in", ctypes.c_uint32),
                ("ctx_size_out", ctypes.c_uint32), ("retval", ctypes.c_uint32),
                ("repeat", ctypes.c_int), ("duration", ctypes.c_uint32),
                ("flags", ctypes.c_uint32), ("cpu", ctypes.c_uint32),
                ("batch_size", ctypes.c_uint32)]


class XdpMd(ctypes.Structure):
    """struct xdp_md, the context BPF_PROG_RUN takes for XDP programs."""
    _fields_ = [("data", ctypes.c_uint32), ("data_end", ctypes.c_uint32),
                ("data_meta", ctypes.c_uint32), ("ingress_ifindex", ctypes.c_uint32),
                ("rx_queue_index", ctypes.c_uint32), ("egress_ifindex", ctypes.c_uint32)]


def _libbpf() -> ctypes.CDLL:
    lib = ctypes.CDLL("libbpf.so.1", use_errno=True)
    vp, i = ctypes.c_void_p, ctypes.c_int
    for name, args in (("bpf_obj_get", [ctypes.c_char_p]),
                       ("bpf_obj_pin", [i, ctypes.c_char_p]),
                       ("bpf_map_lookup_elem", [i, vp, vp]),
                       ("bpf_map_update_elem", [i, vp, vp, ctypes.c_uint64]),
                       ("bpf_map_delete_elem", [i, vp]),
                       ("bpf_map_get_next_key", [i, vp, vp]),
                       ("bpf_obj_get_info_by_fd", [i, vp, ctypes.POINTER(ctypes.c_uint32)]),
                       ("bpf_prog_test_run_opts", [i, ctypes.POINTER(BpfTestRunOpts)]),
                       ("bpf_prog_get_fd_by_id", [ctypes.c_uint32]),
                       ("libbpf_num_possible_cpus", [])):
        getattr(lib, name).argtypes = args
        getattr(lib, name).restype = i
    return lib


LIBBPF = _libbpf()
NCPUS = LIBBPF.libbpf_num_possible_cpus()


def _check(ret: int, what: str) -> int:
    if ret < 0:
        code = -ret if ret < -1 else ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")
    return ret


def obj_info(fd: int) -> tuple[int, int, int, int, int]:
    """(type, id, key_size, value_size, max_entries) of a map fd; for a program fd only the
    first two are meaningful (type, id)."""
    buf = (ctypes.c_uint8 * 256)()
    size = ctypes.c_uint32(ctypes.sizeof(buf))
    _check(LIBBPF.bpf_obj_get_info_by_fd(fd, buf, ctypes.byref(size)), "bpf_obj_get_info_by_fd")
    return tuple(ctypes.cast(buf, ctypes.POINTER(ctypes.c_uint32))[i] for i in range(5))


def prog_info(prog_id: int) -> tuple[str, set[int]]:
    """(name, ids of the maps it uses) of a loaded program; ("", set()) if it is gone."""
    fd = LIBBPF.bpf_prog_get_fd_by_id(prog_id)
    if fd < 0:
        return "", set()
    try:
        # struct bpf_prog_info: nr_map_ids u32 @52, map_ids u64 pointer @56, name[16] @64
        info = (ctypes.c_uint8 * 256)()
        ids = (ctypes.c_uint32 * 64)()
        ctypes.c_uint32.from_buffer(info, 52).value = len(ids)
        ctypes.c_uint64.from_buffer(info, 56).value = ctypes.addressof(ids)
        size = ctypes.c_uint32(ctypes.sizeof(info))
        if LIBBPF.bpf_obj_get_info_by_fd(fd, info, ctypes.byref(size)) < 0:
            return "", set()
        count = min(ctypes.c_uint32.from_buffer(info, 52).value, len(ids))
        return bytes(info[64:80]).split(b"\0")[0].decode(), set(ids[:count])
    finally:
        os.close(fd)


def _build_id(cflags: list[str]) -> str:
    """What a compiled program depends on: its source, the header and the flags."""
    digest = hashlib.sha256(PROGRAM.read_bytes() + HEADER.read_bytes())
    digest.update("\0".join(cflags).encode())
    return digest.hexdigest()[:16]


def prog_test_run(prog_fd: int, frame: bytes, repeat: int = 1, flags: int = 0,
                  ctx: XdpMd | None = None, batch_size: int = 0) -> tuple[int, int]:
    """BPF_PROG_TEST_RUN: run an XDP program on `frame` `repeat` times.

    Returns (XDP action of the last run, average duration in ns). With
    flags=BPF_F_TEST_XDP_LIVE_FRAMES and a ctx naming an ingress interface, the frames are
    really transmitted/redirected (the bench's generator)."""
    data = ctypes.create_string_buffer(bytes(frame), len(frame))
    out = ctypes.create_string_buffer(max(len(frame), 64) + 256)
    opts = BpfTestRunOpts(sz=ctypes.sizeof(BpfTestRunOpts), data_in=ctypes.addressof(data),
                          data_size_in=len(frame), repeat=repeat, flags=flags,
                          batch_size=batch_size)
    if not flags & BPF_F_TEST_XDP_LIVE_FRAMES:
        opts.data_out = ctypes.addressof(out)
        opts.data_size_out = ctypes.sizeof(out)
    if ctx is not None:
        opts.ctx_in = ctypes.addressof(ctx)
        opts.ctx_size_in = ctypes.sizeof(ctx)
    _check(LIBBPF.bpf_prog_test_run_opts(prog_fd, ctypes.byref(opts)), "BPF_PROG_TEST_RUN")
    return opts.retval, opts.duration


class BpfMap:
    """A BPF map opened from its pin, with ctypes key/value types (per-CPU aware)."""

    def __init__(self, path: str | os.PathLike, key_type: type, value_type: type, percpu: bool):
        self.path = str(path)
        self.fd = _check(LIBBPF.bpf_obj_get(self.path.encode()), f"bpf_obj_get {self.path}")
        self.key_type, self.value_type, self.percpu = key_type, value_type, percpu
        _, self.id, key_size, value_size, self.max_entries = obj_info(self.fd)
        if (key_size, value_size) != (ctypes.sizeof(key_type), ctypes.sizeof(value_type)):
            os.close(self.fd)
            raise RuntimeError(
                f"pinned map {self.path} has key/value sizes {key_size}/{value_size}, "
                f"edgestick.h says {ctypes.sizeof(key_type)}/{ctypes.sizeof(value_type)}: "
                "an older layout is pinned; remove the pin folder and reload")
        # per-CPU values come as one slot per possible CPU, each rounded up to 8 bytes
        self._slot = (ctypes.sizeof(value_type) + 7) & ~7

    def _buffer(self):
        return (ctypes.c_uint8 * (self._slot * (NCPUS if self.percpu else 1)))()

    def lookup(self, key):
        """The value, a list of per-CPU values, or None when the key is absent."""
        buf = self._buffer()
        if LIBBPF.bpf_map_lookup_elem(self.fd, ctypes.byref(key), buf) < 0:
            code = ctypes.get_errno()
            if code == errno.ENOENT:
                return None
            raise OSError(code, f"lookup in {self.path}: {os.strerror(code)}")
        if self.percpu:
            return [self.value_type.from_buffer_copy(buf, i * self._slot) for i in range(NCPUS)]
        return self.value_type.from_buffer_copy(buf)

    def update(self, key, value, flags: int = 0) -> None:
        if self.percpu:
            buf = self._buffer()
            for i, v in enumerate(value):
                ctypes.memmove(ctypes.byref(buf, i * self._slot), ctypes.byref(v), ctypes.sizeof(v))
            value_ref = buf
        else:
            value_ref = ctypes.byref(value)
        _check(LIBBPF.bpf_map_update_elem(self.fd, ctypes.byref(key), value_ref, flags),
               f"update of {self.path}")

    def delete(self, key) -> bool:
        if LIBBPF.bpf_map_delete_elem(self.fd, ctypes.byref(key)) < 0:
            code = ctypes.get_errno()
            if code == errno.ENOENT:
                return False
            raise OSError(code, f"delete from {self.path}: {os.strerror(code)}")
        return True

    def keys(self):
        """Iterate the keys (a concurrent writer may make it skip or repeat an entry)."""
        key, prev = self.key_type(), None
        while LIBBPF.bpf_map_get_next_key(self.fd, None if prev is None else ctypes.byref(prev),
                                          ctypes.byref(key)) == 0:
            yield self.key_type.from_buffer_copy(key)
            prev = self.key_type.from_buffer_copy(key)

    def items(self):
        for key in self.keys():
            value = self.lookup(key)
            if value is not None:
                yield key, value

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


# ---- addresses -----------------------------------------------------------------------

_V4_MAPPED = bytes(10) + b"\xff\xff"


def _addr16(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bytes:
    return _V4_MAPPED + ip.packed if ip.version == 4 else ip.packed


def lpm_key(cidr: str) -> EsLpmKey:
    """The trie key of an IPv4/IPv6 address or CIDR (host bits are cleared)."""
    try:
        net = ipaddress.ip_network(cidr.strip(), strict=False)
    except ValueError as e:
        raise ValueError(f"'{cidr}' is not an IPv4/IPv6 address or CIDR") from None
    key = EsLpmKey(prefixlen=net.prefixlen + (96 if net.version == 4 else 0))
    key.addr[:] = _addr16(net.network_address)
    return key


def lpm_cidr(key: EsLpmKey) -> str:
    raw = bytes(key.addr)
    if raw[:12] == _V4_MAPPED and key.prefixlen >= 96:
        return str(ipaddress.ip_network((raw[12:], key.prefixlen - 96)))
    return str(ipaddress.ip_network((raw, key.prefixlen)))


def source_key(addr: str, ipv6_prefix: int) -> EsAddr:
    """The per-source key: an IPv4 address (or /32), or an IPv6 address or CIDR at the
    source granularity (/ipv6_prefix). Wider ranges are rejected: use the deny list."""
    try:
        net = ipaddress.ip_network(addr.strip(), strict=False)
    except ValueError:
        raise ValueError(f"'{addr}' is not an IPv4/IPv6 address") from None
    if net.version == 4 and net.prefixlen != 32:
        raise ValueError(f"'{addr}': IPv4 bans are per address (/32); use deny for a range")
    if net.version == 6:
        if net.prefixlen != 128 and net.prefixlen != ipv6_prefix:
            raise ValueError(f"'{addr}': IPv6 sources are grouped per /{ipv6_prefix}; "
                             "ban an address or that prefix, or use deny for a range")
        net = ipaddress.ip_network((net.network_address, ipv6_prefix), strict=False)
    key = EsAddr()
    key.a[:] = _addr16(net.network_address)
    return key


def source_str(key: EsAddr, ipv6_prefix: int) -> str:
    raw = bytes(key.a)
    if raw[:12] == _V4_MAPPED:
        return str(ipaddress.IPv4Address(raw[12:]))
    return str(ipaddress.ip_network((raw, ipv6_prefix), strict=False))


# ---- configuration -------------------------------------------------------------------

_LIMITS = {  # ShieldConfig field -> (es_config field, enable bit)
    "conn_rate_limit": ("conn_rate_limit", "ES_LIM_CONN_RATE"),
    "pkt_rate_limit": ("pkt_rate_limit", "ES_LIM_PKT_RATE"),
    "byte_rate_limit": ("byte_rate_limit", "ES_LIM_BYTE_RATE"),
    "ban_conn_rate": ("ban_conn_rate", "ES_LIM_BAN_CONN_RATE"),
    "ban_pkt_rate": ("ban_pkt_rate", "ES_LIM_BAN_PKT_RATE"),
    "ban_byte_rate": ("ban_byte_rate", "ES_LIM_BAN_BYTE_RATE"),
    "new_sources_limit": ("new_sources_limit", "ES_LIM_NEW_SOURCES"),
}
_MODES = {"enforce": C["ES_MODE_ENFORCE"], "dry-run": C["ES_MODE_DRY_RUN"]}
_MALFORMED = {"pass": C["ES_MALFORMED_PASS"], "drop": C["ES_MALFORMED_DROP"]}
U32_MAX = 0xFFFFFFFF


@dataclass
class ShieldConfig:
    """What the XDP program enforces. A limit of None is off. Rates are events per
    `period_ms` (HAProxy's conn_rate(<period>) etc.); a limit means "drop when gt".

    conn_rate_limit   drop new TCP connections (SYN without ACK) when conn_rate > limit
    pkt_rate_limit    drop packets when pkt_rate > limit
    byte_rate_limit   drop packets when byte_rate (frame bytes) > limit
    ban_*             ban the source for ban_ttl_ms when that rate > the value
    new_sources_limit flood guard, per CPU: when new sources arrive faster than this per
                      period, packets of untracked sources are dropped (reason "flood")
                      and get no state; tracked sources are unaffected
    """
    period_ms: int = 1000
    mode: str = "enforce"               # "enforce" | "dry-run"
    malformed: str = "pass"             # "pass" | "drop"
    ipv6_prefix: int = 64
    conn_rate_limit: int | None = None
    pkt_rate_limit: int | None = None
    byte_rate_limit: int | None = None
    ban_conn_rate: int | None = None
    ban_pkt_rate: int | None = None
    ban_byte_rate: int | None = None
    new_sources_limit: int | None = None
    ban_ttl_ms: int = 600_000

    def validate(self) -> None:
        if self.mode not in _MODES:
            raise ValueError(f"mode must be one of {', '.join(_MODES)}, not '{self.mode}'")
        if self.malformed not in _MALFORMED:
            raise ValueError(f"malformed must be one of {', '.join(_MALFORMED)}, not '{self.malformed}'")
        if not 1 <= self.period_ms <= 0x7FFFFFFF:
            raise ValueError(f"period_ms must be 1..{0x7FFFFFFF}, not {self.period_ms}")
        if not 1 <= self.ipv6_prefix <= 128:
            raise ValueError(f"ipv6_prefix must be 1..128, not {self.ipv6_prefix}")
        if not 0 <= self.ban_ttl_ms <= 2 ** 53:
            raise ValueError(f"ban_ttl_ms must be >= 0, not {self.ban_ttl_ms}")
        for name in _LIMITS:
            value = getattr(self, name)
            if value is not None and not 0 <= value < U32_MAX:
                raise ValueError(f"{name} must be 0..{U32_MAX - 1} or off, not {value}")

    def to_struct(self) -> EsConfig:
        self.validate()
        raw = EsConfig(period_ms=self.period_ms, mode=_MODES[self.mode],
                       malformed=_MALFORMED[self.malformed], ipv6_prefix=self.ipv6_prefix,
                       ban_ttl_ns=self.ban_ttl_ms * 1_000_000)
        for name, (field, bit) in _LIMITS.items():
            value = getattr(self, name)
            if value is not None:
                setattr(raw, field, value)
                raw.limits_enabled |= C[bit]
        return raw

    @classmethod
    def from_struct(cls, raw: EsConfig) -> "ShieldConfig":
        modes = {v: k for k, v in _MODES.items()}
        malformed = {v: k for k, v in _MALFORMED.items()}
        cfg = cls(period_ms=raw.period_ms or 1000, mode=modes.get(raw.mode, "enforce"),
                  malformed=malformed.get(raw.malformed, "pass"), ipv6_prefix=raw.ipv6_prefix or 64,
                  ban_ttl_ms=raw.ban_ttl_ns // 1_000_000)
        for name, (field, bit) in _LIMITS.items():
            setattr(cfg, name, getattr(raw, field) if raw.limits_enabled & C[bit] else None)
        return cfg


# ---- results -------------------------------------------------------------------------

@dataclass(frozen=True)
class Ban:
    source: str
    expires_ns: int | None        # CLOCK_MONOTONIC ns; None = never
    remaining_ms: int | None
    reason: str                   # the rate that made a rule ban; "none" for the other origins
    origin: str = "manual"        # see BAN_ORIGINS

    @property
    def why(self) -> str:
        """One word for `show bans`: the rate of a rule ban, else who made it."""
        if self.origin == "rule":
            return "manual" if self.reason == "none" else self.reason   # made before origins
        return self.origin


@dataclass(frozen=True)
class SourceStats:
    source: str
    conn_rate: int                # events per period, read like HAProxy's read_freq_ctr
    pkt_rate: int
    byte_rate: int
    drops: int
    last_seen_ns: int             # CLOCK_MONOTONIC ns


@dataclass(frozen=True)
class Counter:
    packets: int
    bytes: int


CLOCK_MONOTONIC_COARSE = getattr(time, "CLOCK_MONOTONIC_COARSE", 6)


def kernel_now_ns() -> int:
    """The program's clock: bpf_ktime_get_coarse_ns(), i.e. CLOCK_MONOTONIC_COARSE."""
    return time.clock_gettime_ns(CLOCK_MONOTONIC_COARSE)


def now_tick_ms() -> int:
    """The program's ms tick: kernel_now_ns() / 1e6, as a wrapping u32."""
    return (kernel_now_ns() // 1_000_000) & U32_MAX


def read_freq(f: EsFreq, period_ms: int, now_ms: int) -> int:
    """HAProxy's read_freq_ctr_period() on a counter the program maintains (events/period)."""
    return freq_ctr.read_freq(f.curr_tick, f.curr_ctr, f.prev_ctr, period_ms, now_ms)


# ---- the shield ----------------------------------------------------------------------

def _ipr(netns: str | None):
    from pyroute2 import IPRoute
    # flags=0: a misspelt namespace is an error, not a new namespace
    return IPRoute(netns=netns, flags=0) if netns else IPRoute()


def _ifindex(ipr, ifname: str, netns: str | None) -> int:
    found = ipr.link_lookup(ifname=ifname)
    if not found:
        where = f" in network namespace {netns}" if netns else ""
        raise ValueError(f"no interface '{ifname}'{where}")
    return found[0]


def xdp_attached(ifname: str, netns: str | None = None) -> tuple[str | None, int]:
    """(mode, program id) of the XDP program on an interface: mode is "native",
    "generic", "offload" or None (nothing attached; program id 0)."""
    with _ipr(netns) as ipr:
        link = ipr.link("get", index=_ifindex(ipr, ifname, netns))[0]
    xdp = link.get("IFLA_XDP")
    if xdp is None:
        return None, 0
    attached = xdp.get("IFLA_XDP_ATTACHED")
    names = {0: None, 1: "native", 2: "generic", 3: "offload", "xdp": "native",
             "xdpgeneric": "generic", "xdpoffload": "offload", None: None}
    return names.get(attached, str(attached)), xdp.get("IFLA_XDP_PROG_ID") or 0


def xdp_detach(ifname: str, netns: str | None = None, mode: str | None = None) -> bool:
    """Detach whatever XDP program is on an interface, with the mode it was attached with
    (a detach in another mode reports success and leaves the program). Returns False when
    nothing was attached."""
    attached, _ = xdp_attached(ifname, netns)
    if attached is None:
        return False
    if mode not in (None, "auto") and mode != attached:
        raise ValueError(f"{ifname} has a {attached} XDP program, not {mode}")
    flags = MODE_FLAGS.get(attached, 0)
    with _ipr(netns) as ipr:
        ipr.link("set", index=_ifindex(ipr, ifname, netns),
                 xdp={"attrs": [("IFLA_XDP_FD", -1), ("IFLA_XDP_FLAGS", flags)]})
    return True


class Shield:
    """The XDP shield behind one bpffs pin folder. Build (compile + pin) or open (adopt)."""

    def __init__(self, pin_dir: str | os.PathLike, bpf=None):
        self.pin_dir = Path(pin_dir)
        self._bpf = bpf                         # the bcc module, kept alive with its fds
        self.maps = {name: BpfMap(self.pin_dir / name, *spec) for name, spec in MAPS.items()}
        self.prog_fd = _check(LIBBPF.bpf_obj_get(str(self.pin_dir / PROG_PIN).encode()),
                              f"bpf_obj_get {self.pin_dir / PROG_PIN}")

    # -- life cycle --

    @classmethod
    def build(cls, pin_dir: str | os.PathLike = DEFAULT_PIN_DIR, config: ShieldConfig | None = None,
              *, sources_max: int | None = None, bans_max: int | None = None,
              list_max: int | None = None, per_cpu_lru: bool = False,
              rebuild: bool = False) -> "Shield":
        """Compile bpf/edgestick.c with bcc (~1-3 s), pin or adopt its maps under
        `pin_dir`, pin the program as `pin_dir/prog`. A program pinned there by an earlier
        build of the same source and flags (`prog_<build id>`, using those maps) is adopted
        instead, without compiling, unless `rebuild`. `config` is written if given, or if
        the config map is fresh (a restart keeps the pinned config otherwise). Capacities
        and per_cpu_lru (BPF_F_NO_COMMON_LRU on sources) only apply to maps not yet pinned."""
        pin_dir = Path(pin_dir)
        if not os.path.ismount("/sys/fs/bpf"):
            raise RuntimeError("bpffs is not mounted on /sys/fs/bpf (mount -t bpf bpf /sys/fs/bpf)")
        os.makedirs(pin_dir, exist_ok=True)
        cflags = [f"-I{SOURCE_DIR}", f'-DES_PIN_DIR="{pin_dir}"',
                  f"-DES_SOURCES_FLAGS={BPF_F_NO_COMMON_LRU if per_cpu_lru else 0}"]
        for name, value in (("ES_SOURCES_MAX", sources_max), ("ES_BANS_MAX", bans_max),
                            ("ES_LIST_MAX", list_max)):
            if value is not None:
                cflags.append(f"-D{name}={int(value)}")
        build_pin = pin_dir / f"{PROG_PIN}_{_build_id(cflags)}"   # bpffs refuses dots
        shield = None if rebuild else cls._adopt_build(pin_dir, build_pin)
        if shield is None:
            shield = cls._compile(pin_dir, cflags, build_pin)
        if config is not None or shield.maps["config"].lookup(ctypes.c_uint32(0)).period_ms == 0:
            shield.set_config(config or ShieldConfig())
        return shield

    @classmethod
    def _adopt_build(cls, pin_dir: Path, build_pin: Path) -> "Shield | None":
        """The shield pinned in pin_dir if its program is `build_pin`'s and uses the pinned
        maps, else None (compile)."""
        if not build_pin.exists() or any(not (pin_dir / m).exists() for m in [*MAPS, PROG_PIN]):
            return None
        try:
            shield = cls(pin_dir)
        except OSError:
            return None
        try:
            fd = _check(LIBBPF.bpf_obj_get(str(build_pin).encode()), f"bpf_obj_get {build_pin}")
            try:
                same = obj_info(fd)[1] == shield.prog_id
            finally:
                os.close(fd)
            if same and {m.id for m in shield.maps.values()} <= prog_info(shield.prog_id)[1]:
                return shield
        except OSError:
            pass
        shield.close()
        return None

    @classmethod
    def _compile(cls, pin_dir: Path, cflags: list[str], build_pin: Path) -> "Shield":
        from edgestick.control.kernel_headers import ensure_bcc_kernel_source
        ensure_bcc_kernel_source()
        from bcc import BPF
        bpf = BPF(src_file=str(PROGRAM).encode(), cflags=cflags)
        fn = bpf.load_func(PROG_FUNC, BPF.XDP)
        missing = [m for m in MAPS if not (pin_dir / m).exists()]
        if missing:   # bcc only prints "failed to mkdir" and goes on with unpinned maps
            raise RuntimeError(f"maps were not pinned under {pin_dir}: {', '.join(missing)} "
                               "(is it on bpffs?)")
        for old in pin_dir.glob(f"{PROG_PIN}_*"):      # earlier builds' tags
            old.unlink()
        for pin in (pin_dir / PROG_PIN, build_pin):
            if pin.exists():
                pin.unlink()
            _check(LIBBPF.bpf_obj_pin(fn.fd, str(pin).encode()), f"bpf_obj_pin {pin}")
        return cls(pin_dir, bpf)

    @classmethod
    def open(cls, pin_dir: str | os.PathLike = DEFAULT_PIN_DIR) -> "Shield":
        """Adopt a shield pinned by another process, without compiling."""
        return cls(pin_dir)

    def close(self) -> None:
        """Close this process's fds; the pinned maps, program and attachments stay."""
        for m in self.maps.values():
            m.close()
        if self.prog_fd >= 0:
            os.close(self.prog_fd)
            self.prog_fd = -1

    def remove_pins(self) -> None:
        """Delete the pin folder (uninstall). Attached programs keep running until detached."""
        self.close()
        shutil.rmtree(self.pin_dir, ignore_errors=True)

    def __enter__(self) -> "Shield":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def prog_id(self) -> int:
        return obj_info(self.prog_fd)[1]

    # -- interfaces --

    def attach(self, ifname: str, mode: str = "auto", netns: str | None = None) -> str:
        """Attach (or atomically replace) the program on an interface in `netns` (None: this
        namespace). mode: "native", "generic" or "auto" (the kernel chooses; native on
        veth). Returns the mode the kernel reports."""
        if mode not in MODE_FLAGS:
            raise ValueError(f"mode must be one of {', '.join(MODE_FLAGS)}, not '{mode}'")
        from pyroute2.netlink.exceptions import NetlinkError
        with _ipr(netns) as ipr:
            try:
                ipr.link("set", index=_ifindex(ipr, ifname, netns),
                         xdp={"attrs": [("IFLA_XDP_FD", self.prog_fd), ("IFLA_XDP_FLAGS", MODE_FLAGS[mode])]})
            except NetlinkError as e:
                if e.code == errno.EEXIST:   # a program in the other mode: the kernel keeps one
                    other, _ = xdp_attached(ifname, netns)
                    raise RuntimeError(f"{ifname} already has a {other} XDP program; detach it "
                                       f"first or attach in {other} mode") from None
                raise
        attached, prog_id = xdp_attached(ifname, netns)
        if prog_id != self.prog_id:
            raise RuntimeError(f"{ifname}: attach reported success but program {prog_id} is attached")
        return attached

    detach = staticmethod(xdp_detach)
    attached = staticmethod(xdp_attached)

    # -- configuration --

    def get_config(self) -> ShieldConfig:
        return ShieldConfig.from_struct(self.maps["config"].lookup(ctypes.c_uint32(0)))

    def set_config(self, config: ShieldConfig) -> None:
        """Write the whole config; the program sees it on its next packet."""
        self.maps["config"].update(ctypes.c_uint32(0), config.to_struct())

    def regroup_ipv6(self, config: ShieldConfig, max_split: int) -> list[str]:
        """Write `config` when its ipv6_prefix differs from the pinned one: IPv6 sources
        are keyed per prefix, so the state keyed at the old grouping moves first. Bans go
        to the new groups (a shorter prefix widens a ban to its enclosing group; a longer
        one splits it into up to `max_split` bans, beyond that the range goes to the deny
        list, which does not expire); per-source rates at the old grouping mean nothing at
        the new one and are dropped. The new keys are written before the config switches
        and the old ones removed after, so no banned source passes in between. Returns
        what changed, one line each."""
        old = self.get_config().ipv6_prefix
        new = config.ipv6_prefix
        notes: list[str] = []
        if old == new:
            self.set_config(config)
            return notes
        bans = self.maps["bans"]
        stale = []
        for key, ban in list(bans.items()):
            raw = bytes(key.a)
            if raw[:12] == _V4_MAPPED:
                continue
            group = ipaddress.ip_network((raw, old), strict=False)
            if new < old:
                targets = [group.supernet(new_prefix=new)]
            elif 1 << (new - old) <= max_split:
                targets = list(group.subnets(new_prefix=new))
            else:
                self.list_add("deny", str(group))
                notes.append(f"ban of {group}: {1 << (new - old)} /{new} groups (at most {max_split}): "
                             f"moved to the deny list, which does not expire ('del deny {group}' lifts it)")
                stale.append(key)
                continue
            for target in targets:
                new_key = EsAddr()
                new_key.a[:] = target.network_address.packed
                held = bans.lookup(new_key)
                if held is None or (held.expires_ns < ban.expires_ns):
                    bans.update(new_key, ban)
            if len(targets) > 1:
                notes.append(f"ban of {group} split into {len(targets)} bans, one per /{new}")
            elif targets[0] != group:
                notes.append(f"ban of {group} widened to {targets[0]}")
            if targets[0].network_address.packed != raw:
                stale.append(key)
        self.set_config(config)
        for key in stale:
            bans.delete(key)
        sources = self.maps["sources"]
        dropped = 0
        for key in list(sources.keys()):
            if bytes(key.a)[:12] != _V4_MAPPED and sources.delete(key):
                dropped += 1
        if dropped:
            notes.append(f"{dropped} IPv6 sources counted per /{old} dropped: counting restarts per /{new}")
        return notes

    def update_config(self, **changes) -> ShieldConfig:
        """Change some fields (e.g. mode="dry-run", conn_rate_limit=None); returns the result.
        Unknown names or bad values raise ValueError and change nothing."""
        cfg = self.get_config()
        known = {f.name for f in fields(ShieldConfig)}
        for name, value in changes.items():
            if name not in known:
                raise ValueError(f"unknown shield setting '{name}'")
            setattr(cfg, name, value)
        self.set_config(cfg)
        return cfg

    # -- allow / deny lists --

    def _list(self, kind: str) -> BpfMap:
        if kind not in ("allow", "deny"):
            raise ValueError(f"list must be 'allow' or 'deny', not '{kind}'")
        return self.maps[kind]

    def list_add(self, kind: str, cidr: str) -> str:
        """Add a CIDR (or address) to the "allow" or "deny" list; returns its normal form."""
        key = lpm_key(cidr)
        self._list(kind).update(key, EsListValue(added_s=int(time.time()) & U32_MAX))
        return lpm_cidr(key)

    def list_del(self, kind: str, cidr: str) -> bool:
        """Remove exactly that CIDR; False if it was not listed."""
        return self._list(kind).delete(lpm_key(cidr))

    def list_show(self, kind: str) -> list[str]:
        return sorted((lpm_cidr(k) for k in self._list(kind).keys()),
                      key=lambda c: (":" in c, ipaddress.ip_network(c)))

    # -- bans --

    def add_ban(self, source: str, ttl_ms: int | None = None, reason: str = "none",
                origin: str = "manual") -> str:
        """Ban a source (IPv4 address, IPv6 address or /prefix) for ttl_ms (None: until
        removed); `origin` records who asked (BAN_ORIGINS). Returns the source as listed."""
        if ttl_ms is not None and ttl_ms < 0:
            raise ValueError(f"ban ttl must be >= 0 ms, not {ttl_ms}")
        prefix = self.get_config().ipv6_prefix
        key = source_key(source, prefix)
        expires = C["ES_BAN_FOREVER"] if ttl_ms is None else kernel_now_ns() + ttl_ms * 1_000_000
        self.maps["bans"].update(key, EsBan(expires_ns=expires, reason=REASONS.index(reason),
                                            origin=BAN_ORIGINS.index(origin)))
        return source_str(key, prefix)

    def del_ban(self, source: str) -> bool:
        return self.maps["bans"].delete(source_key(source, self.get_config().ipv6_prefix))

    def bans(self) -> list[Ban]:
        """Active bans; expired entries are removed on the way."""
        prefix = self.get_config().ipv6_prefix
        now = kernel_now_ns()
        out = []
        for key, ban in list(self.maps["bans"].items()):    # deleting mid-walk restarts it
            if ban.expires_ns <= now:
                self.maps["bans"].delete(key)
                continue
            forever = ban.expires_ns == C["ES_BAN_FOREVER"]
            out.append(Ban(source_str(key, prefix), None if forever else ban.expires_ns,
                           None if forever else (ban.expires_ns - now) // 1_000_000,
                           REASONS[ban.reason] if ban.reason < len(REASONS) else str(ban.reason),
                           BAN_ORIGINS[ban.origin] if ban.origin < len(BAN_ORIGINS) else str(ban.origin)))
        return out

    # -- sources and counters --

    def sources(self) -> list[SourceStats]:
        """Every tracked source with its rates as of now (events per period)."""
        cfg = self.get_config()
        now = now_tick_ms()
        return [SourceStats(source_str(key, cfg.ipv6_prefix),
                            read_freq(s.conn, cfg.period_ms, now), read_freq(s.pkt, cfg.period_ms, now),
                            read_freq(s.bytes, cfg.period_ms, now), s.drops, s.last_seen_ns)
                for key, s in self.maps["sources"].items()]

    def source_count(self) -> int:
        return sum(1 for _ in self.maps["sources"].keys())

    def capacity(self) -> dict[str, int]:
        """max_entries of each map (sources, bans, allow, deny, ...)."""
        return {name: m.max_entries for name, m in self.maps.items()}

    def counters(self) -> dict[tuple[str, str], Counter]:
        """Packets and bytes by (verdict, reason), summed over CPUs; zero rows omitted.
        verdicts: pass, drop, would_drop (dry-run); reasons: see REASONS."""
        out = {}
        table = self.maps["counters"]
        for v, verdict in enumerate(VERDICTS):
            for r, reason in enumerate(REASONS):
                slots = table.lookup(ctypes.c_uint32(v * len(REASONS) + r))
                packets = sum(s.packets for s in slots)
                if packets:
                    out[(verdict, reason)] = Counter(packets, sum(s.bytes for s in slots))
        return out

    def clear(self, *names: str) -> None:
        """Empty maps by name ("sources", "bans", "allow", "deny", "counters",
        "new_sources"); per-CPU arrays are zeroed. Like HAProxy's clear table/counters."""
        for name in names:
            table = self.maps[name]
            if name in ("counters", "new_sources"):
                zero = [table.value_type() for _ in range(NCPUS)]
                for i in range(table.max_entries):
                    table.update(ctypes.c_uint32(i), zero)
            elif name == "config":
                raise ValueError("the config is set, not cleared")
            else:
                for key in list(table.keys()):
                    table.delete(key)

    def test_run(self, frame: bytes, repeat: int = 1) -> str:
        """Run the program on one frame through BPF_PROG_TEST_RUN (it updates the real maps);
        returns the XDP action name: "pass", "drop", ..."""
        action, _ = prog_test_run(self.prog_fd, frame, repeat)
        return XDP_ACTIONS.get(action, str(action))
