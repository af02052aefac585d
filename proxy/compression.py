"""HTTP response compression, as HAProxy 2.6's compression filter (src/flt_http_comp.c).

Configuration: `compression algo <name>...` (identity, gzip, deflate, raw-deflate),
`compression type <mime>...`, `compression offload` in defaults / frontend / backend /
listen; `maxcomprate`, `maxcompcpuusage`, `tune.comp.maxlevel` in global.

When, per request (select) and per response (Choice.applies), as HAProxy decides it:
- the algorithm: each Accept-Encoding element in turn, its `q=` (thousandths, 1000
  without one) must beat the best so far; the first configured algorithm (HAProxy keeps
  them last-configured first) whose token equals the element's, or any for `*`, is
  taken. None found: `identity` if configured (it changes only the framing), else no
  compression. User-Agents `Mozilla/4` other than MSIE >= 6 (6 only with SV1) get none.
  The backend's algorithms (and types) win over the frontend's; `offload` of either
  removes every Accept-Encoding header from the request, once an algorithm came from it.
- the response: HTTP/1.1 request and response, not HEAD, status 200-203, a body of known
  length (chunked, or a Content-Length > 0), no Content-Encoding, no Cache-Control
  `no-transform`, at most one ETag and a valid one, a Content-Type not `multipart*` and,
  with `compression type`, starting with one of them (case-insensitive; without a
  Content-Type then no compression); under `maxcomprate`.
- the head: Content-Length removed, `transfer-encoding: chunked` (unless already),
  a strong ETag made weak (`W/`), `vary: Accept-Encoding` always added, and
  `content-encoding: <token>` (not for identity), in that order at the end.
- the body leaves chunked, each piece the server sent compressed and flushed at once.

HAProxy's Debian build compresses with libslz (`haproxy -vv`: "Built with libslz"), this
uses Python's zlib (level `tune.comp.maxlevel`, 1 by default as in HAProxy): the bytes
differ, the decompressed body and the headers do not. Bytes accounting: HAProxy counts a
compressed response before compression (bout, bytes_out_cnt: the server's head in its HTX
size and the uncompressed payload); so does edgestick.
"""
from __future__ import annotations

import re
import weakref
import zlib
from dataclasses import dataclass, replace

from edgestick.freq_ctr import FreqCtr

from edgestick.cfgsyntax import c_atoi

from . import http1
from .sample import _header_values

# configuration name -> (token in Accept-Encoding / Content-Encoding, zlib wbits)
ALGORITHMS = {
    "identity": ("identity", None),
    "gzip": ("gzip", 31),
    "deflate": ("deflate", 15),
    "raw-deflate": ("deflate", -15),
}
_STATUSES = frozenset((200, 201, 202, 203))
_TOKEN = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]*")
_UNSET = object()


@dataclass(frozen=True)
class Compression:
    """A proxy's `compression` lines. Lists are kept last-configured first, as HAProxy
    prepends; a section inherits its defaults' lists and prepends its own."""
    algos: tuple = ()
    types: tuple = ()
    offload: bool = False
    level: int = 1              # tune.comp.maxlevel
    rate_limit: int = 0         # maxcomprate, bytes/s of input (0: none)
    filter: bool = False        # an explicit `filter compression` line


# ------------------------------------------------------------------ configuration

def parse_line(current: Compression | None, line, kind: str, warn) -> Compression:
    """One `compression` line of a proxy section (`kind` its kind): the new settings.
    `warn(line, message)` for HAProxy's warnings."""
    comp = current or Compression()
    words = line.words
    sub = words[1] if len(words) > 1 else ""
    if sub == "algo":
        if len(words) < 3:
            raise line.error("expects <algorithm>.")
        algos = comp.algos
        for name in words[2:]:
            if name not in ALGORITHMS:
                raise line.error(f"'{name}' is not a supported algorithm.")
            algos = (name,) + algos
        return replace(comp, algos=algos)
    if sub == "type":
        if len(words) < 3:
            raise line.error("expects <type>.")
        return replace(comp, types=tuple(reversed(words[2:])) + comp.types)
    if sub == "offload":
        if kind == "defaults":
            warn(line, "'offload' ignored in 'defaults' section.")
            return comp
        return replace(comp, offload=True)
    raise line.error("expects 'algo', 'type' or 'offload'")


