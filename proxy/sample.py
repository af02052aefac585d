"""Sample fetches and converters: what ACLs, track-sc keys and stick rules read.

A sample expression `fetch[(args)][,converter[(args)]]...` is compiled once, at
configuration time, into a plain function `expr(ctx) -> value | None` (None = "no
sample"). Values are Python `int`, `str`, `bytes` or `bool`; addresses are `str` as the
socket layer gives them ('198.18.0.1', 'fd00::1'), type "ip".

The request context
-------------------
The HTTP engine (`proxy/frontend.py`) fills one `Context` per request (or per
connection for `tcp-request connection` rules) and passes it to conditions and
expressions. Fields, all plain attributes:

  src, src_port       client address (str) and port (int)
  dst, dst_port       local address (str) and port (int) the client connected to
  ssl                 True when the connection is TLS-terminated here
  method              request method (str), None before the request is parsed
  path                path without the query string (str)
  query               text after '?' or None when the URI has no '?'
  url                 the request target as received (str)
  headers             sequence of (lowercase name: str, value: str) in arrival order
  sc                  list of 3 slots: None or (table, entry) for sc0..sc2 (the stream's
                      trackers: a copy of the session's at stream start, then its own)
  table               the stick table of the proxy running the rules (or None)
  tables              mapping table name -> table (proxies' tables and `peers/name`)
  status              response status for http-response rules (int or None)
  res_headers         the response's (lowercase name, value) pairs, for http-response
                      rules and `stick store-response` (res.hdr, res.cook...); () before
  response            True while response rules run: `hdr()`, `cook()`... then read the
                      response (as HAProxy's direction-aware fetches); `req.*` still read
                      `headers`, which stays the request's
  now                 optional: the request's `freq_ctr.now_ms()`, read once; rate reads
                      then skip the clock (None: each read takes the clock itself)

Stick-table data are read through `proxy/stick_table.py`; rules from §6 of the
reference: a slot not tracked gives no sample, a key absent from a table gives 0 for
`src_*`/`table_*`, a data type the table does not store gives no sample.
"""
from __future__ import annotations

import binascii
import hashlib
import hmac
import operator
import re
import random
import socket
import time
import types
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Optional

from edgestick.freq_ctr import now_ms, read_freq

from .hashes import crc32, djb2, full_hash, sdbm, wt6

# ---------------------------------------------------------------------------- context


class Context:
    __slots__ = ("src", "src_port", "dst", "dst_port", "ssl", "method", "path", "query",
                 "url", "headers", "sc", "table", "tables", "status", "res_headers",
                 "response", "now", "vars", "fe", "be", "stream", "version",
                 "comp",    # (comp: compression.Choice of a compressed response; set then only)
                 "cache")   # (cache: cache.Txn once a cache rule ran; set then only)

    def __init__(self, src: Optional[str] = None, src_port: int = 0, dst: Optional[str] = None,
                 dst_port: int = 0, ssl: bool = False, method: Optional[str] = None,
                 path: Optional[str] = None, query: Optional[str] = None,
                 url: Optional[str] = None, headers: Any = (), sc: Optional[list] = None,
                 table: Any = None, tables: Optional[dict] = None, status: Optional[int] = None,
                 fe: Any = None, stream: Any = None, version: int = 11):
        self.src, self.src_port, self.dst, self.dst_port = src, src_port, dst, dst_port
        self.ssl, self.method, self.path, self.query, self.url = ssl, method, path, query, url
        self.headers = headers
        self.sc = sc if sc is not None else [None, None, None]
        self.table = table
        self.tables = tables if tables is not None else {}
        self.status = status
        self.res_headers = ()
        self.response = False
        self.now = None
        self.vars = None
        # the stream's frontend, its backend once chosen (HAProxy's stream backend is the
        # frontend until then), the Stream (its server), the request's HTTP version
        self.fe, self.be, self.stream, self.version = fe, None, stream, version


class SampleError(ValueError):
    """A fetch or converter that cannot be built (unknown name, bad arguments)."""


# ---------------------------------------------------------------------------- table access
# Fetches use the StickTable API of proxy/stick_table.py: key_of / lookup_key /
# get_or_create_key (entries are row numbers), reader / read (None when not stored),
# inc_gpc / clr_gpc, use, key, used, size.

def _read(table, entry, dtype: str, idx: int = 0):
    """Value of a stored data type (rates read at now), None when not stored."""
    return table.read(entry, dtype, idx)


def _legacy(dtype: str, idx: int) -> tuple[int, bool]:
    """gpc0/gpc1 are the legacy counters (elements 0/1 of `gpc` when only that is stored)."""
    if dtype == "gpc0":
        return 0, True
    if dtype == "gpc1":
        return 1, True
    return idx, False


def _inc_gpc(table, entry, dtype: str, idx: int = 0):
    """Increment a gpc (and its rate); the new value, None when not stored."""
    i, legacy = _legacy(dtype, idx)
    return table.inc_gpc(entry, i, legacy)


def _clr_gpc(table, entry, dtype: str, idx: int = 0):
    """Clear a gpc; the value it had, None when not stored."""
    i, legacy = _legacy(dtype, idx)
    return table.clr_gpc(entry, i, legacy)


def _same_key_in(table, entry, other, create: bool):
    """The entry of `other` holding the key of `entry` in `table` (sc_*(ctr,table))."""
    key = table.key(entry)
    if other.type == table.type:
        return other.get_or_create_key(key) if create else other.lookup_key(key)
    value = table.format_key(key)
    return other.get_or_create(value) if create else other.lookup(value)


def _trackers(table, entry) -> int:
    return table.use(entry)


def _table_used(table) -> int:
    return table.used


def _table_size(table) -> int:
    return table.size


# ---------------------------------------------------------------------------- fetch registry

@dataclass(frozen=True)
class FetchDef:
    name: str
    out: str                          # ip | int | str | bool | bin
    build: Callable                   # build(args: list[str], cfg) -> fn(ctx) -> value|None
    match: str                        # default ACL match method
    multi: Optional[Callable] = None  # build(args, cfg) -> fn(ctx) -> list of values (ACL use)


FETCHES: dict[str, FetchDef] = {}


def _fetch(name: str, out: str, match: Optional[str] = None, multi=None):
    def deco(build):
        FETCHES[name] = FetchDef(name, out, build, match or _DEFAULT_MATCH[out], multi)
        return build
    return deco


_INT_ARG = re.compile(r"[+-]?\d+")    # an integer argument as HAProxy parses one
_DEFAULT_MATCH = {"ip": "ip", "int": "int", "str": "str", "bool": "bool", "bin": "bin",
                  "meth": "meth"}


def _no_args(name, args):
    if args:
        raise SampleError(f"fetch method '{name}' does not take any argument")


def _simple(name: str, out: str, getter: Callable, match: Optional[str] = None):
    def build(args, cfg):
        _no_args(name, args)
        return _fresh(getter)
    FETCHES[name] = FetchDef(name, out, build, match or _DEFAULT_MATCH[out])


def _fresh(fn: Callable) -> Callable:
    """A new function object running the same code (so each compiled expression can carry
    its own attributes without an extra call layer)."""
    return types.FunctionType(fn.__code__, fn.__globals__, fn.__name__, fn.__defaults__,
                              fn.__closure__)


_simple("src", "ip", lambda ctx: ctx.src)
_simple("src_port", "int", lambda ctx: ctx.src_port)
_simple("dst", "ip", lambda ctx: ctx.dst)
_simple("dst_port", "int", lambda ctx: ctx.dst_port)
_simple("path", "str", lambda ctx: ctx.path)
_simple("url", "str", lambda ctx: ctx.url)
_simple("query", "str", lambda ctx: ctx.query)
_simple("method", "meth", lambda ctx: ctx.method)
_simple("ssl_fc", "bool", lambda ctx: bool(ctx.ssl))
_simple("always_true", "bool", lambda ctx: True)
_simple("always_false", "bool", lambda ctx: False)
_simple("status", "int", lambda ctx: ctx.status)
_simple("res.comp", "bool", lambda ctx: getattr(ctx, "comp", None) is not None)
_simple("res.comp_algo", "str", lambda ctx: getattr(getattr(ctx, "comp", None), "algo", None))
FETCHES["capture.req.method"] = FETCHES["method"]


def _clean_connection(value: str):
    """What HAProxy's rules see of a Connection header: its H1 layer consumes the
    `close`/`keep-alive` tokens and drops the header when nothing else is left."""
    rest = [t.strip() for t in value.split(",")
            if t.strip() and t.strip().lower() not in ("close", "keep-alive")]
    return ", ".join(rest) if rest else None


# Header helpers work on a list of (lowercase name, value) pairs: the request's
# (ctx.headers) or the response's (ctx.res_headers).
# Plain `hdr`, `hdr_cnt`, `hdr_ip`, `hdr_val`, `cook` follow the direction (request
# headers, or the response's while `ctx.response` is set), as HAProxy's do.
REQ, RES = operator.attrgetter("headers"), operator.attrgetter("res_headers")


def _dir_headers(ctx):
    return ctx.res_headers if ctx.response else ctx.headers


def _headers(headers):
    """(name, value) pairs as HAProxy's rules see them."""
    for hname, value in headers:
        if hname == "connection":
            value = _clean_connection(value)
            if value is None:
                continue
        yield hname, value


def _split_values(value: str) -> list[str]:
    """A header's comma-separated values; a comma inside a quoted string (with its
    backslash pairs) does not separate, as HAProxy's http_find_hdr_value_end. Callers
    split values without '"' themselves (the common case, kept as fast as before)."""
    out, start, quoted, pair = [], 0, False, False
    for i, c in enumerate(value):
        if pair:
            pair = False
        elif quoted:
            if c == "\\":
                pair = True
            elif c == '"':
                quoted = False
        elif c == '"':
            quoted = True
        elif c == ",":
            out.append(value[start:i])
            start = i + 1
    out.append(value[start:])
    return out


def _header_values(headers, name: str, split: bool) -> list[str]:
    out: list[str] = []
    for hname, value in headers:
        if hname == name:
            if name == "connection":
                value = _clean_connection(value)
                if value is None:
                    continue
            if split:
                out.extend(v.strip() for v in (value.split(",") if '"' not in value
                                               else _split_values(value)))
            else:
                out.append(value.strip())
    return out


def _last_header(headers, name: str):
    found = None
    for hname, value in headers:
        if hname == name:
            found = value
    if found is None:
        return None
    if name == "connection":
        vals = _header_values(headers, name, True)
        return vals[-1] if vals else None
    last = found.rsplit(",", 1)[-1] if '"' not in found else _split_values(found)[-1]
    return last.strip()


def _first_host(ctx) -> str:
    for hname, value in ctx.headers:
        if hname == "host":
            return value.strip()
    return ""