def check_global(line, warn) -> None:
    """maxcomprate, maxcompcpuusage, tune.comp.maxlevel: HAProxy's checks (the values stay
    in Global.ignored; finish() reads them)."""
    kw, w = line.keyword, line.words
    arg = w[1] if len(w) > 1 else ""
    if kw == "maxcomprate":
        if not arg:
            raise line.error("expects an integer argument in kb/s.")
    elif kw == "maxcompcpuusage":
        if not _atoi_ok(arg, 0, 100):
            raise line.error("expects an integer argument between 0 and 100.")
        warn(line, "accepted but not enforced by edgestick "
                   "(responses are compressed whatever the CPU usage)")
    elif kw == "tune.comp.maxlevel":
        if not _atoi_ok(arg, 1, 9):
            raise line.error("expects a numeric value between 1 and 9")




def _atoi_ok(text: str, lo: int, hi: int) -> bool:
    return bool(text) and lo <= c_atoi(text) <= hi


def finish(cfg) -> None:
    """Global settings into every proxy's compression (after the whole file is read)."""
    ignored = cfg.global_.ignored
    level = c_atoi(ignored["tune.comp.maxlevel"][0]) if "tune.comp.maxlevel" in ignored else 1
    rate = c_atoi(ignored["maxcomprate"][0]) * 1024 if "maxcomprate" in ignored else 0
    for p in list(cfg.proxies) + list(cfg.defaults.values()):
        if p.compression is not None:
            p.compression = replace(p.compression, level=level, rate_limit=rate)


# ------------------------------------------------------------------ per request

class Plan:
    """The compression settings a request meets: its frontend's and backend's."""
    __slots__ = ("algos", "types", "offload", "level", "rate_limit", "memo")

    def __init__(self, fe: Compression | None, be: Compression | None):
        self.algos = be.algos if be is not None and be.algos else fe.algos if fe else ()
        self.types = be.types if be is not None and be.types else fe.types if fe else ()
        self.offload = bool((be is not None and be.offload) or (fe is not None and fe.offload))
        src = be if be is not None else fe
        self.level, self.rate_limit = src.level, src.rate_limit
        self.memo: dict = {}    # (Accept-Encoding values, User-Agent) -> algorithm or None

    def select(self, req) -> "Choice | None":
        """The algorithm for this request (None: no compression). With `offload`, the
        request loses its Accept-Encoding headers when they gave the algorithm."""
        if not self.algos:
            return None
        headers = req.headers
        key = (tuple(h[1] for h in headers if h[0] == "accept-encoding"),
               _first(headers, "user-agent"))
        memo = self.memo
        found = memo.get(key, _UNSET)       # (clients send the same few again and again)
        if found is _UNSET:
            if len(memo) >= 256:
                memo.clear()
            found = memo[key] = self._choose(headers, key[1])
        if found is None:
            return None
        algo, from_header = found
        if from_header and self.offload:
            req.remove("accept-encoding")
        return Choice(self, algo)

    def _choose(self, headers, ua) -> tuple | None:
        """(algorithm, whether Accept-Encoding gave it) or None."""
        algos = self.algos
        if ua is not None and _old_mozilla(ua):
            return None
        chosen, best_q = None, 0
        for value in _header_values(headers, "accept-encoding", True):
            toklen = _TOKEN.match(value).end()
            q = _qvalue(value, toklen)
            if q <= best_q:
                continue
            token = value[:toklen]
            for name in algos:
                if value[:1] == "*" or _word_match(token, ALGORITHMS[name][0]):
                    chosen, best_q = name, q
                    break
        if chosen is not None:
            return chosen, True
        if "identity" in algos:         # identity needs no Accept-Encoding
            return "identity", False
        return None


class Choice:
    """The algorithm chosen for a request, and what its response then needs."""
    __slots__ = ("plan", "algo")

    def __init__(self, plan: Plan, algo: str):
        self.plan, self.algo = plan, algo

    def applies(self, req, resp) -> bool:
        """Whether this response gets compressed (HAProxy's
        select_compression_response_header)."""
        if req.version < 11 or resp.version < 11 or req.method == "HEAD":
            return False
        if resp.status not in _STATUSES:
            return False
        framing = resp.framing
        if not (framing == http1.CHUNKED or (framing == http1.LENGTH and resp.length > 0)):
            return False
        headers = resp.headers
        etags = 0
        ctype = None
        for name, value in headers:
            if name == "content-encoding":
                return False
            if name == "etag":
                etags += 1
                if etags > 1 or not _valid_etag(value.strip(" \t")):
                    return False
            elif name == "content-type" and ctype is None:
                ctype = value.strip(" \t")
        for value in _header_values(headers, "cache-control", True):
            if _word_match(value, "no-transform"):
                return False
        types = self.plan.types
        if ctype is not None:
            low = ctype.lower()
            if low.startswith("multipart"):
                return False
            if types and not any(low.startswith(t.lower()) for t in types):
                return False
        elif types:
            return False
        limit = self.plan.rate_limit
        if limit and _RATE_IN.read() > limit:
            return False
        return True

    def rewrite_head(self, resp) -> None:
        """The head as HAProxy sends a compressed response."""
        if resp.framing != http1.CHUNKED:
            resp.remove("content-length")
            resp.add("transfer-encoding", "chunked")
        headers = resp.headers
        for i, (name, value) in enumerate(headers):
            if name == "etag":
                value = value.strip(" \t")
                if value[:1] == '"':
                    headers[i] = ["etag", "W/" + value]
                    resp.origin = None
                break
        resp.add("vary", "Accept-Encoding")
        token = ALGORITHMS[self.algo][0]
        if token != "identity":
            resp.add("content-encoding", token)

    def encoder(self):
        wbits = ALGORITHMS[self.algo][1]
        if wbits is None:
            return None
        return zlib.compressobj(self.plan.level, zlib.DEFLATED, wbits)


# the process's bytes into and out of the compressors per second (HAProxy's global
# comp_bps_in / comp_bps_out: maxcomprate, show info's CompressBpsIn/Out)
_RATE_IN = FreqCtr(1000)
_RATE_OUT = FreqCtr(1000)


def info_fields(cfg, as_float: bool) -> dict:
    """show info's CompressBpsIn, CompressBpsOut, CompressBpsRateLim."""
    ignored = cfg.global_.ignored if cfg is not None else {}
    limit = c_atoi(ignored["maxcomprate"][0]) * 1024 if "maxcomprate" in ignored else 0
    cast = float if as_float else int
    return {"CompressBpsIn": cast(_RATE_IN.read()), "CompressBpsOut": cast(_RATE_OUT.read()),
            "CompressBpsRateLim": limit}


# show stat's comp_in, comp_out, comp_byp, comp_rsp of each Frontend and Backend object
_COUNTERS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
STAT_FIELDS = ("comp_in", "comp_out", "comp_byp", "comp_rsp")


def stat_fields(proxy) -> dict:
    """The compression counters of a frontend or backend for its `show stat` row."""
    return dict(zip(STAT_FIELDS, _COUNTERS.get(proxy) or (0, 0, 0, 0)))


def _count(proxies, payload: int, out: int, compressed: bool, end: bool) -> None:
    """As HAProxy counts: payload in and out of the compressor (comp_in/comp_out), or
    passed through identity (comp_byp); a response when it ends (comp_rsp)."""
    for px in proxies:
        c = _COUNTERS.get(px)
        if c is None:
            c = _COUNTERS[px] = [0, 0, 0, 0]
        if compressed:
            c[0] += payload
            c[1] += out
        else:
            c[2] += payload
        if end:
            c[3] += 1


async def relay_body(c, conn, resp, stream, choice: Choice, t_server, proxies=(),
                     tap=None) -> bool:
    """The response body, server -> client, compressed and chunked; True when the server
    connection may be reused. Counted as HAProxy does: the uncompressed payload (bytes
    out), and in the compression counters of `proxies` (the frontend, the backend).
    `tap(piece)` sees each uncompressed piece (the cache stores it)."""
    enc = choice.encoder()
    srv = conn.server
    # (HAProxy's compression counters take a chunked body's end-of-trailers block, 1 byte)
    eot = 1 if resp.framing == http1.CHUNKED else 0

    def send(payload: bytes, last: bytes = b"") -> None:
        if tap is not None:
            tap(payload)
        if enc is not None:
            out = enc.compress(payload) + enc.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH)
            _RATE_IN.update(len(payload))
            _RATE_OUT.update(len(out))
        else:
            out = payload
        data = (b"%x\r\n%s\r\n" % (len(out), out) if out else b"") + last
        if data:
            c.write(data)
        if last:
            _count(proxies, len(payload) + eot, len(out), enc is not None, True)
        else:
            _count(proxies, len(payload), len(out), enc is not None, False)
        stream.bytes_out += len(data)
        stream.adj_out += len(payload) - len(data)

    if resp.framing == http1.LENGTH:
        left = resp.length
        while left > 0:
            if conn.buf:
                take = min(left, len(conn.buf))
                piece = bytes(conn.buf[:take])
                del conn.buf[:take]
                conn.consumed()
                srv.wire_in += take
                left -= take
                send(piece, b"0\r\n\r\n" if left == 0 else b"")
                if c.paused:
                    await c.drain()
                continue
            if conn.closed:
                srv.srv_abrt += 1
                return False
            await conn.wait_data(t_server)
        return True
    scanner = http1.ChunkedScanner()
    while not scanner.done:
        if conn.buf:
            used = scanner.feed(conn.buf)
            del conn.buf[:used]
            conn.consumed()
            srv.wire_in += used
            piece = b"".join(scanner.payload)
            scanner.payload.clear()
            last = b""
            if scanner.done:
                last = b"0\r\n" + b"".join(t + b"\r\n" for t in scanner.trailers) + b"\r\n"
            if piece or last:
                send(piece, last)
            if c.paused:
                await c.drain()
            continue
        if conn.closed:
            srv.srv_abrt += 1
            return False
        await conn.wait_data(t_server)
    return True