def _url_path(ctx) -> str:
    """The path of the request target, query included (absolute form: from the first '/'
    after the authority); "" when it does not start with '/' (`*`)."""
    url = ctx.url or ""
    if not url.startswith("/"):
        i = url.find("://")
        if i < 0:
            return ""
        j = url.find("/", i + 3)
        url = url[j:] if j >= 0 else ""
    return url


def _base(ctx):
    """First Host header + path without query (HAProxy's `base`)."""
    if ctx.method is None:
        return None
    path = ctx.path or ""
    return _first_host(ctx) + (path if path.startswith("/") else "")


_simple("base", "str", _base)

_U32 = 0xFFFFFFFF


def _hash32(ctx, with_query: bool):
    if ctx.method is None:
        return None
    h = sdbm(_first_host(ctx).encode("latin-1"))
    path = _url_path(ctx) if with_query else (ctx.path or "")
    if path.startswith("/"):
        h = sdbm(path.encode("latin-1"), h)
    return full_hash(h)


def _with_src(h, ctx):
    """hash (4 bytes, network order) followed by the source address bytes."""
    if h is None or ctx.src is None:
        return None
    fam = socket.AF_INET6 if ":" in ctx.src else socket.AF_INET
    return h.to_bytes(4, "big") + socket.inet_pton(fam, ctx.src)


_simple("base32", "int", lambda ctx: _hash32(ctx, False))
_simple("url32", "int", lambda ctx: _hash32(ctx, True))
_simple("base32+src", "bin", lambda ctx: _with_src(_hash32(ctx, False), ctx))
_simple("url32+src", "bin", lambda ctx: _with_src(_hash32(ctx, True), ctx))


def _hdr_args(name, args, split):
    if len(args) > 2:
        raise SampleError(f"fetch method '{name}' expects at most 2 arguments")
    hname = args[0].lower() if args else None
    occ = None
    if len(args) == 2:
        try:
            occ = int(args[1])
        except ValueError:
            raise SampleError(f"fetch method '{name}' : invalid occurrence '{args[1]}'") from None
    return hname, occ


def _pick(values: list, occ):
    if not values:
        return None
    if occ is None or occ == -1:
        return values[-1]
    if occ > 0:
        return values[occ - 1] if occ <= len(values) else None
    if occ < 0:
        return values[occ] if -occ <= len(values) else None
    return None


def _make_hdr(name: str, split: bool, side):
    def build(args, cfg):
        hname, occ = _hdr_args(name, args, split)
        if hname is None:            # HAProxy 2.6: no sample without a header name
            return lambda ctx: None
        if split and occ is None:
            return lambda ctx: _last_header(side(ctx), hname)
        return lambda ctx: _pick(_header_values(side(ctx), hname, split), occ)

    def multi(args, cfg):
        hname, occ = _hdr_args(name, args, split)
        if hname is None:
            return lambda ctx: []
        if occ is None:
            return lambda ctx: _header_values(side(ctx), hname, split)
        return lambda ctx: [v] if (v := _pick(_header_values(side(ctx), hname, split),
                                              occ)) is not None else []
    return FetchDef(name, "str", build, "str", multi)


for _n, _split, _side in (("hdr", True, _dir_headers), ("req.hdr", True, REQ),
                          ("req.fhdr", False, REQ),           # (2.6 has no plain `fhdr`)
                          ("res.hdr", True, RES), ("shdr", True, RES), ("res.fhdr", False, RES)):
    FETCHES[_n] = _make_hdr(_n, _split, _side)


def _hdr_typed(name: str, conv, out: str, side, split: bool = True):
    """hdr_ip / hdr_val: the last (or the given) occurrence converted; no sample when the
    text does not convert."""
    def build(args, cfg):
        hname, occ = _hdr_args(name, args, split)
        if hname is None:
            raise SampleError(f"fetch method '{name}' expects a header name")

        def fetch(ctx):
            v = _pick(_header_values(side(ctx), hname, split), occ)
            return None if v is None else conv(v)
        return fetch

    def multi(args, cfg):
        hname, occ = _hdr_args(name, args, split)
        if occ is not None:
            one = build(args, cfg)
            return lambda ctx: [v] if (v := one(ctx)) is not None else []
        return lambda ctx: [c for v in _header_values(side(ctx), hname, split)
                            if (c := conv(v)) is not None]
    return FetchDef(name, out, build, _DEFAULT_MATCH[out], multi)


def _as_ip(text: str):
    return _ip_text(text.strip())


def _as_int(text: str):
    """hdr_val: leading sign and digits, 0 when there are none (HAProxy's strl2ic)."""
    m = re.match(r"[+-]?\d+", text)
    return int(m.group(0)) if m else 0


for _n, _side in (("hdr_ip", _dir_headers), ("req.hdr_ip", REQ), ("res.hdr_ip", RES)):
    FETCHES[_n] = _hdr_typed(_n, _as_ip, "ip", _side)
for _n, _side in (("hdr_val", _dir_headers), ("req.hdr_val", REQ), ("res.hdr_val", RES)):
    FETCHES[_n] = _hdr_typed(_n, _as_int, "int", _side)


def _url_param_build(args, cfg):
    if not 1 <= len(args) <= 2:
        raise SampleError("fetch method 'url_param' expects a parameter name")
    name = args[0]
    delim = args[1] if len(args) > 1 else "&"

    def fetch(ctx):
        q = ctx.query
        if q is None:
            return None
        for part in q.split(delim):
            k, sep, v = part.partition("=")
            if k == name:
                return v
        return None
    return fetch


FETCHES["url_param"] = FETCHES["urlp"] = FetchDef("url_param", "str", _url_param_build, "str")


def _const(name: str, out: str, conv):
    def build(args, cfg):
        if not args and name == "str":
            return lambda ctx: ""       # `str` / `str()`: the empty string, as HAProxy
        if len(args) != 1:
            raise SampleError(f"fetch method '{name}' expects one argument")
        try:
            value = conv(args[0])
        except ValueError:
            raise SampleError(f"fetch method '{name}' : invalid value '{args[0]}'") from None
        return lambda ctx: value
    FETCHES[name] = FetchDef(name, out, build, _DEFAULT_MATCH[out])


_const("int", "int", int)
_const("str", "str", str)
_const("bool", "bool", lambda t: bool(int(t)))


def _env_build(args, cfg):
    import os
    if len(args) != 1:
        raise SampleError("fetch method 'env' expects a variable name")
    name = args[0]
    return lambda ctx: os.environ.get(name)


FETCHES["env"] = FetchDef("env", "str", _env_build, "str")


def _hdr_cnt(name: str, side):
    def build(args, cfg):
        if len(args) > 1:
            raise SampleError(f"fetch method '{name}' expects at most 1 argument")
        if not args:        # every header, comma-separated values counted one by one
            return lambda ctx: sum(v.count(",") + 1 if '"' not in v else len(_split_values(v))
                                   for _, v in _headers(side(ctx)))
        hname = args[0].lower()
        return lambda ctx: len(_header_values(side(ctx), hname, True))
    return FetchDef(name, "int", build, "int")


for _n, _side in (("hdr_cnt", _dir_headers), ("req.hdr_cnt", REQ), ("res.hdr_cnt", RES)):
    FETCHES[_n] = _hdr_cnt(_n, _side)


def _cookies(headers, name: Optional[str]) -> list[str]:
    """Values of request cookie `name` (every cookie when None), in order."""
    out = []
    for hname, value in headers:
        if hname == "cookie":
            for part in value.split(";"):
                k, sep, v = part.strip().partition("=")
                if sep and (name is None or k == name):
                    out.append(v)
    return out


def _set_cookies(headers, name: Optional[str]) -> list[str]:
    """Values given to cookie `name` by the response's Set-Cookie headers."""
    out = []
    for hname, value in headers:
        if hname == "set-cookie":
            k, sep, v = value.split(";", 1)[0].strip().partition("=")
            if sep and (name is None or k == name):
                out.append(v)
    return out


def _make_cook(fname: str, side, reader):
    def build(args, cfg):
        if len(args) > 1:
            raise SampleError(f"fetch method '{fname}' expects 1 argument (the cookie name)")
        name = args[0] if args else None

        def last(ctx):               # without a name: the first cookie (HAProxy's doc)
            vals = reader(side(ctx), name)
            return (vals[-1] if name is not None else vals[0]) if vals else None
        return last

    def multi(args, cfg):
        name = args[0] if args else None
        return lambda ctx: reader(side(ctx), name)

    def count(args, cfg):
        name = args[0] if args else None
        return lambda ctx: len(reader(side(ctx), name))
    return (FetchDef(fname, "str", build, "str", multi),
            FetchDef(fname + "_cnt", "int", count, "int"))


def _dir_cookies(ctx, name):
    return _set_cookies(ctx.res_headers, name) if ctx.response else _cookies(ctx.headers, name)


for _n, _side, _reader in (("req.cook", REQ, _cookies), ("res.cook", RES, _set_cookies),
                           ("scook", RES, _set_cookies), ("cook", lambda ctx: ctx, _dir_cookies)):
    FETCHES[_n], FETCHES[_n + "_cnt"] = _make_cook(_n, _side, _reader)


# fetches that read the response: only usable in response-time rules
RESPONSE_FETCHES = frozenset({"status", "res.hdr", "shdr", "res.fhdr", "res.hdr_ip", "res.hdr_val",
                              "res.hdr_cnt", "res.cook", "scook", "res.cook_cnt", "scook_cnt",
                              "res.comp", "res.comp_algo", "res.cache_hit", "res.cache_name"})


# ACL keyword aliases that fix the match method: path_beg = path -m beg, ...
_SUFFIX_MATCH = {"beg": "beg", "end": "end", "sub": "sub", "reg": "reg", "dir": "dir",
                 "dom": "dom", "len": "len", "cnt": None, "ip": "ip", "val": "int"}
ACL_ALIASES: dict[str, tuple[str, str]] = {}
for _base_name in ("path", "url", "hdr", "req.hdr", "cook", "method", "query", "base"):
    for _suffix, _m in _SUFFIX_MATCH.items():
        if _m is not None:
            ACL_ALIASES[f"{_base_name}_{_suffix}"] = (_base_name, _m)
for _m in ("beg", "end", "sub", "reg", "dir", "dom", "len"):
    ACL_ALIASES[f"url_{_m}"] = ("url", _m)
ACL_ALIASES["req_ssl_sni"] = ("req.ssl_sni", "str")


# ---------------------------------------------------------------------------- stick counters

# fetch suffix -> (data type, kind). kind: read | kbytes | inc | clr
_COUNTER_SUFFIXES: dict[str, tuple[str, str]] = {
    "conn_cnt": ("conn_cnt", "read"), "conn_cur": ("conn_cur", "read"),
    "conn_rate": ("conn_rate", "read"), "sess_cnt": ("sess_cnt", "read"),
    "sess_rate": ("sess_rate", "read"), "http_req_cnt": ("http_req_cnt", "read"),
    "http_req_rate": ("http_req_rate", "read"), "http_err_cnt": ("http_err_cnt", "read"),
    "http_err_rate": ("http_err_rate", "read"), "http_fail_cnt": ("http_fail_cnt", "read"),
    "http_fail_rate": ("http_fail_rate", "read"), "bytes_in_rate": ("bytes_in_rate", "read"),
    "bytes_out_rate": ("bytes_out_rate", "read"), "kbytes_in": ("bytes_in_cnt", "kbytes"),
    "kbytes_out": ("bytes_out_cnt", "kbytes"), "get_gpc0": ("gpc0", "read"),
    "get_gpc1": ("gpc1", "read"), "get_gpt0": ("gpt0", "read"),
    "gpc0_rate": ("gpc0_rate", "read"), "gpc1_rate": ("gpc1_rate", "read"),
    "inc_gpc0": ("gpc0", "inc"), "inc_gpc1": ("gpc1", "inc"),
    "clr_gpc0": ("gpc0", "clr"), "clr_gpc1": ("gpc1", "clr"),
    "server_id": ("server_id", "read"),
}
# edgestick's XDP counters, mirrored into the table by the shield (stick_table.XDP_DATA_TYPES,
# docs/bridge.md): sc_xdp_conn_rate(0), sc0_xdp_conn_rate, src_xdp_drops, table_xdp_pkt_rate...
_COUNTER_SUFFIXES.update({name: (name, "read") for name in
                          ("xdp_conn_rate", "xdp_pkt_rate", "xdp_byte_rate", "xdp_drops")})
# array forms: suffix -> (data type, kind); they take the element index first
_ARRAY_SUFFIXES: dict[str, tuple[str, str]] = {
    "get_gpc": ("gpc", "read"), "gpc_rate": ("gpc_rate", "read"), "get_gpt": ("gpt", "read"),
    "inc_gpc": ("gpc", "inc"), "clr_gpc": ("gpc", "clr"),
}


def _entry_value(table, entry, dtype: str, kind: str, idx: int):
    if kind == "read":
        return _read(table, entry, dtype, idx)
    if kind == "kbytes":
        v = _read(table, entry, dtype, idx)
        return None if v is None else v >> 10
    if kind == "inc":
        return _inc_gpc(table, entry, dtype, idx)
    return _clr_gpc(table, entry, dtype, idx)


def _parse_slot(text: str, name: str) -> int:
    """A stick counter number. HAProxy accepts any number here; 3 and above are simply
    never tracked (no sample)."""
    if not text.isdigit():
        raise SampleError(f"fetch method '{name}' : invalid stick counter '{text}'")
    return int(text)


def _parse_index(text: str, name: str) -> int:
    if not text.isdigit() or int(text) >= 100:
        raise SampleError(f"fetch method '{name}' : invalid array index '{text}'")
    return int(text)


def _take_index(args: list, array: bool, what: str, name: str) -> int:
    """The array index that the gpc/gpt array forms take first (removed from `args`);
    0 for the other forms. `what`: "fetch method 'x'" or "converter 'x'"."""
    if not array:
        return 0
    if not args:
        raise SampleError(f"{what} : missing array index")
    return _parse_index(args.pop(0), name)


def _table_ref(cfg, name: Optional[str], fetch: str) -> Optional[str]:
    """Record a table a fetch needs (None: the table of the proxy holding the rule), to be
    checked once the whole configuration is known."""
    if cfg is not None:
        cfg.table_refs.append((name, fetch))
    return name


def _sc_reader(slot: int, table_name: Optional[str], dtype: str, kind: str, idx: int):
    """sc*_X: read the entry tracked in `slot` (or the same key in `table_name`)."""
    if slot > 2:
        return lambda ctx: None
    if table_name is None:
        if kind == "read":
            last_table = last_reader = None

            last_rate = None

            def read(ctx):               # the hot one: sc_http_req_rate(0) and friends
                nonlocal last_table, last_reader, last_rate
                t = ctx.sc[slot]
                if t is None:
                    return None
                if t[0] is not last_table:       # tables change only on reload
                    last_table, last_reader = t[0], t[0].reader(dtype, idx)
                    last_rate = t[0].rate_columns(dtype, idx)
                if last_rate is not None:        # a rate: read here, one call less
                    row = t[1]
                    now = ctx.now
                    tick, curr, prev, period = last_rate
                    return read_freq(tick[row], curr[row], prev[row], period,
                                     now_ms() if now is None else now)
                return last_reader(t[1], ctx.now)
            return read

        def fetch(ctx):
            t = ctx.sc[slot]
            if t is None:
                return None
            return _entry_value(t[0], t[1], dtype, kind, idx)
        return fetch

    def fetch_other(ctx):
        t = ctx.sc[slot]
        if t is None:
            return None
        other = ctx.tables.get(table_name)
        if other is None:
            return None
        entry = _same_key_in(t[0], t[1], other, kind in ("inc", "clr"))
        if entry is None:
            return 0
        return _entry_value(other, entry, dtype, kind, idx)
    return fetch_other


def _table_key(table, value, vtype: str):
    """The key of `table` for a sample of type `vtype`, cast as HAProxy casts samples to
    a table's key type; None when it does not convert (the fetch then gives no sample)."""
    t = table.type
    if vtype in ("ip", "any"):
        if t == "integer":
            value = _ipv4_to_int(value) if vtype == "ip" else value
            return None if value is None else table.key_of(value)
        if t in ("ip", "ipv6"):
            return table.key_of(value)
    if t in ("ip", "ipv6") and vtype == "int":       # an integer reads as an IPv4 address
        return table.key_of(_CASTS[("int", "ip")](value))
    if t == "ip":
        return table.key_of(value) if vtype == "str" and ":" not in value and _ip_text(value) \
            else None
    if t == "ipv6":
        return table.key_of(value) if vtype == "str" and ":" in value and _ip_text(value) \
            else None
    if t == "integer":
        if vtype in ("int", "bool"):
            return table.key_of(int(value))
        n = _str_to_int(value) if vtype == "str" else None
        return None if n is None else table.key_of(n)
    try:
        cast = value_cast(vtype, "str" if t == "string" else "bin")
    except SampleError:
        return None
    if cast is not None:
        value = cast(value)
    return None if value is None else table.key_of(value)


def _keyed_reader(key_fn, table_name: Optional[str], dtype: str, kind: str, idx: int,
                  vtype: str = "ip"):
    """src_X / table_X: look a key up without tracking; absent key reads 0."""
    creates = kind in ("inc", "clr")
    if kind == "read":
        last_table = last_reader = None

        def read(ctx):
            nonlocal last_table, last_reader
            table = ctx.table if table_name is None else ctx.tables.get(table_name)
            if table is None:
                return None
            value = key_fn(ctx)
            if value is None:
                return None
            key = table.key_of(value) if vtype == "ip" else _table_key(table, value, vtype)
            if key is None:              # not convertible to the table's key type
                return None
            entry = table.lookup_key(key)
            if entry is None:
                return 0
            if table is not last_table:      # tables change only on reload
                last_table, last_reader = table, table.reader(dtype, idx)
            return last_reader(entry, ctx.now)
        return read

    def fetch(ctx):
        table = ctx.table if table_name is None else ctx.tables.get(table_name)
        if table is None:
            return None
        value = key_fn(ctx)
        if value is None:
            return None
        key = _table_key(table, value, vtype)
        if key is None:
            return None
        entry = table.get_or_create_key(key) if creates else table.lookup_key(key)
        if entry is None:
            return None if creates else 0
        return _entry_value(table, entry, dtype, kind, idx)
    return fetch


def _sc_fetch(prefix_slot: Optional[int], suffix: str, array: bool):
    """Builder for sc_X(ctr[,t]) (prefix_slot None) and scN_X([t])."""
    dtype, kind = (_ARRAY_SUFFIXES if array else _COUNTER_SUFFIXES)[suffix]
    fname = f"sc_{suffix}" if prefix_slot is None else f"sc{prefix_slot}_{suffix}"

    def build(args, cfg):
        args = list(args)
        idx = _take_index(args, array, f"fetch method '{fname}'", fname)
        if prefix_slot is None:
            if not args:
                raise SampleError(f"fetch method '{fname}' : missing stick counter number")
            slot = _parse_slot(args.pop(0), fname)
        else:
            slot = prefix_slot
        if len(args) > 1:
            raise SampleError(f"fetch method '{fname}' : too many arguments")
        table = _table_ref(cfg, args[0], fname) if args else None
        return _sc_reader(slot, table, dtype, kind, idx)
    return fname, build


def _src_fetch(suffix: str, array: bool):
    dtype, kind = (_ARRAY_SUFFIXES if array else _COUNTER_SUFFIXES)[suffix]
    fname = f"src_{suffix}"

    def build(args, cfg):
        args = list(args)
        idx = _take_index(args, array, f"fetch method '{fname}'", fname)
        if len(args) > 1:
            raise SampleError(f"fetch method '{fname}' : too many arguments")
        table = _table_ref(cfg, args[0] if args else None, fname)
        return _keyed_reader(lambda ctx: ctx.src, table, dtype, kind, idx)
    return fname, build


for _suffix in _COUNTER_SUFFIXES:
    for _slot in (None, 0, 1, 2):
        _n, _b = _sc_fetch(_slot, _suffix, False)
        FETCHES[_n] = FetchDef(_n, "int", _b, "int")
    if _suffix != "server_id":
        _n, _b = _src_fetch(_suffix, False)
        FETCHES[_n] = FetchDef(_n, "int", _b, "int")
for _suffix in _ARRAY_SUFFIXES:
    _n, _b = _sc_fetch(None, _suffix, True)
    FETCHES[_n] = FetchDef(_n, "int", _b, "int")
    _n, _b = _src_fetch(_suffix, True)
    FETCHES[_n] = FetchDef(_n, "int", _b, "int")
# the "src_get_gpc0"-style names are the documented ones; src_get_gpt0 exists too.
for _n in ("sc_server_id", "sc0_server_id", "sc1_server_id", "sc2_server_id"):
    del FETCHES[_n]


def _slot_args(slot: Optional[int], args, cfg, name: str) -> int:
    """The counter number of sc_tracked/sc_trackers (sc_* forms take it as their first
    argument) after checking the optional table argument."""
    args = list(args)
    if slot is None:
        if not args:
            raise SampleError(f"fetch method '{name}' : missing stick counter number")
        slot = _parse_slot(args.pop(0), name)
    if args:
        _table_ref(cfg, args[0], name)
    return slot


def _tracked_build(slot: Optional[int]):
    def build(args, cfg):
        s = _slot_args(slot, args, cfg, "sc_tracked")
        if s > 2:
            return lambda ctx: False
        return lambda ctx: ctx.sc[s] is not None
    return build


def _trackers_build(slot: Optional[int]):
    def build(args, cfg):
        s = _slot_args(slot, args, cfg, "sc_trackers")
        if s > 2:
            return lambda ctx: None

        def fetch(ctx):
            t = ctx.sc[s]
            return None if t is None else _trackers(t[0], t[1])
        return fetch
    return build