def may_apply(status: int, body_len: int) -> bool:
    """What the fast path can tell from a response without parsing its headers: whether
    it may be compressed (then the general path decides)."""
    return status in _STATUSES and body_len > 0


# ------------------------------------------------------------------ HAProxy's helpers

def _first(headers, name: str):
    for h in headers:
        if h[0] == name:
            return h[1].strip(" \t")
    return None


def _old_mozilla(ua: str) -> bool:
    """Mozilla/4 user agents get no compression unless MSIE 6 SV1 or MSIE >= 7."""
    if not ua.startswith("Mozilla/4"):
        return False
    return (len(ua) < 31 or ua[25:30] != "MSIE " or ua[30] < "6"
            or (ua[30] == "6" and (len(ua) < 54 or ua[51:54] != "SV1")))


def _word_match(sample: str, word: str) -> bool:
    """HAProxy's word_match: `word` (case-insensitively) followed by nothing but blanks.
    (It lets any byte differ by 0x20; for the lower-case words here, letters and '-',
    whose partner is CR, that is ASCII case-insensitivity.)"""
    n = len(word)
    return sample[:n].lower() == word and not sample[n:].strip(" \t")


def _qvalue(value: str, pos: int) -> int:
    """The `q=` of an Accept-Encoding element after its token, in thousandths (1000
    without one), read as HAProxy's http_parse_qvalue."""
    n = len(value)
    while True:
        while pos < n and value[pos] in " \t":
            pos += 1
        if pos >= n or value[pos] != ";":
            return 1000
        pos += 1
        while pos < n and value[pos] in " \t":
            pos += 1
        if pos >= n:
            return 1000
        if value[pos:pos + 2] == "q=" or (pos + 1 == n and value[pos] == "q"):
            break
        while pos < n and value[pos] != ";":
            pos += 1
    s = value[pos + 2:]
    if not s[:1].isdigit() or not s[:1].isascii():
        return 1000
    q = int(s[0]) * 1000
    if s[1:2] == ".":
        for i, mult in ((2, 100), (3, 10), (4, 1)):
            d = s[i:i + 1]
            if not (d.isdigit() and d.isascii()):
                break
            q += int(d) * mult
    return min(q, 1000)


def _valid_etag(etag: str) -> bool:
    """HAProxy's http_get_etag_type is not ETAG_INVALID: "..." or W/"..."."""
    if len(etag) < 2 or etag[-1] != '"':
        return False
    return etag[0] == '"' or etag.startswith('W/"')


GLOBAL_KEYWORDS = ("maxcomprate", "maxcompcpuusage", "tune.comp.maxlevel")


def kw_compression(parser, p, line) -> None:
    """The `compression` keyword of a proxy section (config.PROXY_KEYWORDS)."""
    p.compression = parse_line(p.compression, line, p.kind, parser.warn)


def kw_filter(parser, p, line) -> None:
    """`filter compression`: the filter `compression` lines declare anyway (an explicit
    one only matters beside other filters, which edgestick does not have)."""
    w = line.words
    if p.kind == "defaults":
        raise line.error("filter is not allowed in a 'default' section.")
    if len(w) < 2:
        raise line.error(f"missing argument for 'filter' in {p.kind} '{p.name}'.")
    if w[1] != "compression":
        raise line.error(f"filter '{w[1]}' is not supported by edgestick")
    if len(w) > 2:
        raise line.error(f"unknown keyword '{w[2]}'.", "filter compression")
    comp = p.compression or Compression()
    if comp.filter:
        raise line.error(f"'{p.name}: Proxy supports only one compression filter")
    p.compression = replace(comp, filter=True)