def _updt_conn_cnt_build(args, cfg):
    """src_updt_conn_cnt([t]): create the entry, conn_cnt/conn_rate +1, return conn_cnt."""
    if len(args) > 1:
        raise SampleError("fetch method 'src_updt_conn_cnt' : too many arguments")
    tname = _table_ref(cfg, args[0] if args else None, "src_updt_conn_cnt")

    def fetch(ctx):
        table = ctx.table if tname is None else ctx.tables.get(tname)
        if table is None or ctx.src is None:
            return None
        row = table.get_or_create(ctx.src)
        if row is None:
            return None
        table.add_conn(row)
        return table.read(row, "conn_cnt")
    return fetch


FETCHES["src_updt_conn_cnt"] = FetchDef("src_updt_conn_cnt", "int", _updt_conn_cnt_build, "int")
FETCHES["sc_tracked"] = FetchDef("sc_tracked", "bool", _tracked_build(None), "bool")
FETCHES["sc_trackers"] = FetchDef("sc_trackers", "int", _trackers_build(None), "int")
for _slot in (0, 1, 2):
    FETCHES[f"sc{_slot}_tracked"] = FetchDef(f"sc{_slot}_tracked", "bool",
                                             _tracked_build(_slot), "bool")
    FETCHES[f"sc{_slot}_trackers"] = FetchDef(f"sc{_slot}_trackers", "int",
                                              _trackers_build(_slot), "int")


def _table_stat_build(name: str, fn):
    def build(args, cfg):
        if len(args) > 1:
            raise SampleError(f"fetch method '{name}' : too many arguments")
        tname = _table_ref(cfg, args[0] if args else None, name)

        def fetch(ctx):
            table = ctx.table if tname is None else ctx.tables.get(tname)
            return None if table is None else fn(table)
        return fetch
    return build


FETCHES["table_cnt"] = FetchDef("table_cnt", "int",
                                _table_stat_build("table_cnt", _table_used), "int")
FETCHES["table_avl"] = FetchDef("table_avl", "int", _table_stat_build(
    "table_avl", lambda t: _table_size(t) - _table_used(t)), "int")


def _fetch_int_args(name: str, args: list, most: int) -> list:
    if len(args) > most:
        raise SampleError(f"fetch method '{name}' : expected ')' before "
                          f"',{','.join(args[most:])})'")
    for i, a in enumerate(args):
        if not _INT_ARG.fullmatch(a) and not (name == "date" and i == 1):
            raise SampleError(f"fetch method '{name}' : failed to parse '{a}' as type "
                              f"'integer' at position {i + 1}")
    return args


def _rand_build(args, cfg):
    """rand([range]): a 32-bit random number, scaled to [0, range) as HAProxy scales it."""
    _fetch_int_args("rand", args, 1)
    bits = random.getrandbits
    if not args:
        return lambda ctx: bits(32)
    scale = int(args[0]) & 0xFFFFFFFFFFFFFFFF
    return lambda ctx: ((bits(32) * scale) & 0xFFFFFFFFFFFFFFFF) >> 32


_DATE_UNITS = {"s": 1, "ms": 1000, "us": 1000000}


def _date_build(args, cfg):
    """date([offset[,unit]]): the current date in seconds (or ms, us) since the epoch,
    plus the offset in the same unit."""
    _fetch_int_args("date", args, 2)
    offset = int(args[0]) if args and args[0] else 0
    unit = args[1] if len(args) > 1 else "s"
    if unit not in _DATE_UNITS:
        raise SampleError(f"invalid args in fetch method 'date' : expects 's', 'ms' or 'us', "
                          f"got '{unit}'")
    scale = _DATE_UNITS[unit]
    return lambda ctx: int(time.time() * scale) + offset


FETCHES["rand"] = FetchDef("rand", "int", _rand_build, "int")
FETCHES["date"] = FetchDef("date", "int", _date_build, "int")


# ---------------------------------------------------------------------------- proxy state
# nbsrv, be_conn, srv_is_up... read the running process's backends and frontends. A fetch
# holds a ProxyRef: the names are checked against the configuration once it is read
# (check_proxy_refs, HAProxy's -c errors) and the running objects looked up again only
# when the process publishes new ones (RUNNING.publish after each build or reload).


class _Running:
    """The proxies of the running process (set by proxy/main.py), by name."""

    def __init__(self):
        self.backends: dict = {}
        self.frontends: dict = {}
        self.generation = 0
        self.checking: Optional[list] = None     # ProxyRefs made during a configuration load

    def publish(self, backends: dict, frontends) -> None:
        self.backends = dict(backends)
        self.frontends = {fe.name: fe for fe in frontends}
        self.generation += 1


RUNNING = _Running()


class ProxyRef:
    """The backend, frontend or server a fetch names (kind 'be', 'fe' or 'srv'),
    resolved against RUNNING once per published generation."""
    __slots__ = ("kind", "name", "server", "fetch", "holder", "implicit", "where", "used_by",
                 "gen", "obj")

    def __init__(self, kind: str, name: Optional[str], server: Optional[str], fetch: str,
                 refs):
        # an omitted proxy is the rule's own, which must then have the capability (HAProxy
        # resolves it so at configuration time); a server without its backend is looked
        # up in the rule's proxy
        self.kind, self.name, self.server, self.fetch = kind, name, server, fetch
        rl = getattr(refs, "table_refs", None)
        self.holder = getattr(rl, "proxy", None)          # the model proxy of the rule
        self.implicit = name is None
        if self.implicit and self.holder is not None:
            self.name = self.holder.name
        self.where = getattr(refs, "where", None)
        holder = self.holder.name if self.holder is not None else "?"
        if getattr(refs, "in_acl", False):
            self.used_by = f"ACL keyword '{fetch}' in proxy '{holder}'"
        else:
            keyword = getattr(getattr(rl, "line", None), "keyword", None)
            self.used_by = (f"sample fetch keyword '{fetch}' in {keyword} expression in proxy "
                            f"'{holder}'")
        self.gen, self.obj = -1, None
        if RUNNING.checking is not None and refs is not None and self.name is not None:
            RUNNING.checking.append(self)

    def get(self):
        if self.gen != RUNNING.generation:
            self.gen = RUNNING.generation
            if self.kind == "fe":
                self.obj = RUNNING.frontends.get(self.name)
            else:
                be = RUNNING.backends.get(self.name)
                self.obj = be if self.kind == "be" or be is None else be.by_name.get(self.server)
        return self.obj


def check_proxy_refs(cfg) -> None:
    """HAProxy's configuration-time resolution of backend/frontend/server arguments; raises
    ConfigError on the first unknown name. Needs RUNNING.checking set during the load."""
    from edgestick.cfgsyntax import ConfigError
    refs, RUNNING.checking = RUNNING.checking or [], None
    for r in refs:
        tail = f"referenced in arg 1 of {r.used_by}."
        file, line = r.where if r.where else (None, None)
        if r.kind == "srv":
            px = cfg.backends.get(r.name) or cfg.frontends.get(r.name)
            if px is None:
                raise ConfigError(f"unable to find proxy '{r.name}' {tail}", file, line)
            ok = r.name in cfg.backends and any(s.name == r.server for s in px.servers)
            what = f"unable to find server '{r.server}' in proxy '{r.name}', {tail}"
        else:
            side = "frontend" if r.kind == "fe" else "backend"
            ok = r.name in (cfg.frontends if r.kind == "fe" else cfg.backends)
            what = (f"proxy '{r.name}', {tail[:-1]}, has not {side} capability." if r.implicit
                    else f"unable to find {side} '{r.name}' {tail}")
        if not ok:
            raise ConfigError(what, file, line)


def _proxy_fetch(name: str, kind: str, read: Callable, missing=None):
    """A fetch of one proxy's state: `name([proxy])`, `read(obj, ctx)`; `missing` when the
    proxy is not running (a frontend-only rule's own backend...)."""
    def build(args, cfg):
        if len(args) > 1:
            raise SampleError(f"fetch method '{name}' : expected ')' before "
                              f"',{','.join(args[1:])})'")
        ref = ProxyRef(kind, args[0] if args else None, None, name, cfg)
        if ref.name is None:         # no name and no rule's proxy known (see docs)
            return lambda ctx: None

        def fetch(ctx):
            obj = ref.get()
            return missing if obj is None else read(obj)
        return fetch
    FETCHES[name] = FetchDef(name, "int", build, "int")


def _srv_fetch(name: str, out: str, read: Callable):
    def build(args, cfg):
        if len(args) > 1:
            raise SampleError(f"fetch method '{name}' : expected ')' before "
                              f"',{','.join(args[1:])})'")
        if not args or not args[0]:
            raise SampleError(f"missing server name in arg 1 of sample fetch keyword '{name}'")
        be, sep, srv = args[0].rpartition("/")
        ref = ProxyRef("srv", be if sep else _holder_name(cfg), srv, name, cfg)

        def fetch(ctx):
            obj = ref.get()
            return None if obj is None else read(obj)
        return fetch
    FETCHES[name] = FetchDef(name, out, build, _DEFAULT_MATCH[out])


def _holder_name(refs) -> Optional[str]:
    holder = getattr(getattr(refs, "table_refs", None), "proxy", None)
    return None if holder is None else holder.name


def _connslots(b) -> int:
    """Free connection and queue slots of the servers not DOWN; -1 as soon as one has no
    maxconn or no maxqueue (unlimited), as HAProxy's smp_fetch_connslots."""
    total = 0
    for s in b.servers:
        if not s.op_up or s.admin_maint:       # STOPPED in HAProxy's terms
            continue
        if not s.model.maxconn or not s.model.maxqueue:
            return -1
        total += (s.model.maxconn - s.cur) + (s.model.maxqueue - len(s.queue))
    return total


def _be_conn_free(b) -> int:
    """Free connection slots of the servers that can take traffic now (the active ones,
    else the backups in use); -1 when one has no maxconn (HAProxy's be_conn_free)."""
    total = 0
    for s in b._active:
        if not s.model.maxconn:
            return -1
        total += max(0, s.model.maxconn - s.cur)
    return total


def _totpend(b) -> int:
    return len(b.queue) + sum(len(s.queue) for s in b.servers)


def _avg_queue(b) -> int:
    """Queued requests per usable server, rounded up; twice the total without one."""
    n, pending = len(b._active), _totpend(b)
    return (pending + n - 1) // n if n else pending * 2


_proxy_fetch("nbsrv", "be", lambda b: len(b._active), 0)
_proxy_fetch("be_conn", "be", lambda b: b.cur, 0)
_proxy_fetch("queue", "be", _totpend, 0)
_proxy_fetch("avg_queue", "be", _avg_queue, 0)
_proxy_fetch("be_conn_free", "be", _be_conn_free, 0)
_proxy_fetch("connslots", "be", _connslots, 0)
_proxy_fetch("be_sess_rate", "be", lambda b: b.rates.rate(0, b.stot, now_ms()), 0)
_proxy_fetch("fe_conn", "fe", lambda f: f.stats.scur)
_proxy_fetch("fe_sess_rate", "fe", lambda f: f.stats.rate(now_ms())[0])
_proxy_fetch("fe_req_rate", "fe", lambda f: f.stats.rate(now_ms())[2])
_srv_fetch("srv_is_up", "bool", lambda s: s.op_up and not s.admin_maint)
_srv_fetch("srv_conn", "int", lambda s: s.cur)
_srv_fetch("srv_queue", "int", lambda s: len(s.queue))
_srv_fetch("srv_conn_free", "int", lambda s: max(0, s.model.maxconn - s.cur) if s.model.maxconn
           else -1)
_srv_fetch("srv_sess_rate", "int", lambda s: s.rates.rate(0, s.stot, now_ms()))
_srv_fetch("srv_weight", "int", lambda s: s.weight)
_srv_fetch("srv_uweight", "int", lambda s: s.weight)
_srv_fetch("srv_iweight", "int", lambda s: s.model.weight)


# ---------------------------------------------------------------------------- the stream's proxies
# fe_name, be_name, srv_name...: the frontend, backend and server of the stream being
# processed (Context.fe, .be, .stream.srv). Until a backend is chosen HAProxy's stream
# backend is the frontend itself. FETCH_NEEDS below keeps them out of rules that run before
# their object exists, as HAProxy's configuration check does.

def _stream_be(ctx):
    be = ctx.be
    return be if be is not None else ctx.fe


def _stream_srv(ctx):
    stream = ctx.stream
    return None if stream is None else stream.srv


def _timeout_ms(px, name: str) -> Optional[int]:
    return None if px is None else (px.model.timeout(name) or 0)


def _pathq(ctx) -> Optional[str]:
    if ctx.path is None:
        return None
    return ctx.path if ctx.query is None else f"{ctx.path}?{ctx.query}"


def _is_local(addr: Optional[str]) -> Optional[bool]:
    """Whether `addr` is one of this host's addresses (binding to it succeeds)."""
    if not addr:
        return None
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        try:
            s.bind((addr, 0))
        except OSError:
            return False
    return True


def _name_or_none(obj):
    return None if obj is None else obj.name


_simple("fe_name", "str", lambda ctx: _name_or_none(ctx.fe))
_simple("fe_id", "int", lambda ctx: None if ctx.fe is None else ctx.fe.iid)
_simple("fe_defbe", "str", lambda ctx: None if ctx.fe is None else ctx.fe.model.default_backend)
_simple("fe_client_timeout", "int", lambda ctx: _timeout_ms(ctx.fe, "client"))
_simple("be_name", "str", lambda ctx: _name_or_none(_stream_be(ctx)))
_simple("be_id", "int", lambda ctx: getattr(_stream_be(ctx), "iid", None))
_simple("be_server_timeout", "int", lambda ctx: _timeout_ms(_stream_be(ctx), "server"))
_simple("be_tunnel_timeout", "int", lambda ctx: _timeout_ms(_stream_be(ctx), "tunnel"))
_simple("srv_name", "str", lambda ctx: _name_or_none(_stream_srv(ctx)))
_simple("srv_id", "int", lambda ctx: getattr(_stream_srv(ctx), "id", None))
_simple("req.ver", "str", lambda ctx: None if ctx.method is None else
        f"{ctx.version // 10}.{ctx.version % 10}")
_simple("capture.req.ver", "str", lambda ctx: None if ctx.method is None else
        f"HTTP/{ctx.version // 10}.{ctx.version % 10}")
_simple("pathq", "str", _pathq)
FETCHES["capture.req.uri"] = FETCHES["pathq"]     # (2.6 gives the origin form for both)
_simple("stopping", "bool", lambda ctx: ctx.fe is not None and bool(ctx.fe.proc.stopping))
_simple("nbproc", "int", lambda ctx: 1)
_simple("thread", "int", lambda ctx: 0)           # one event loop: thread 0 of 1
_simple("src_is_local", "bool", lambda ctx: _is_local(ctx.src))
_simple("dst_is_local", "bool", lambda ctx: _is_local(ctx.dst))
_simple("hostname", "str", lambda ctx: socket.gethostname())


def _uuid_build(args, cfg):
    if len(args) > 1 or args and args[0] != "4":
        raise SampleError("Unsupported UUID version")
    return lambda ctx: str(uuid.uuid4())


FETCHES["uuid"] = FetchDef("uuid", "str", _uuid_build, "str")

# what a fetch needs that a rule may run before (HAProxy: "may not be reliably used here
# because it needs '...' which is not available here"); see config.Parser.check_log_format
# fetches of the request's headers: gone by the time response rules run (HAProxy: "needs
# 'HTTP request headers'"); capture.req.*, method, src... stay
REQUEST_HEADER_FETCHES = frozenset({
    "path", "url", "query", "base", "base32", "base32+src", "url32", "url32+src",
    "url_param", "urlp", "url_ip", "url_port", "pathq", "req.ver", "req.hdr", "req.fhdr",
    "req.hdr_cnt", "hdr_cnt", "req.hdr_ip", "hdr_ip", "req.hdr_val", "hdr_val", "req.hdrs",
    "req.hdr_names", "req.cook", "cook", "req.cook_cnt", "cook_cnt", "req.cook_val",
    "cook_val", "http_auth", "http_auth_group", "http_auth_type", "http_auth_user",
    "http_auth_pass", "http_auth_bearer", "req.body", "req.body_len", "req.body_size",
    "req.body_param"})

FETCH_NEEDS: dict[str, str] = {
    **{n: "backend" for n in ("be_name", "be_id", "be_server_timeout", "be_tunnel_timeout")},
    **{n: "server" for n in ("srv_name", "srv_id")},
}


# ---------------------------------------------------------------------------- converters

@dataclass(frozen=True)
class ConvDef:
    name: str
    build: Callable      # build(args, cfg, fn) -> fn'(ctx); fn gives values of type `takes`
    out: Optional[str]   # output type, None = same as input
    takes: str = "any"   # input type; the previous value is cast to it (see _cast)


CONVERTERS: dict[str, ConvDef] = {}


def _conv(name: str, out: Optional[str], takes: str = "any"):
    def deco(build):
        CONVERTERS[name] = ConvDef(name, build, out, takes)
        return build
    return deco


# ---- casts between sample types, as HAProxy's sample_casts matrix allows them
# types: bool, int, ip (IPv4 or IPv6 text), str, bin (bytes), meth (method text)

_NO_CAST = {("bool", "ip"), ("bin", "int"), ("bin", "ip"), ("bin", "bool"), ("meth", "int"),
            ("meth", "ip"), ("meth", "bool")}


def _ip_text(v: str):
    """v when it is an IPv4 or IPv6 address as written, else None."""
    for fam in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(fam, v)
            return v
        except OSError:
            pass
    return None


def _to_bin_ip(v: str):
    fam = socket.AF_INET6 if ":" in v else socket.AF_INET
    return socket.inet_pton(fam, v)


def _str_to_int(s: str):
    """HAProxy's string-to-integer cast: leading sign and digits, 0 when there are none;
    an empty string does not convert."""
    if not s:
        return None
    m = re.match(r"[+-]?\d+", s)
    return int(m.group(0)) if m else 0


def _ipv4_to_int(v: str):
    try:
        return int.from_bytes(socket.inet_pton(socket.AF_INET, v), "big")
    except OSError:
        return None                  # IPv6 does not convert


_CASTS: dict[tuple[str, str], Callable] = {
    ("bool", "str"): lambda v: "1" if v else "0",
    ("bool", "int"): int,
    ("bool", "bin"): lambda v: int(v).to_bytes(8, "big"),
    ("int", "str"): str,
    ("int", "bool"): bool,
    ("int", "ip"): lambda v: socket.inet_ntoa((v & 0xFFFFFFFF).to_bytes(4, "big")),
    ("int", "bin"): lambda v: (v & 0xFFFFFFFFFFFFFFFF).to_bytes(8, "big"),
    ("ip", "str"): lambda v: v,
    ("ip", "int"): _ipv4_to_int,
    ("ip", "bool"): lambda v: None if (n := _ipv4_to_int(v)) is None else n != 0,
    ("ip", "bin"): _to_bin_ip,
    ("str", "int"): _str_to_int,
    ("str", "bool"): lambda v: None if (n := _str_to_int(v)) is None else n != 0,
    ("str", "ip"): _ip_text,
    ("str", "bin"): lambda v: v.encode("latin-1"),
    ("str", "meth"): lambda v: v,
    ("bin", "str"): lambda v: v.split(b"\0", 1)[0].decode("latin-1"),   # C string: up to NUL
    ("meth", "str"): lambda v: v,
    ("meth", "bin"): lambda v: v.encode("latin-1"),
}


def value_cast(frm: str, to: str) -> Optional[Callable]:
    """The function casting one value of type `frm` to type `to` (returning None when that
    value does not convert), or None when no change is needed."""
    if to in ("any", frm):
        return None
    if frm == "any":                 # a variable's value: its type is known at run time
        return _vars.dynamic_cast(to)
    if (frm, to) in _NO_CAST:
        raise SampleError(f"a {frm} sample cannot be used as {to}")
    return _CASTS.get((frm, to))


def _cast(fn: Callable, declared: str, actual: str, to: str, what: str) -> Callable:
    """Wrap `fn` so its values reach a converter as type `to`. The check against the
    declared type is HAProxy's configuration-time one (error); the cast itself follows the
    actual type, which can differ: integer converters keep a boolean sample boolean (HAProxy
    casts bool to int without retyping), so `always_true,add(1)` still refuses to become an
    address. A value that does not convert gives no sample."""
    if to != "any" and (declared, to) in _NO_CAST:
        raise SampleError(f"converter '{what}' cannot be applied.")
    if to in ("any", actual):
        return fn
    if (actual, to) in _NO_CAST:
        return lambda ctx: None
    cast = _vars.dynamic_cast(to) if actual == "any" else _CASTS.get((actual, to))
    if cast is None:
        return fn

    def casted(ctx):
        v = fn(ctx)
        return None if v is None else cast(v)
    return casted


def _no_conv_args(name: str, args: list) -> None:
    if args:
        raise SampleError(f"invalid arg 1 in converter '{name}' : expected ')' before "
                          f"'{','.join(args)})'")


def _map_conv(name: str, out: Optional[str], takes: str, f: Callable):
    def build(args, cfg, inner):
        _no_conv_args(name, args)

        def conv(ctx):
            v = inner(ctx)
            return None if v is None else f(v)
        return conv
    CONVERTERS[name] = ConvDef(name, build, out, takes)


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_ASCII_UPPER = str.maketrans("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")


def _lower(v: str) -> str:
    """C tolower(): ASCII letters only (bytes above 0x7f stay as they are)."""
    return v.lower() if v.isascii() else v.translate(_ASCII_LOWER)


def _case_conv(name: str, table: dict, method: Callable):
    """lower/upper, inlined: they sit on routing paths (`req.hdr(host),lower`)."""
    def build(args, cfg, inner):
        _no_conv_args(name, args)

        def conv(ctx):
            v = inner(ctx)
            if v is None:
                return None
            return method(v) if v.isascii() else v.translate(table)
        return conv
    CONVERTERS[name] = ConvDef(name, build, "str", "str")


_case_conv("lower", _ASCII_LOWER, str.lower)
_case_conv("upper", _ASCII_UPPER, str.upper)
_map_conv("length", "int", "str", len)
_map_conv("hex", "str", "bin", lambda v: v.hex().upper())
_map_conv("bool", "bool", "int", lambda v: v != 0)
_map_conv("not", "bool", "int", lambda v: v == 0)
_map_conv("neg", "int", "int", lambda v: -v)


def _arith(name, op):
    def build(args, cfg, inner):
        if len(args) == 1 and args[0] and not args[0].lstrip("-").isdigit():
            return _arith_var(op, _vars.int_arg(name, args[0], cfg), inner)
        if len(args) != 1 or not args[0].lstrip("-").isdigit():
            raise SampleError(f"converter '{name}' expects an integer argument")
        n = int(args[0])

        def conv(ctx):
            v = inner(ctx)
            return None if v is None else op(v, n)
        return conv
    CONVERTERS[name] = ConvDef(name, build, "int", "int")


def _arith_var(op, arg, inner):
    """An arithmetic converter whose argument is a variable (no sample when it is unset)."""
    def conv(ctx):
        v = inner(ctx)
        if v is None:
            return None
        n = arg(ctx)
        return None if n is None else op(v, n)
    return conv


_LLONG_MAX, _LLONG_MIN = 2**63 - 1, -2**63


def _wrap64(n: int) -> int:
    return (n + 2**63) % 2**64 - 2**63


def _arith_add(a: int, b: int) -> int:
    """HAProxy 2.6's capped addition, including its signed-overflow behaviour: when both
    operands are negative the LLONG_MAX check wraps and the result is LLONG_MAX
    (`int(-3),sub(2)` gives 9223372036854775807 on haproxy 2.6.12)."""
    if (a ^ b) >= 0:
        if a < 0 and _wrap64(_LLONG_MIN - a) > b:
            return _LLONG_MIN
        if _wrap64(_LLONG_MAX - a) < b:
            return _LLONG_MAX
    return _wrap64(a + b)


def _arith_mul(a: int, b: int) -> int:
    return max(_LLONG_MIN, min(_LLONG_MAX, a * b))     # capped like HAProxy's


_arith("add", _arith_add)
_arith("sub", lambda a, b: _arith_add(a, -b) if b != _LLONG_MIN else
       min(_LLONG_MAX, _arith_add(a, _LLONG_MAX) + 1))
_arith("mul", _arith_mul)
def _c_div(a: int, b: int) -> int:
    """Integer division truncating toward zero, as C (and HAProxy) does; 0 by 0."""
    if not b:
        return 0
    q = abs(a) // abs(b)
    return q if (a < 0) == (b < 0) else -q


_arith("div", _c_div)
_arith("mod", lambda a, b: a - b * _c_div(a, b) if b else 0)
_arith("and", lambda a, b: a & b)
_arith("or", lambda a, b: a | b)
_arith("xor", lambda a, b: a ^ b)


# ---- string, encoding and hash converters (HAProxy 2.6 src/sample.c, src/hash.c)

def _conv_args(name: str, args: list, kinds: str, required: int) -> list:
    """Arguments typed as HAProxy's arg lists ('i' integer, 's' string), with its
    configuration-time messages."""
    if len(args) > len(kinds):
        rest = ",".join(args[len(kinds):])
        raise SampleError(f"invalid arg {len(kinds) + 1} in converter '{name}' : expected ')' "
                          f"before '{',' if kinds else ''}{rest})'")
    if len(args) < required:
        kind = "integer" if kinds[len(args)] == "i" else "string"
        raise SampleError(f"invalid arg {len(args) + 1} in converter '{name}' : missing "
                          f"arguments (got {len(args)}/{required}), type '{kind}' expected.")
    out = []
    for i, (a, k) in enumerate(zip(args, kinds)):
        if k == "i":
            if not _INT_ARG.fullmatch(a):
                raise SampleError(f"invalid arg {i + 1} in converter '{name}' : failed to parse "
                                  f"'{a}' as type 'integer' at position {i + 1}.")
            a = int(a)
        out.append(a)
    return out + [None] * (len(kinds) - len(out))


def _str_conv(name: str, kinds: str, required: int, make, takes: str = "str",
              out: str = "str", check=None):
    """A converter `name(args)`: make(*args) gives f(value) -> value or None."""
    def build(args, cfg, inner):
        vals = _conv_args(name, args, kinds, required)
        problem = check(*vals) if check is not None else None
        if problem:
            raise SampleError(f"invalid args in converter '{name}' : {problem}")
        f = make(*vals)

        def conv(ctx):
            v = inner(ctx)
            return None if v is None else f(v)
        return conv
    CONVERTERS[name] = ConvDef(name, build, out, takes)


_HEXDIGITS = frozenset("0123456789abcdefABCDEF")


def _url_dec(text: str, in_form: bool):
    """HAProxy's url_decode(): %XX decoded, '+' a space in a form or after a '?'; a bad
    %-sequence gives no sample; the result is a C string (ends at a decoded NUL)."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if c == "%":
            h = text[i + 1:i + 3]
            if len(h) < 2 or h[0] not in _HEXDIGITS or h[1] not in _HEXDIGITS:
                return None
            out.append(chr(int(h, 16)))
            i += 3
            continue
        if c == "+":
            out.append(" " if in_form else "+")
        else:
            if c == "?":
                in_form = True
            out.append(c)
        i += 1
    return "".join(out).split("\0", 1)[0]


_str_conv("url_dec", "i", 0, lambda form: lambda v: _url_dec(v, bool(form)))


def _index_check(index, seps, count=None):
    if index == 0:
        return "Unexpected value 0 for index."
    if not seps:
        return "Empty separators list."
    return None


def _from_end(index: int, scan: Callable) -> Callable:
    """A negative index counts from the end: HAProxy's backward walk is the forward one
    over the reversed string."""
    if index > 0:
        return scan
    return lambda v: None if (r := scan(v[::-1])) is None else r[::-1]


def _field(index: int, seps: str, count):
    """field(index,seps[,count]): the index-th field (negative: from the end), and with
    count the following count-1 fields with their separators (0: all the rest); no sample
    when there are fewer fields."""
    want, count = abs(index), 1 if count is None else count

    def scan(v: str):
        field, start, left = 1, 0, count
        for end, c in enumerate(v):
            if c in seps:
                if field == want:
                    if left == 1:
                        return v[start:end]
                    if left > 1:
                        left -= 1
                else:
                    start = end + 1
                    field += 1
        return v[start:] if field == want else None
    return _from_end(index, scan)


def _word(index: int, seps: str, count):
    """word(index,seps[,count]): as field with the empty fields skipped; an empty string
    when there are fewer words."""
    want, count = abs(index), 1 if count is None else count

    def scan(v: str):
        word, start, inword, left = 0, 0, False, count
        for end, c in enumerate(v):
            issep = c in seps
            if not inword:
                if not issep:
                    if word != want:
                        word += 1
                        start = end
                    inword = True
            elif issep:
                if word == want:
                    if left == 1:
                        return v[start:end]
                    if left > 1:
                        left -= 1
                inword = False
        return v[start:] if word == want else ""
    return _from_end(index, scan)


_str_conv("field", "isi", 2, _field, check=_index_check)
_str_conv("word", "isi", 2, _word, check=_index_check)


def _regsub_build(args, cfg, inner):
    name = "regsub"
    regex, subst, flags = _conv_args(name, args, "sss", 2)
    flags = flags or ""
    for c in flags:
        if c not in "ig":
            raise SampleError(f"invalid args in converter 'regsub' : invalid regex flag '{c}', "
                              "only 'i' and 'g' are supported")
    try:
        rx = re.compile(regex, re.I if "i" in flags else 0)
    except re.error as e:
        raise SampleError(f"error in regex '{regex}' in arg 1 of conversion keyword 'regsub' : "
                          f"regex '{regex}' is invalid ({e})") from None
    # HAProxy's exp_replace: \0..\9 are groups, other backslashed characters stand for
    # themselves
    template = re.sub(r"\\(.)", lambda m: m.group(0) if m.group(1).isdigit() else m.group(1),
                      subst)

    def expand(m):
        return re.sub(r"\\(\d)", lambda g: m.group(int(g.group(1))) or ""
                      if int(g.group(1)) <= (rx.groups or 0) else "", template)
    count = 0 if "g" in flags else 1

    def conv(ctx):
        v = inner(ctx)
        return None if v is None else rx.sub(expand, v, count)
    return conv


CONVERTERS["regsub"] = ConvDef("regsub", _regsub_build, "str", "str")

_B64_QUANTUM = re.compile(r"[A-Za-z0-9+/]{2}(?:[A-Za-z0-9+/]{2}|[A-Za-z0-9+/]=|==)|"
                          r"[A-Za-z0-9+/]===")


def _b64dec(v: str):
    """HAProxy's base64dec(): groups of 4 characters, each group padded on its own
    ('QQ==QQ==' is 'AA'); no sample otherwise."""
    if len(v) % 4:
        return None
    out = bytearray()
    for i in range(0, len(v), 4):
        q = v[i:i + 4]
        if not _B64_QUANTUM.fullmatch(q):
            return None
        pad = q.count("=")
        out += binascii.a2b_base64(q.replace("=", "A"))[:3 - pad]
    return bytes(out)


_map_conv("base64", "str", "bin", lambda v: binascii.b2a_base64(v, newline=False).decode())
_map_conv("b64dec", "bin", "str", _b64dec)


def _bytes(offset: int, length):
    def f(v: bytes):
        if offset < 0 or len(v) <= offset:   # a negative offset is a huge unsigned one
            return b""
        v = v[offset:]
        return v if length is None or length < 0 else v[:length]
    return f


_str_conv("bytes", "ii", 1, _bytes, takes="bin", out="bin")


def _hash_conv(name: str, fn: Callable):
    """name([avalanche]): a 32-bit hash of the bytes, mixed by full_hash when the argument
    is non-zero."""
    def make(avalanche):
        return (lambda v: full_hash(fn(v))) if avalanche else fn
    _str_conv(name, "i", 0, make, takes="bin", out="int")


_hash_conv("sdbm", sdbm)
_hash_conv("djb2", djb2)
_hash_conv("wt6", wt6)
_hash_conv("crc32", crc32)
_hash_conv("crc32c", lambda v: _crc32c(v))


# xxHash (XXH32, XXH64: Yann Collet's specification), as HAProxy's xxh32/xxh64(seed)
_X32 = (2654435761, 2246822519, 3266489917, 668265263, 374761393)
_X64 = (11400714785074694791, 14029467366897019727, 1609587929392839161,
        9650029242287828579, 2870177450012600261)
_U64 = 2**64 - 1


def _rotl(x: int, r: int, bits: int, mask: int) -> int:
    return ((x << r) | (x >> (bits - r))) & mask


def _xxh_stripes(data: bytes, seed: int, lane_bytes: int, primes: tuple, mask: int,
                 step: Callable):
    """XXH32/XXH64's first phase, shared: the four accumulators run over the whole
    stripes (4 lanes each), then folded into one; (hash so far, bytes consumed)."""
    p1, p2 = primes[0], primes[1]
    acc = [(seed + p1 + p2) & mask, (seed + p2) & mask, seed, (seed - p1) & mask]
    i, stripe, bits = 0, 4 * lane_bytes, 8 * lane_bytes
    while i + stripe <= len(data):
        for k in range(4):
            acc[k] = step(acc[k], int.from_bytes(data[i + lane_bytes * k:
                                                      i + lane_bytes * (k + 1)], "little"))
        i += stripe
    h = sum(_rotl(a, r, bits, mask) for a, r in zip(acc, (1, 7, 12, 18))) & mask
    return h, acc, i


def _xxh32_round(acc: int, lane: int) -> int:
    return _rotl((acc + lane * _X32[1]) & _U32, 13, 32, _U32) * _X32[0] & _U32


def _xxh32(data: bytes, seed: int) -> int:
    p1, p2, p3, p4, p5 = _X32
    n, i, seed = len(data), 0, seed & _U32
    if n >= 16:
        h, _, i = _xxh_stripes(data, seed, 4, _X32, _U32, _xxh32_round)
    else:
        h = seed + p5
    h = (h + n) & _U32
    while i + 4 <= n:
        h = _rotl((h + int.from_bytes(data[i:i + 4], "little") * p3) & _U32, 17, 32, _U32) \
            * p4 & _U32
        i += 4
    for b in data[i:]:
        h = _rotl((h + b * p5) & _U32, 11, 32, _U32) * p1 & _U32
    h = (h ^ (h >> 15)) * p2 & _U32
    h = (h ^ (h >> 13)) * p3 & _U32
    return h ^ (h >> 16)


def _xxh64_round(acc: int, lane: int) -> int:
    return _rotl((acc + lane * _X64[1]) & _U64, 31, 64, _U64) * _X64[0] & _U64


def _xxh64(data: bytes, seed: int) -> int:
    p1, p2, p3, p4, p5 = _X64
    n, i, seed = len(data), 0, seed & _U64
    if n >= 32:
        h, acc, i = _xxh_stripes(data, seed, 8, _X64, _U64, _xxh64_round)
        for a in acc:
            h = ((h ^ _xxh64_round(0, a)) * p1 + p4) & _U64
    else:
        h = (seed + p5) & _U64
    h = (h + n) & _U64
    while i + 8 <= n:
        h ^= _xxh64_round(0, int.from_bytes(data[i:i + 8], "little"))
        h = (_rotl(h, 27, 64, _U64) * p1 + p4) & _U64
        i += 8
    if i + 4 <= n:
        h ^= int.from_bytes(data[i:i + 4], "little") * p1 & _U64
        h = (_rotl(h, 23, 64, _U64) * p2 + p3) & _U64
        i += 4
    for b in data[i:]:
        h ^= b * p5 & _U64
        h = _rotl(h, 11, 64, _U64) * p1 & _U64
    h = (h ^ (h >> 33)) * p2 & _U64
    h = (h ^ (h >> 29)) * p3 & _U64
    return h ^ (h >> 32)


_str_conv("xxh32", "i", 0, lambda seed: lambda v: _xxh32(v, seed or 0), takes="bin", out="int")
_str_conv("xxh64", "i", 0, lambda seed: lambda v: _wrap64(_xxh64(v, seed or 0)), takes="bin",
          out="int")          # HAProxy keeps the 64 bits in a signed integer
_map_conv("sha1", "bin", "bin", lambda v: hashlib.sha1(v).digest())
_map_conv("cpl", "int", "int", lambda v: ~v)


def _crc32c_table() -> list:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ (0x82F63B78 if c & 1 else 0)
        table.append(c)
    return table


_CRC32C = _crc32c_table()


def _crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli, RFC 4960 appendix B)."""
    crc = 0xFFFFFFFF
    for b in data:
        crc = (crc >> 8) ^ _CRC32C[(crc ^ b) & 0xFF]
    return crc ^ 0xFFFFFFFF


def _sha2_check(bits):
    if bits is not None and bits not in (224, 256, 384, 512):
        return f"Unsupported number of bits: '{bits}'."
    return None


def _sha2(bits):
    new = getattr(hashlib, f"sha{bits or 256}")
    return lambda v: new(v).digest()


_str_conv("sha2", "i", 0, _sha2, takes="bin", out="bin", check=_sha2_check)


def _digest_ctor(name: str, conv: str) -> Callable:
    """hashlib's constructor for an OpenSSL digest name (sha256, SHA512, md5, sha3-256...)."""
    for candidate in (name, name.replace("-", "_"), name.lower().replace("-", "_")):
        try:
            hashlib.new(candidate)
        except (ValueError, TypeError):
            continue
        return lambda data=b"": hashlib.new(candidate, data)
    raise SampleError(f"invalid args in converter '{conv}' : algorithm must be a valid "
                      "OpenSSL message digest name.")


def _digest_build(args, cfg, inner):
    (name,) = _conv_args("digest", args, "s", 1)
    new = _digest_ctor(name, "digest")

    def conv(ctx):
        v = inner(ctx)
        return None if v is None else new(v).digest()
    return conv


def _hmac_build(args, cfg, inner):
    name, key = _conv_args("hmac", args, "ss", 2)
    new = _digest_ctor(name, "hmac")
    raw = _b64dec(key)
    if raw is None:
        raise SampleError("invalid args in converter 'hmac' : failed to parse key : argument "
                          "needs to be base64 "
                          "encoded, and can either be a string or a variable.")

    def conv(ctx):
        v = inner(ctx)
        return None if v is None else hmac.new(raw, v, new).digest()
    return conv


CONVERTERS["digest"] = ConvDef("digest", _digest_build, "bin", "bin")
CONVERTERS["hmac"] = ConvDef("hmac", _hmac_build, "bin", "bin")

_URL_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def _url_enc_check(kind):
    if kind is not None and kind != "query":
        return "Unexpected encode type. Allowed value is 'query'."
    return None


_str_conv("url_enc", "s", 0, lambda kind: lambda v: "".join(
    c if c in _URL_SAFE else f"%{ord(c):02X}" for c in v), check=_url_enc_check)


def _ub64enc(v: bytes) -> str:
    """base64url without padding."""
    return binascii.b2a_base64(v, newline=False).decode().rstrip("=").replace(
        "+", "-").replace("/", "_")


def _ub64dec(v: str):
    """base64url, padding optional (the missing '=' added back); '+' and '/' refused."""
    if len(v) % 4 == 1 or "+" in v or "/" in v:
        return None
    return _b64dec(v.replace("-", "+").replace("_", "/") + "=" * (-len(v) % 4))


_map_conv("ub64enc", "str", "bin", _ub64enc)
_map_conv("ub64dec", "bin", "str", _ub64dec)

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _http_date(offset, unit):
    """http_date([offset[,unit]]): RFC 1123 date of the input plus the offset, both in the
    unit; ms and us add the fraction as HAProxy prints it ('.%d')."""
    scale = _DATE_UNITS.get(unit or "s", 1)
    frac_fmt = unit is not None and scale != 1

    def f(v: int):
        v += offset or 0
        frac = 0
        if scale != 1:
            frac = v - scale * _c_div(v, scale)
            v = _c_div(v, scale)
        try:
            t = time.gmtime(v & 0x007FFFFFFFFFFFFF)      # HAProxy's 55-bit mask
        except (OverflowError, OSError, ValueError):
            return None
        return (f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year:04d} "
                f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}"
                + (f".{frac} GMT" if frac_fmt else " GMT"))
    return f


def _unit_check(offset, unit):
    if unit is not None and unit not in _DATE_UNITS:
        return f"expects 's', 'ms' or 'us', got '{unit}'"
    return None


_str_conv("http_date", "is", 0, _http_date, takes="int", out="str", check=_unit_check)


def _trim(side: str):
    def make(chars):
        chars = chars or ""          # no argument: nothing to trim (accepted by HAProxy)
        return (lambda v: v.lstrip(chars)) if side == "l" else (lambda v: v.rstrip(chars))
    return make


_str_conv("ltrim", "s", 0, _trim("l"))
_str_conv("rtrim", "s", 0, _trim("r"))



def _host_port(v: str) -> tuple[str, str]:
    """A Host value split at its last ':' unless a ']' follows it (IPv6 in brackets)."""
    i = v.rfind(":")
    if i < 0 or "]" in v[i:]:
        return v, ""
    return v[:i], v[i + 1:]


def _port_only(v: str) -> int:
    """HAProxy reads the port digit by digit without checking them (an unsigned 32-bit
    accumulation: 'x' counts as 72); 0 when there is none."""
    n = 0
    for c in _host_port(v)[1]:
        n = (n * 10 + ord(c) - 48) & _U32
    return n


_map_conv("host_only", "str", "str", lambda v: _lower(_host_port(v)[0]))
_map_conv("port_only", "int", "str", _port_only)

# proxy state by a name the sample gives (see the fetches above)
def _nbsrv_conv(args, cfg, inner):
    """nbsrv converter: the usable servers of the backend the sample names (found at run
    time among the running ones); no sample for an unknown name."""
    _conv_args("nbsrv", args, "", 0)

    def conv(ctx):
        name = inner(ctx)
        b = None if name is None else RUNNING.backends.get(name)
        return None if b is None else len(b._active)
    return conv


def _srv_queue_conv(args, cfg, inner):
    """srv_queue converter: queue length of the server named `backend/server` (or a server
    of the rule's own backend)."""
    _conv_args("srv_queue", args, "", 0)
    holder = _holder_name(cfg)

    def conv(ctx):
        text = inner(ctx)
        if text is None:
            return None
        be, sep, srv = text.partition("/")
        b = RUNNING.backends.get(be if sep else holder)
        s = None if b is None else b.by_name.get(srv if sep else be)
        return None if s is None else len(s.queue)
    return conv


CONVERTERS["nbsrv"] = ConvDef("nbsrv", _nbsrv_conv, "int", "str")
CONVERTERS["srv_queue"] = ConvDef("srv_queue", _srv_queue_conv, "int", "str")


def _time_conv(name: str, to_tm: Callable):
    """ltime/utime(format[,offset]): strftime of the date (seconds) plus the offset."""
    def make(fmt, offset):
        offset = offset or 0

        def f(v: int):
            try:
                return time.strftime(fmt, to_tm(v + offset))
            except (OverflowError, OSError, ValueError):
                return None
        return f
    _str_conv(name, "si", 1, make, takes="int", out="str")


_time_conv("ltime", time.localtime)
_time_conv("utime", time.gmtime)


@_conv("ipmask", "ip", "ip")
def _ipmask(args, cfg, inner):
    if not 1 <= len(args) <= 2:
        raise SampleError("converter 'ipmask' expects 1 or 2 arguments")
    m4 = _mask_arg(args[0], 32, socket.AF_INET)
    m6 = _mask_arg(args[1], 128, socket.AF_INET6) if len(args) > 1 else None
    inet_pton, inet_ntop = socket.inet_pton, socket.inet_ntop

    def conv(ctx):
        v = inner(ctx)
        if v is None:
            return None
        if ":" in v:
            try:
                raw = inet_pton(socket.AF_INET6, v)
            except OSError:
                return None
            if raw[:12] == _V4_MAPPED:   # ::ffff:a.b.c.d is masked as the IPv4 it holds
                return inet_ntop(socket.AF_INET, (int.from_bytes(raw[12:], "big") & m4)
                                 .to_bytes(4, "big"))
            if m6 is None:           # no IPv6 mask given: IPv6 input gives no sample
                return None
            n = int.from_bytes(raw, "big") & m6
            return inet_ntop(socket.AF_INET6, n.to_bytes(16, "big"))
        try:
            n = int.from_bytes(inet_pton(socket.AF_INET, v), "big") & m4
        except OSError:
            return None
        return inet_ntop(socket.AF_INET, n.to_bytes(4, "big"))
    return conv


_V4_MAPPED = b"\0" * 10 + b"\xff\xff"


def _mask_arg(text: str, bits: int, family: int) -> int:
    """A prefix length (`24`) or, for IPv4, a dotted mask (`255.255.255.0`)."""
    if text.isdigit() and int(text) <= bits:
        n = int(text)
        return ((1 << n) - 1) << (bits - n)
    if family == socket.AF_INET:
        try:
            return int.from_bytes(socket.inet_pton(family, text), "big")
        except OSError:
            pass
    raise SampleError(f"converter 'ipmask' : invalid mask '{text}'")


def _table_conv(suffix: str, array: bool):
    dtype, kind = (_ARRAY_SUFFIXES if array else _COUNTER_SUFFIXES)[suffix]
    # converters have no inc/clr forms except the array ones in newer versions; reads only
    name = f"table_{suffix}"

    def build(args, cfg, inner):
        args = list(args)
        idx = _take_index(args, array, f"converter '{name}'", name)
        if len(args) > 1:
            raise SampleError(f"converter '{name}' : too many arguments")
        tname = _table_ref(cfg, args[0] if args else None, name)
        return _keyed_reader(inner, tname, dtype, kind, idx, getattr(inner, "out", "any"))
    return name, build


for _suffix, (_dt, _kind) in _COUNTER_SUFFIXES.items():
    if _kind in ("read", "kbytes"):
        _name = _suffix[4:] if _suffix.startswith("get_") else _suffix
        _n, _b = _table_conv(_suffix, False)
        CONVERTERS[f"table_{_name}"] = ConvDef(f"table_{_name}", _b, "int")
for _suffix in ("get_gpc", "gpc_rate", "get_gpt"):
    _n, _b = _table_conv(_suffix, True)
    _name = _suffix[4:] if _suffix.startswith("get_") else _suffix
    CONVERTERS[f"table_{_name}"] = ConvDef(f"table_{_name}", _b, "int")


def _entry_conv(name: str, answer):
    """A converter looking its input up as a key: `answer(table, entry or None)`."""
    def build(args, cfg, inner):
        if len(args) > 1:
            raise SampleError(f"converter '{name}' : too many arguments")
        tname = _table_ref(cfg, args[0] if args else None, name)
        vtype = getattr(inner, "out", "any")

        def conv(ctx):
            table = ctx.table if tname is None else ctx.tables.get(tname)
            value = inner(ctx)
            if table is None or value is None:
                return None
            key = _table_key(table, value, vtype)
            if key is None:
                return None
            return answer(table, table.lookup_key(key))
        return conv
    return build


CONVERTERS["table_trackers"] = ConvDef(
    "table_trackers", _entry_conv("table_trackers", lambda t, e: 0 if e is None else _trackers(t, e)), "int")
CONVERTERS["in_table"] = ConvDef(
    "in_table", _entry_conv("in_table", lambda t, e: e is not None), "bool")


def _map_build(name: str, method: str, out: str):
    """map_<method>_<out>(file[,default]): the file's value for the sample (proxy/maps.py),
    else the default, else no sample. The file is read when the converter is built."""
    def build(args, cfg, inner):
        from . import maps
        if len(args) > 2:
            raise SampleError(f"invalid arg 2 in converter '{name}' : expected ')' before "
                              f"',{','.join(args[2:])})'")
        default = None
        if len(args) == 2:
            default = args[1]
            if out == "int":
                if default and maps.parse_int_value(default) is None:
                    raise SampleError(f"invalid arg 2 in converter '{name}' : failed to parse "
                                      f"'{default}' as type 'integer' at position 2")
                default = int(default or 0)
        try:
            x = maps.REGISTRY.expr(args[0] if args else "", method, out,
                                   getattr(cfg, "where", None))
        except maps.MapError as e:
            raise SampleError(f"invalid args in converter '{name}' : {e}") from None
        if out == "ip" and default is not None:
            default = maps.parse_ip_value(default)
            if default is None:
                raise SampleError(f"invalid args in converter '{name}' : map: cannot parse "
                                  f"default ip <{args[1]}>.")
        find = x.finder(method)
        if method == "regm":
            regm_value = maps.regm_value

            def conv_regm(ctx):
                v = inner(ctx)
                if v is None:
                    return None
                hit = find(v)
                return default if hit is None else regm_value(hit[0].value, hit[1])
            return conv_regm

        def conv(ctx):
            v = inner(ctx)
            if v is None:
                return None
            hit = find(v)
            return default if hit is None else hit[0].typed[out]
        return conv
    return build


_MAP_TAKES = {"int": "int", "ip": "ip"}      # what the sample is cast to; str otherwise
for _m in ("str", "beg", "sub", "dir", "dom", "end", "reg", "regm", "int", "ip"):
    for _out in ("str", "int", "ip"):
        if _m == "regm" and _out != "str":
            continue                         # HAProxy 2.6 has no map_regm_int/_ip
        _n = f"map_{_m}" + ("" if _out == "str" else f"_{_out}")
        CONVERTERS[_n] = ConvDef(_n, _map_build(_n, _m, _out), _out, _MAP_TAKES.get(_m, "str"))
CONVERTERS["map"] = ConvDef("map", _map_build("map", "str", "str"), "str", "str")


# ---------------------------------------------------------------------------- expressions

_CALL = re.compile(r"^([A-Za-z0-9_.+-]+)(?:\((.*)\))?$", re.S)   # (set-var converter: a dash)


def split_call(text: str) -> tuple[str, list[str]]:
    """`name(a,b)` -> ('name', ['a', 'b']); `name` -> ('name', [])."""
    m = _CALL.match(text)
    if not m:
        raise SampleError(f"invalid sample fetch or converter '{text}'")
    name, inner = m.group(1), m.group(2)
    if inner is None:
        return name, []
    return name, [a.strip() for a in inner.split(",")] if inner.strip() else []


def _split_chain(text: str) -> list[str]:
    """Split `fetch(a,b),conv(c),conv2` on the commas outside parentheses."""
    parts, depth, cur = [], 0, []
    for c in text:
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth < 0:
                raise SampleError(f"unbalanced parenthesis in '{text}'")
        if c == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(c)
    if depth:
        raise SampleError(f"missing closing parenthesis in '{text}'")
    parts.append("".join(cur))
    return parts


# A compiled expression is a plain function `expr(ctx) -> value | None` carrying three
# attributes: `text` (as written), `out` (sample type) and `fetch` (its FetchDef).
Expr = Callable


class Refs:
    """Where fetches record the tables they need (`table_refs`: (name or None for the
    proxy's own table, fetch name)); the config parser checks them once all is read.
    `where` is the (file, line) being parsed; `show map` names it among a map's users."""

    def __init__(self):
        self.table_refs: list[tuple[Optional[str], str]] = []
        self.where: Optional[tuple[str, int]] = None     # (file, line): users of a map
        self.in_acl = False          # set by acl.py: HAProxy words its errors per context
        self.vars = None             # the configuration's vars.Registry (names it mentions)
        self.response = False        # for a response rule: request headers give no sample


def compile_expr(text: str, refs: Optional[Refs] = None) -> Expr:
    """Compile `fetch[,conv...]`; raises SampleError on unknown names or bad arguments."""
    parts = _split_chain(text)
    name, args = split_call(parts[0])
    fd = FETCHES.get(name)
    if fd is None:
        raise SampleError(f"unknown fetch method '{name}'")
    fn = fd.build(args, refs)
    if refs is not None and refs.response and name in REQUEST_HEADER_FETCHES:
        fn = _no_sample              # (HAProxy: "will never match" in response rules)
    out = fd.out
    actual = out                     # the runtime type (see _cast)
    for part in parts[1:]:
        cname, cargs = split_call(part)
        cd = CONVERTERS.get(cname)
        if cd is None:
            raise SampleError(f"unknown converter '{cname}'")
        fn = _cast(fn, out, actual, cd.takes, cname)
        fn.out = actual if cd.takes == "any" else cd.takes   # what the converter receives
        fn = cd.build(cargs, refs, fn)
        if cd.takes == "int" and cd.out == "int" and actual == "bool":
            actual = "bool"          # arithmetic keeps a boolean sample boolean
        else:
            actual = cd.out or (actual if cd.takes == "any" else cd.takes)
        out = cd.out or (out if cd.takes == "any" else cd.takes)
    fn.text, fn.out, fn.fetch = text, actual, fd
    return fn


def _no_sample(ctx):
    return None


def _no_values(ctx):
    return []


def fetch_values_fn(text: str, refs: Optional[Refs] = None):
    """For ACLs: (fn(ctx) -> list of values, FetchDef, output type) — multi-valued fetches
    such as hdr() yield every occurrence; others yield [value] or []."""
    parts = _split_chain(text)
    name, args = split_call(parts[0])
    fd = FETCHES.get(name)
    if fd is None:
        raise SampleError(f"unknown fetch method '{name}'")
    if len(parts) == 1 and fd.multi is not None:
        fn = fd.multi(args, refs)
        if refs is not None and refs.response and name in REQUEST_HEADER_FETCHES:
            fn = _no_values
        return fn, fd, fd.out, True
    e = compile_expr(text, refs)
    return e, fd, e.out, False


from . import vars as _vars    # noqa: E402  (registers var() and the set-var converters)
