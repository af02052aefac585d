"""Frontends at run time: the accept loop and the per-connection / per-request flow.

Order of events follows HAProxy 2.6 (reference §3, §4, §8):
  accept → tcp-request connection rules (reject, session-level track-sc) →
  tcp-request session rules → session accepted (sess_cnt) → for each request: head parsed
  (400 + close on malformed input, 408 on `timeout http-request`) → stream starts with
  a copy of the session's trackers → tcp-request content rules → http_req +1 on every
  tracker → http-request rules in order (track-sc adds its own http_req +1; deny /
  tarpit count http_err) → backend choice → backend rules, cookie and stick
  persistence, load balancing, connect with retries/redispatch → response: http_err for
  4xx, http_fail for 5xx other than 501/505, stick store commit, Set-Cookie →
  stream ends: bytes counted, stream trackers released (conn_cur -1).

Two ways through that flow, same decisions: the connection's coroutine (serve), and the
data callbacks (Frontend.fast), which serve body-less requests that the frontend's rules
answer, or that go on an idle server connection and get a complete plain response
(_Relay), without any coroutine wake-up. A connection without connection-level rules
gets its coroutine only when the callbacks hand something over (_LateStart): a partial
head, a body, a chunked/1xx/long response, a server that closes or is slow, EOF.
"""
from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import time
import weakref

from . import backend as be_mod
from . import server_health
from . import vars as var_mod
from . import acl as acl_mod
from . import compression, http1
from . import auth, stats_page
from . import abortonclose, request_body, stream_actions
from . import log as log_mod
from . import cache as cache_mod
from .log import log_format      # (rules' values; config and vars import it from here)
from .backend import Backend, ServerState
from .config import REWRITE_ACTIONS
from .sample import Context, compile_expr
from .stats import PerSecond
from edgestick.freq_ctr import now_ms


class ClientConn(be_mod.Endpoint):
    """The client side of one connection."""
    __slots__ = ("fe", "task", "src", "src_port", "dst", "dst_port", "ssl", "received_any",
                 "busy", "expect_proxy", "fast", "sess_sc", "pending", "inflight", "served",
                 "sess_vars", "log_t")  # (sess_vars: set on first use, see vars.py;
                                          # log_t: its stream clock, see log.py)

    def __init__(self, fe: "Frontend", ssl: bool = False, expect_proxy: bool = False, loop=None):
        super().__init__()
        self.loop = loop         # the listener's (asyncio.get_running_loop() costs a getpid)
        self.fe = fe
        self.ssl = ssl
        self.expect_proxy = expect_proxy     # `accept-proxy`: a PROXY header comes first
        self.fast = None         # Frontend.fast while the coroutine waits between requests
        self.sess_sc = None
        self.pending = None      # a request the fast path passed on to the coroutine
        self.inflight = False    # a request the fast path forwards is at a server
        self.served = False      # the fast path answered a request (the next is not the first)
        self.task = None
        self.received_any = False
        self.busy = False
        self.log_t = None

    def connection_made(self, transport):
        self.transport = transport
        if self.loop is None:
            self.loop = asyncio.get_running_loop()
        peer = transport.get_extra_info("peername") or ("", 0)
        local = transport.get_extra_info("sockname") or ("", 0)
        # IPv6 addresses (4-tuples) may be IPv4-mapped ones
        self.src = _plain_addr(peer[0]) if len(peer) > 2 else peer[0]
        self.dst = _plain_addr(local[0]) if len(local) > 2 else local[0]
        self.src_port, self.dst_port = peer[1], local[1]
        self.fe.admit(self)

    def data_received(self, data):
        self.received_any = True
        if self.inflight:
            # the fast path owns the connection until its response is written: bytes wait
            buf = self.buf
            buf += data
            if len(buf) > be_mod.READ_HIGH_WATER and not self.reading_paused:
                self.reading_paused = True
                self.transport.pause_reading()
            return
        fast = self.fast
        if fast is not None and self.waiter is not None and len(self.buf) < 65536:
            self.buf += data
            try:
                if fast(self):
                    return
            except Exception as e:      # as in Frontend.serve: only this connection ends
                self.fe.internal_error(self.src, e)
                self.close()
            self._wake()
            return
        super().data_received(data)

    def eof_received(self):
        self.eof = True
        if not self.inflight:           # else the fast path's completion wakes it
            self._wake()
        return True

    def connection_lost(self, exc):
        self.closed = self.eof = True
        if not self.inflight:           # else the fast path's completion wakes it
            w = self.waiter             # (Endpoint.connection_lost, spelt out)
            if w is not None:
                self.waiter = None
                if not w.done():
                    w.set_result(None)
        d = self.drain_waiter
        if d is not None and not d.done():
            d.set_result(None)
        self.fe.connection_gone(self)

    def write(self, data: bytes):
        if not self.closed:
            self.transport.write(data)

    def close(self):
        if not self.closed and self.transport is not None:
            self.transport.close()

    def reset(self):
        if self.transport is not None:
            be_mod.abort_with_reset(self.transport)

    def silent_drop(self):
        if self.transport is not None:
            be_mod.silent_drop(self.transport)


def _listen_socket(bind, port: int) -> socket.socket:
    """A listening socket as HAProxy makes it: `*` / empty = every IPv4 address, `::` =
    IPv6 and IPv4-mapped unless `v6only`; SO_REUSEPORT so a reload can open the new
    listeners before the old ones close."""
    v6 = bind.family == "ipv6"
    host = bind.host or ("::" if v6 else "0.0.0.0")
    sock = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if v6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1 if bind.v6only else 0)
        sock.bind((host, port))
        sock.listen(bind.backlog or 1024)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


_PP2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def parse_proxy_header(buf: bytearray):
    """PROXY protocol header at the start of buf: None = incomplete; (-1, None) =
    invalid; (length, None) = LOCAL/UNKNOWN (keep the real addresses); (length,
    (src, src_port, dst, dst_port))."""
    if buf[:6] == b"PROXY ":
        end = buf.find(b"\r\n", 0, 108)
        if end < 0:
            return None if len(buf) < 108 else (-1, None)
        words = bytes(buf[:end]).decode("latin-1").split(" ")
        if len(words) >= 2 and words[1] == "UNKNOWN":
            return end + 2, None
        if len(words) != 6 or words[1] not in ("TCP4", "TCP6"):
            return -1, None
        try:
            fam = socket.AF_INET if words[1] == "TCP4" else socket.AF_INET6
            socket.inet_pton(fam, words[2])
            socket.inet_pton(fam, words[3])
            sport, dport = int(words[4]), int(words[5])
        except (OSError, ValueError):
            return -1, None
        if not (0 <= sport < 65536 and 0 <= dport < 65536):
            return -1, None
        return end + 2, (words[2], sport, words[3], dport)
    if len(buf) < 16:
        return None if _PP2_SIG.startswith(bytes(buf[:12])) or b"PROXY ".startswith(bytes(buf[:6])) else (-1, None)
    if buf[:12] != _PP2_SIG:
        return -1, None
    ver_cmd, fam, length = buf[12], buf[13], int.from_bytes(buf[14:16], "big")
    if ver_cmd >> 4 != 2:
        return -1, None
    if len(buf) < 16 + length:
        return None
    total = 16 + length
    if ver_cmd & 0xF == 0:                      # LOCAL: health check of the sender
        return total, None
    body = bytes(buf[16:total])
    if fam == 0x11 and length >= 12:            # TCP over IPv4
        return total, (socket.inet_ntop(socket.AF_INET, body[0:4]),
                       int.from_bytes(body[8:10], "big"),
                       socket.inet_ntop(socket.AF_INET, body[4:8]),
                       int.from_bytes(body[10:12], "big"))
    if fam == 0x21 and length >= 36:            # TCP over IPv6
        return total, (_plain_addr(socket.inet_ntop(socket.AF_INET6, body[0:16])),
                       int.from_bytes(body[32:34], "big"),
                       _plain_addr(socket.inet_ntop(socket.AF_INET6, body[16:32])),
                       int.from_bytes(body[34:36], "big"))
    return total, None                          # UNSPEC / other families


def _plain_addr(a: str) -> str:
    return a[7:] if a.startswith("::ffff:") and "." in a else a


def _authority_prefix(target: str) -> str:
    """`scheme://authority` of an absolute-form target (where its path starts), else ""."""
    if target[:1] != "/":
        i = target.find("://")
        if i > 0:
            j = target.find("/", i + 3)
            return target[:j] if j >= 0 else target
    return ""


def _split_target(target: str) -> tuple[str, str | None]:
    """path and query of a request target (origin or absolute form)."""
    prefix = _authority_prefix(target)
    if prefix:
        target = target[len(prefix):] or "/"
    q = target.find("?")
    if q < 0:
        return target, None
    return target[:q], target[q + 1:]


_BACKREF = re.compile(r"\\(\d)")


def _expand(fmt: str, m: re.Match) -> str:
    """HAProxy's regex replacement: the format with \\0-\\9 replaced by the match's
    groups; it replaces the whole subject, not just the part that matched."""
    return _BACKREF.sub(lambda b: m.group(int(b.group(1))) or "" if int(b.group(1)) <= m.re.groups
                        else "", fmt)


def _replaced_headers(headers, rule, value: str) -> list:
    """replace-header / replace-value (request or response): the headers named by the
    rule with each matching value (replace-value: each comma-separated one) replaced."""
    name, rx, whole = rule.header.lower(), rule.regex, rule.action == "replace-header"
    out = []
    for n, v in headers:
        if n == name:
            if whole:
                m = rx.search(v)
                if m is not None:
                    v = _expand(value, m)
            else:                       # a replaced element loses its blanks, others keep theirs
                parts = []
                for part in v.split(","):
                    m = rx.search(part.strip(" \t"))
                    parts.append(_expand(value, m) if m is not None else part)
                v = ",".join(parts)
        out.append([n, v])
    return out


def _rewrite(req, ctx, rule) -> None:
    """http-request set-path/-pathq/-query/-uri/-method, replace-path/-pathq/-uri/-header/
    -value, as HAProxy applies them (the format is read before the change; later rules see
    the new request)."""
    act = rule.action
    value = log_format(rule.fmt, ctx)
    req.origin = None                   # no longer the memo's head
    if act in ("replace-header", "replace-value"):
        req.headers = ctx.headers = _replaced_headers(req.headers, rule, value)
        return
    if act == "set-method":
        req.method = ctx.method = value
        return
    target = req.target
    prefix = _authority_prefix(target)
    rest = target[len(prefix):]
    path, sep, query = rest.partition("?")
    if act == "set-path":
        target = prefix + value + sep + query
    elif act == "set-query":
        target = prefix + path + "?" + value
    elif act == "set-pathq":
        target = prefix + value
    elif act == "set-uri":
        target = value
    else:
        subject = {"replace-path": path, "replace-pathq": rest, "replace-uri": target}[act]
        m = rule.regex.search(subject)
        if m is None:
            return
        new = _expand(value, m)
        target = (prefix + new + sep + query if act == "replace-path" else
                  prefix + new if act == "replace-pathq" else new)
    req.target = ctx.url = target
    ctx.path, ctx.query = _split_target(target)


def reply_bytes(reply, ctx, close: bool, is_return: bool = False,
                error_page=None) -> tuple[int, bytes, bool]:
    """Bytes of a deny/return/tarpit reply, and whether they end the connection: the
    error pages when no payload (`error_page(status)`: the proxies' errorfile, else the
    built-in page), except `return`, whose default is an empty body."""
    status = reply.status
    kind = reply.body_kind
    if kind == "default-errorfiles" or (kind is None and not is_return):
        page = error_page(status) if error_page is not None else None
        if page is not None:
            return status, page.response(close), page.closes
        if status in http1.ERROR_STATUSES:
            return status, http1.error_response(status, close), False
    if kind in ("errorfile", "errorfiles"):
        page = reply.body               # (errorfiles: the section's page for the status)
        if page is not None:
            return status, page.response(close), page.closes
        if status in http1.ERROR_STATUSES:
            return status, http1.error_response(status, close), False
    if kind in ("lf-string", "lf-file"):
        body = log_format(reply.body or "", ctx).encode("latin-1")
    elif kind in ("string", "file"):
        body = (reply.body or "").encode("latin-1")
    else:
        body = b""
    headers = [(n, log_format(v, ctx)) for n, v in reply.headers]
    closing = close or status in http1.CLOSING_STATUSES
    return status, http1.simple_response(status, headers, body, reply.content_type,
                                         "close" if closing else None), False


class Listener:
    """One listening socket; connections go to whichever frontend owns it now."""
    __slots__ = ("key", "fe", "server")

    def __init__(self, key, fe):
        self.key, self.fe, self.server = key, fe, None


class StatusCounters:
    """Per-proxy counters shown by `show stat` and /metrics. bin/bout count bytes as
    HAProxy does (heads in their HTX size, see Stream); h1_in/h1_out the bytes on the
    wire (its h1 multiplexer's counters)."""
    __slots__ = ("scur", "smax", "stot", "bin", "bout", "dreq", "dresp", "ereq", "dcon",
                 "dses", "hrsp", "req_tot", "intercepted", "conn_tot", "econ", "eresp",
                 "h1_in", "h1_out", "no_stream", "streams_done", "eint", "ssl_sess",
                 "ssl_reused", "rates", "on_tick")

    def __init__(self):
        self.scur = self.smax = self.stot = self.bin = self.bout = 0
        self.dreq = self.dresp = self.ereq = self.dcon = self.dses = 0
        self.hrsp = [0, 0, 0, 0, 0, 0]
        self.req_tot = self.intercepted = self.conn_tot = 0
        self.econ = self.eresp = 0
        self.h1_in = self.h1_out = 0
        self.no_stream = 0          # requests counted without a stream (nothing arrived)
        self.streams_done = 0
        self.eint = 0               # connections ended by an internal error
        self.ssl_sess = self.ssl_reused = 0
        self.rates = PerSecond(3)   # stot, conn_tot, req_tot
        self.on_tick = None

    def count_request(self):
        self.req_tot += 1

    def tick(self, now: int | None = None):
        """Once a second (from the process): the totals the rates are read from, and
        the same for the backends (on_tick)."""
        if now is None:
            now = now_ms()
        self.rates.tick((self.stot, self.conn_tot, self.req_tot), now)
        if self.on_tick is not None:
            self.on_tick(now)

    def rate(self, now: int) -> tuple[int, int, int]:
        """(session, connection, request) rates per second."""
        r = self.rates
        return (r.rate(0, self.stot, now), r.rate(1, self.conn_tot, now),
                r.rate(2, self.req_tot, now))

    def rate_max(self) -> tuple[int, int, int]:
        """The highest (session, connection, request) rates seen."""
        r = self.rates
        return r.max(0, self.stot), r.max(1, self.conn_tot), r.max(2, self.req_tot)


# hrsp counters (show stat, metrics) by status // 100 (a three-digit status): 1xx..5xx, other
_HRSP_SLOT = (5, 0, 1, 2, 3, 4, 5, 5, 5, 5)


class Stream:
    """Per-request state: the stream's trackers and what must be undone at its end."""
    __slots__ = ("sc", "own", "bytes_in", "bytes_out", "status", "adj_in", "adj_out", "be",
                 "srv", "log",
                 "body", "timeouts", "hints")     # (set only where used: request_body.py,
                                                  # stream_actions.py)

    def __init__(self, sess_sc, head_len: int, htx_len: int):
        self.sc = list(sess_sc)
        self.own: list = []           # (table, entry) started by this stream
        self.bytes_in = head_len      # on the wire (show stat h1_bytes_in/out)
        self.bytes_out = 0
        self.status = 0
        # what to add to the wire counts for the bytes HAProxy counts (show stat bin/bout,
        # bytes_in/out_cnt): heads in their HTX size instead of their own, no chunk
        # framing, no interim responses
        self.adj_in = htx_len - head_len
        self.adj_out = 0
        self.be = self.srv = None     # the backend and server it reached (their bin/bout)
        self.log = None               # log.Record when the frontend logs or captures


class Frontend:
    """A frontend (or the frontend half of a listen section)."""

    def __init__(self, proc, model, table=None):
        self.proc = proc
        self.model = model
        self.name = model.name
        self.iid = 0                    # HAProxy's proxy id (fe_id, show stat iid)
        # http-after-response rules here or in a backend (main.py sets it for those)
        self.after_rules = bool(model.http_after_response)
        self.table = table
        self.stats = StatusCounters()
        self.stats.on_tick = self._tick_backends
        self.listeners: list[Listener] = []
        self.conns: set[ClientConn] = set()
        self.waiting: list[ClientConn] = []
        t = model.timeouts
        self.t_client = _sec(t.get("client"))
        self.t_http_request = _sec(t.get("http-request")) or self.t_client
        self.t_keep_alive = _sec(t.get("http-keep-alive")) or self.t_http_request
        self.t_tarpit = _sec(t.get("tarpit")) or _sec(t.get("connect"))
        self.maxconn = model.maxconn or 0
        self.own_backend: Backend | None = None
        self._replies: dict = {}
        # per backend, worked out on first use: how its requests are written
        # (_head_options) and whether the data callback may forward them (_fast_forward)
        self._head_opts: dict = {}
        self._forward_plans: dict = {}
        self._comp_plans: dict = {}     # backends whose requests may be compressed: Plan
        # requests answered by the frontend's own rules may be served without waking the
        # connection's coroutine (Frontend.fast) unless a rule has to wait
        self.fast_ok = not model.tcp_request_content and model.stats is None and all(
            r.action not in ("tarpit", "use-service", "set-timeout") for r in model.http_request)
        self.forwardfor = model.options.forwardfor
        self.stream_timeouts = False    # main.py: a set-timeout rule in the configuration
        # new connections without connection-level rules start without a coroutine
        # a connection becomes a session (stot) once these rules and a PROXY header pass
        self.session_gate = bool(model.tcp_request_connection or model.tcp_request_session)
        # `cache` sections: hits are served by the coroutine, stores made by _exchange
        self.caching = model.caching
        if self.caching and any(r.action == "cache-use" for r in model.http_request):
            self.fast_ok = False
        self.late_start = (self.fast_ok and not model.tcp_request_connection
                           and not model.tcp_request_session)
        self.fast_cb = self.fast        # (one bound method for every connection)
        # log targets, captures, unique ids: None when the frontend has none of them
        self.logging = log_mod.FrontendLog.build(self, model, proc)
        if model.vars is not None:      # variables: contexts carry their scopes
            self._begin, self._ctx = var_mod.with_scopes(self._begin, self._ctx, model.vars,
                                                         model.mode == "tcp")

    # ---- listeners

    async def start(self, inherited: dict | None = None):
        """Open the listeners; `inherited` maps listener keys to listeners of the
        configuration being replaced: those are taken over as they are (their
        sockets never close, so a reload refuses or resets no connection)."""
        loop = asyncio.get_running_loop()
        for bind in self.model.binds:
            for port in (bind.ports if bind.family != "unix" else (None,)):
                key = (bind.family, bind.host, port, bind.ssl, tuple(bind.crt))
                old = inherited.pop(key, None) if inherited is not None else None
                if old is not None:
                    old.fe = self
                    self.listeners.append(old)
                    continue
                lst = Listener(key, self)
                ssl_ctx = bind.ssl_context
                factory = (lambda lst=lst, tls=bool(ssl_ctx), pp=bool(bind.accept_proxy):
                           ClientConn(lst.fe, tls, pp, loop))
                if bind.family == "unix":
                    lst.server = await loop.create_unix_server(factory, bind.host, ssl=ssl_ctx)
                else:
                    lst.server = await loop.create_server(
                        factory, sock=_listen_socket(bind, port), ssl=ssl_ctx,
                        backlog=bind.backlog or 1024)
                self.listeners.append(lst)

    def stop_listening(self):
        for lst in self.listeners:
            lst.server.close()
        self.listeners.clear()

    def internal_error(self, src, e: Exception):
        """A connection ends on an exception (show stat eint): logged, the rest goes on."""
        self.stats.eint += 1
        self.proc.log(f"{self.name}: connection from {src} aborted: {e!r}")

    def _tick_backends(self, now: int):
        for b in self.proc.backends.values():
            b.tick(now)          # (at most once a second however many frontends call)

    # ---- admission (maxconn)

    def admit(self, c: ClientConn):
        self.conns.add(c)
        if self.logging is not None:
            c.log_t = time.time()
        st = self.stats
        st.conn_tot += 1
        if c.ssl:
            st.ssl_sess += 1
            tls = c.transport.get_extra_info("ssl_object")
            if tls is not None and tls.session_reused:
                st.ssl_reused += 1
        proc = self.proc
        if (self.maxconn and st.scur >= self.maxconn) or (proc.maxconn and proc.cur_conns >= proc.maxconn):
            c.transport.pause_reading()
            self.waiting.append(c)
            return
        self._start(c)

    def _start(self, c: ClientConn):
        st = self.stats
        st.scur += 1
        if not (self.session_gate or c.expect_proxy):
            st.stot += 1                # else once the session is accepted (serve)
        if st.scur > st.smax:
            st.smax = st.scur
        self.proc.cur_conns += 1
        c.busy = True
        if self.late_start and not c.expect_proxy and not c.buf and not c.eof:
            # no connection-level rules: the coroutine starts only if the data callback
            # cannot serve the connection on its own (_LateStart)
            c.fast, c.sess_sc = self.fast_cb, [None, None, None]
            c.waiter = _LateStart(self, c)
            if self.t_http_request is not None:
                c.deadline = c.loop.time() + self.t_http_request
                be_mod.WAITING.add(c)
            return
        c.task = asyncio.get_running_loop().create_task(self.serve(c))

    def start_late(self, c: ClientConn):
        """The connection needs its coroutine (see _LateStart): it starts where the data
        callback left off, the current wait's deadline included."""
        be_mod.WAITING.discard(c)
        c.fast = None
        c.task = asyncio.get_running_loop().create_task(
            self.serve(c, c.sess_sc, not c.served, True))

    def end_early(self, c: ClientConn):
        """The data callback ended a connection that never needed its coroutine."""
        be_mod.WAITING.discard(c)
        c.waiter = c.fast = None
        c.close()

    def late_timeout(self, c: ClientConn):
        """`timeout http-request` / `http-keep-alive` of a connection without coroutine,
        handled as _read_head does."""
        c.fast = None
        partial = any(b not in (10, 13) for b in c.buf[:64])
        if not c.served or partial:
            self._bad_request(c, c.sess_sc, 408, partial)
        c.close()

    def connection_gone(self, c: ClientConn):
        self.conns.discard(c)
        if c.busy:
            c.busy = False
            self.stats.scur -= 1
            self.proc.cur_conns -= 1
            while self.waiting:
                w = self.waiting.pop(0)
                if not w.closed:
                    w.transport.resume_reading()
                    self._start(w)
                    break
        else:
            try:
                self.waiting.remove(c)
            except ValueError:
                pass

    # ---- per connection

    def _ctx(self, c: ClientConn, sc) -> Context:
        return Context(c.src, c.src_port, c.dst, c.dst_port, c.ssl, sc=sc, table=self.table,
                       tables=self.proc.tables, fe=self)

    async def serve(self, c: ClientConn, sess_sc=None, first: bool = True, late: bool = False):
        proc = self.proc
        if sess_sc is None:
            sess_sc = [None, None, None]
        try:
            model = self.model
            if late:                        # started by start_late: no connection rules
                keep = await self._one_request(c, sess_sc, first, True)
                first = False
                if not keep:
                    return
            elif model.tcp_request_connection:
                if not self._connection_rules(c, sess_sc):
                    return
            if c.expect_proxy and not await self._proxy_header(c):
                c.reset()                   # HAProxy aborts such connections
                return
            if self.session_gate and not self._session_rules(c, sess_sc):
                return
            if self.session_gate or c.expect_proxy:
                self.stats.stot += 1    # a session, as HAProxy counts them (stot)
            while not c.closed:
                keep = await self._one_request(c, sess_sc, first)
                first = False
                if not keep:
                    break
        except Exception as e:          # never let one connection take the loop down
            self.internal_error(c.src, e)
        finally:
            for t in sess_sc:
                if t is not None:
                    t[0].release(t[1])
            if not c.closed:
                c.close()

    async def _proxy_header(self, c: ClientConn) -> bool:
        """`accept-proxy`: read the PROXY protocol header (v1 text or v2 binary); the
        addresses it carries replace the connection's for everything after
        `tcp-request connection` rules. False: missing or malformed (HAProxy closes)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.t_client or 10.0)
        while True:
            got = parse_proxy_header(c.buf)
            if got is not None:
                used, addrs = got
                if used < 0:
                    return False
                del c.buf[:used]
                c.consumed()
                if addrs is not None:
                    c.src, c.src_port, c.dst, c.dst_port = addrs
                return True
            if c.eof:
                return False
            try:
                await c.wait_data(deadline - loop.time())
            except TimeoutError:
                return False

    def _connection_rules(self, c: ClientConn, sess_sc) -> bool:
        """tcp-request connection rules (on the real addresses); False: rejected."""
        return self._tcp_rules(c, sess_sc, self.model.tcp_request_connection, False)

    def _session_rules(self, c: ClientConn, sess_sc) -> bool:
        """tcp-request session rules; a session they accept counts for every
        session-level tracker (sess_cnt/sess_rate, after the rules, as HAProxy's
        session_count_new: the rules see the count before this session, and a rejected
        session does not count)."""
        if not self._tcp_rules(c, sess_sc, self.model.tcp_request_session, True):
            return False
        for t in sess_sc:
            if t is not None:
                t[0].count_session(t[1])
        return True

    def _tcp_rules(self, c: ClientConn, sess_sc, rules, session: bool) -> bool:
        """`tcp-request connection` (session=False) or `session` rules in order; False:
        rejected (dcon / dses)."""
        ctx = self._ctx(c, sess_sc)
        for rule in rules:
            if rule.cond is not None and not rule.cond(ctx):
                continue
            act = rule.action
            if act == "accept":
                break
            if act == "reject":
                if session:
                    self.stats.dses += 1
                else:
                    self.stats.dcon += 1
                c.reset()
                return False
            if act == "track-sc":
                self._track(rule, ctx, sess_sc, None)
            elif self._counter_action(rule, ctx, c):         # silent-drop
                self.stats.dreq += 1    # (a denied request wherever it runs, as HAProxy)
                return False
        return True

    def _track(self, rule, ctx, slots, stream, http_req: bool = False) -> bool:
        """track-scN: a no-op when the slot is taken; starts tracking otherwise
        (conn_cnt/conn_rate/conn_cur +1, and http_req +1 for http-request rules)."""
        tr = rule.track
        if slots[tr.slot] is not None:
            return False
        key = tr.expr(ctx)
        if key is None:
            return False
        table = self.proc.tables.get(tr.table) if tr.table else ctx.table
        if table is None:
            return False
        entry = table.track(key, http_req, ctx.now)
        if entry is None:
            return False
        slots[tr.slot] = (table, entry)
        if stream is not None:
            stream.own.append((table, entry))
        return True

    def _counter_action(self, rule, ctx, c: ClientConn | None = None) -> bool:
        """The actions every rule set shares: sc-inc-gpc0/1, sc-inc-gpc, sc-clr-gpc*,
        sc-set-gpt0, sc-set-gpt, set-var/-fmt, unset-var, set-src/-dst[-port],
        silent-drop (True: the connection is gone; the caller counts it and stops), and
        stream_actions.ACTIONS (True for wait-for-body: see _http_rules_sync)."""
        act = rule.action
        if not act.startswith("sc-"):
            if rule.var is not None:        # set-var, set-var-fmt, unset-var
                rule.var.run(ctx)
            elif act in _ADDRESS_ACTIONS and c is not None:
                _set_address(c, ctx, rule)
            elif act.startswith(("set-map(", "del-map(", "add-acl(", "del-acl(")):
                key = log_format(rule.args[0], ctx)
                if act[0] == "s":
                    rule.value.set_or_add(key, log_format(rule.args[1], ctx))
                elif act[0] == "a":
                    rule.value.add_pattern(key)
                else:
                    rule.value.delete_key(key)
            elif act == "silent-drop" and c is not None:
                c.silent_drop()
                return True
            elif act in _STREAM_ACTIONS:  # set-timeout, set-log-level, early-hint, wait-for-body
                return stream_actions.run(rule, ctx, c)
            return False
        t = ctx.sc[rule.slot if rule.slot is not None else 0]
        if t is None:
            return
        table, row = t
        legacy = act[-1] in "01"
        idx = rule.index if rule.index is not None else (1 if act.endswith("1") else 0)
        if act.startswith("sc-inc-gpc"):
            table.inc_gpc(row, idx, legacy)
        elif act.startswith("sc-clr-gpc"):
            table.clr_gpc(row, idx, legacy)
        elif act.startswith("sc-set-gpt"):
            v = rule.value
            if not isinstance(v, int):
                v = v(ctx)
            if v is not None:
                table.set_gpt(row, int(v), idx, legacy)

    # ---- per request

    async def _read_head(self, c: ClientConn, sess_sc, first: bool, resume: bool = False):
        """The next request head, or None when the connection must end. `resume`: the
        data callback waited so far (its deadline, c.deadline, still holds)."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        partial = False
        if c.pending is not None:
            got, c.pending = c.pending, None
            return got
        while True:
            if c.buf:
                try:
                    req = http1.parse_request(c.buf)
                except http1.BadMessage as e:
                    self._bad_request(c, sess_sc, e.status)
                    return None
                if req is not None:
                    if req.framing == http1.CHUNKED and len(c.buf) > req.head_len:
                        # HAProxy parses the chunk sizes already received with the head
                        try:
                            http1.ChunkedScanner().feed(c.buf[req.head_len:])
                        except http1.BadMessage:
                            self._bad_request(c, sess_sc, 400)
                            return None
                    return req
                partial = partial or any(b not in (10, 13) for b in c.buf[:64])
            if c.eof:
                # an empty first connection or a truncated head counts as a bad request
                # (frontend and session trackers); HAProxy answers it with a 400 too,
                # which a half-closed client still reads
                if partial or (first and not c.received_any
                               and not self.model.options.http_ignore_probes):
                    self._bad_request(c, sess_sc, 400, partial)
                return None
            timeout = self.t_http_request if (first or partial) else self.t_keep_alive
            if resume and timeout is not None:
                remaining = c.deadline - loop.time()
                resume = False
            else:
                remaining = None if timeout is None else timeout - (loop.time() - start)
            parked = not (first or partial or c.buf) and self.fast_ok
            if parked:
                c.fast, c.sess_sc = self.fast_cb, sess_sc
            try:
                await c.wait_data(remaining)
            except TimeoutError:
                if first or partial:
                    self._bad_request(c, sess_sc, 408, partial)
                return None
            finally:
                if parked:
                    c.fast = None
            if c.pending is not None:
                got, c.pending = c.pending, None
                return got
            if parked:                  # requests served meanwhile: a new wait starts
                start = loop.time()

    def _count_probe(self, sess_sc):
        for t in sess_sc:
            if t is not None:
                t[0].inc_http_req(t[1])
                t[0].inc_http_err(t[1])

    def _bad_request(self, c: ClientConn, sess_sc, status: int, streamed: bool = True):
        """A request the multiplexer refuses (400, 408): counted, answered. `streamed`:
        some of it arrived (HAProxy's h1 stream exists then, not for a silent client)."""
        st = self.stats
        st.ereq += 1
        st.count_request()
        if streamed:
            st.streams_done += 1
        else:
            st.no_stream += 1
        st.hrsp[3] += 1
        self._count_probe(sess_sc)
        data = http1.mux_error_response(status)
        if not c.closed:
            c.write(data)
            st.h1_out += len(data)      # from the multiplexer: no stream, no bout
        st.h1_in += len(c.buf)          # what it received of the refused request
        c.buf.clear()
        if self.logging is not None:
            self.logging.bad_request(c, status, streamed, status == 408)

    async def _one_request(self, c: ClientConn, sess_sc, first: bool, resume: bool = False) -> bool:
        got = await self._read_head(c, sess_sc, first, resume)
        if got is None or got is False:     # False: the fast path ended the connection
            return False
        if type(got) is tuple:          # the fast path ran the frontend rules already
            req, ctx, stream, backend = got
            try:
                return await self._to_backend(c, req, ctx, stream, backend)
            finally:
                self._end(stream)
        req = got
        ctx, stream = self._begin(c, req, sess_sc)
        try:
            return await self._process(c, req, ctx, stream)
        finally:
            self._end(stream)

    def _begin(self, c: ClientConn, req: http1.Message, sess_sc):
        """A stream starts: the head leaves the buffer, trackers are copied."""
        head_len = req.head_len
        del c.buf[:head_len]
        if c.reading_paused:
            c.consumed()
        proc = self.proc
        self.stats.req_tot += 1
        htx = _REQ_HTX.get(req.origin)
        if htx is None:
            htx = _memo_htx(req, True, _REQ_HTX)
        stream = Stream(sess_sc, head_len, htx)
        target = req.target
        if target[:1] == "/" and "?" not in target:     # (_split_target's common case)
            path, query = target, None
        else:
            path, query = _split_target(target)
        ctx = Context(c.src, c.src_port, c.dst, c.dst_port, c.ssl, req.method, path, query,
                      req.target, req.headers, stream.sc, self.table, proc.tables, None, self,
                      stream, req.version)
        # one clock read for the request's own rules (HAProxy's now_ms is per loop turn
        # too); whatever runs after a wait sets it back to None and reads the clock again
        ctx.now = now_ms()
        if self.logging is not None:
            self.logging.begin(c, req, ctx, stream)
        return ctx, stream

    def _end(self, stream: Stream, now: int | None = None):
        """A stream ends: bytes counted, its own trackers released (conn_cur -1). `now`:
        the request's clock read, when it ends without having waited."""
        wire_in, wire_out = stream.bytes_in, stream.bytes_out
        b_in = wire_in + stream.adj_in
        b_out = wire_out + stream.adj_out
        if self.proc.counts_bytes:
            for t in stream.sc:
                if t is not None and _counts_bytes(t[0]):
                    t[0].add_bytes_in(t[1], b_in)
                    t[0].add_bytes_out(t[1], b_out)
        for table, entry in stream.own:
            table.release(entry, now)
        st = self.stats
        st.bin += b_in
        st.bout += b_out
        st.h1_in += wire_in
        st.h1_out += wire_out
        st.streams_done += 1
        srv = stream.srv
        if srv is not None:           # a backend's bytes: its servers' and its own
            srv.bin += b_in
            srv.bout += b_out
        elif stream.be is not None:
            stream.be.bin_own += b_in
            stream.be.bout_own += b_out
        if stream.log is not None:
            self.logging.end(stream)

    def fast(self, c: ClientConn) -> bool:
        """Called from data_received while the connection's coroutine waits between
        keep-alive requests: requests answered by the frontend's own rules (deny,
        return, redirect) are served right here, without waking the coroutine. True when
        everything received was dealt with; False wakes the coroutine (for the rest, or
        with a request whose frontend rules passed, to take it to a backend)."""
        handled = False
        while c.buf and not c.closed:
            try:
                req = http1.parse_request(c.buf)
            except http1.BadMessage:
                return False
            if req is None or req.framing != http1.NO_BODY:
                return False
            ctx, stream = self._begin(c, req, c.sess_sc)
            try:
                model = self.model
                now = ctx.now
                for t in stream.sc:
                    if t is not None:
                        t[0].inc_http_req(t[1], now)
                if model.monitor_uri is not None and req.target == model.monitor_uri:
                    verdict = self._monitor(c, req, ctx, stream)
                else:
                    verdict = self._http_rules_sync(c, req, ctx, stream, model.http_request)
                    if verdict is None and model.redirects:
                        verdict = self._redirect_rules(c, req, ctx, stream, model)
                if verdict is None:
                    backend = self._choose_backend(ctx)
                    if backend is not None and self._fast_forward(c, req, ctx, stream, backend):
                        stream = None           # its completion ends it
                        return True
                    ctx.now = None              # the coroutine reads the clock afresh
                    c.pending = (req, ctx, stream, backend)
                    stream = None               # the coroutine ends it
                    return False
            finally:
                if stream is not None:
                    self._end(stream, ctx.now)
            handled = True
            c.served = True
            if not verdict:
                if c.task is None:
                    self.end_early(c)
                else:
                    c.close()
                return True
            c.deadline = c.loop.time() + (self.t_keep_alive or 0)
        return handled

    # ---- forwarding from the data callback (keep-alive requests, common shapes)

    def _fast_forward(self, c: ClientConn, req, ctx, stream, backend) -> bool:
        """Send a body-less request on an idle server connection straight from the data
        callback; the response is taken from the server's data callback too (see
        _Relay). False (nothing done) for anything this does not cover: the coroutine
        takes the request then, with the same backend."""
        plan = self._forward_plans.get(backend, _UNSET)       # False, or its `timeout server`
        if plan is _UNSET:
            bm = backend.model
            ok = not (bm.cookie is not None or bm.stick_rules or bm.http_response
                      or self.model.http_response or backend._limited or self.after_rules
                      or (self.logging is not None and self.logging.reads_response)
                      or any(s.private for s in backend.servers)
                      or (bm is not self.model and (bm.http_request or bm.redirects
                                                    or bm.stats is not None)))
            plan = self._forward_plans[backend] = _sec(bm.timeouts.get("server")) if ok else False
            if bm.compression is not None or self.model.compression is not None:
                self._comp_plans[backend] = compression.Plan(self.model.compression,
                                                             bm.compression)
        if plan is False or req.upgrade:
            return False
        active = backend._active
        if not active:
            return False
        for s in active:                # whichever server the balancing picks has one
            idle = s.idle
            if not idle or idle[-1].closed or idle[-1].buf:
                return False
        backend.req_tot += 1
        backend.stot += 1
        srv = backend.pick(c.src, None, req)
        srv.cur += 1
        if backend.leastconn:
            backend.reposition(srv)
        conn = srv.take_idle()
        backend.cur += 1
        if backend.cur > backend.smax:
            backend.smax = backend.cur
        srv.stot += 1
        srv.lbtot += 1
        if srv.cur > srv.smax:
            srv.smax = srv.cur
        stream.srv = srv
        rec = stream.log
        if rec is not None:             # (an idle connection: no queue, no connect)
            rec.t_queue = rec.t_connect = time.time()
            self.logging.add_unique_id(rec, req)
        # compression: the algorithm (and `offload`) from the request as it leaves
        comp = None
        if self._comp_plans:
            cplan = self._comp_plans.get(backend)
            if cplan is not None:
                comp = cplan.select(req)
        head, server_close = self._request_head(c, req, backend)
        srv.wire_out += len(head)
        conn.transport.write(head)
        c.inflight = True
        c.deadline = float("inf")       # the keep-alive timeout starts after the response
        # the relay stands in the server connection's waiter slot
        if comp is None:
            conn.waiter = _Relay(self, c, req, ctx, stream, backend, srv, conn, head, server_close)
        else:
            conn.waiter = relay = _CompressingRelay(self, c, req, ctx, stream, backend, srv, conn,
                                                    head, server_close)
            relay.comp = comp
        if plan is not None:
            conn.deadline = conn.loop.time() + plan
            be_mod.WAITING.add(conn)
        return True

    def _relay_done(self, relay, keep: bool):
        """A fast-path forward ended: stream and slot released, the client connection
        goes on with the next request (or ends)."""
        c, backend, srv = relay.c, relay.backend, relay.srv
        backend.cur -= 1
        backend.release_slot(srv)
        self._end(relay.stream)
        c.inflight = False
        c.served = True
        if not keep or c.closed:
            if c.task is None:
                self.end_early(c)
                return
            c.pending = False            # the coroutine ends the connection
            c.close()
            c._wake()
            return
        if c.eof:
            c._wake()
            return
        c.deadline = c.loop.time() + (self.t_keep_alive or 0)
        if c.reading_paused:
            c.consumed()
        if c.buf:
            try:
                if c.fast is not None and c.waiter is not None and self.fast(c):
                    return
            except Exception as e:      # as in Frontend.serve: only this connection ends
                self.internal_error(c.src, e)
                c.close()
            c._wake()

    async def _relay_tail(self, relay, exc):
        """The rest of a fast-path forward in the coroutine's code (1xx, bodies still
        arriving, a closed or slow server...)."""
        keep = False
        try:
            keep = await self._exchange(relay.c, relay.req, relay.ctx, relay.stream,
                                        relay.backend, relay.srv, relay.conn, [], None, False,
                                        relay.head, exc, relay.comp)
        except Exception as e:
            self.internal_error(relay.c.src, e)
        finally:
            self._relay_done(relay, keep)

    async def _process(self, c: ClientConn, req: http1.Message, ctx: Context, stream: Stream) -> bool:
        proc = self.proc
        st = self.stats
        sc = stream.sc
        model = self.model
        # tcp-request content rules run once per request in HTTP mode
        for rule in model.tcp_request_content:
            if rule.cond is not None and not rule.cond(ctx):
                continue
            act = rule.action
            if act == "accept":
                break
            if act == "reject":
                st.dreq += 1
                c.reset()
                return False
            if act == "track-sc":
                self._track(rule, ctx, sc, stream)
            elif self._counter_action(rule, ctx, c):         # silent-drop
                st.dreq += 1
                return False
        now = ctx.now
        for t in sc:
            if t is not None:
                t[0].inc_http_req(t[1], now)
        if model.monitor_uri is not None and req.target == model.monitor_uri:
            return self._monitor(c, req, ctx, stream)
        verdict = await self._http_rules(c, req, ctx, stream, model.http_request, self.table)
        if verdict is None and model.stats is not None and model.stats.matches(req):
            return await stats_page.serve(self, c, req, ctx, stream, model.stats)
        if verdict is None and model.redirects:
            verdict = self._redirect_rules(c, req, ctx, stream, model)
        if verdict is not None:
            return verdict
        return await self._to_backend(c, req, ctx, stream, self._choose_backend(ctx))

    def _monitor(self, c, req, ctx, stream) -> bool:
        """`monitor-uri`: answered here before any http-request rule, 200, or 503 when a
        `monitor fail` condition holds (counted as intercepted, as HAProxy does)."""
        self.stats.intercepted += 1
        status = 200
        for cond in self.model.monitor_fail:
            if cond(ctx):
                status = 503
                break
        return self._local_error(c, req, stream, status, ctx)

    def _redirect_rules(self, c, req, ctx, stream, model):
        """`redirect` rules (after the http-request rules): the first that applies
        answers; None when none does."""
        for rule in model.redirects:
            if rule.cond is None or rule.cond(ctx):
                return self._redirect(c, req, ctx, stream, rule, model is self.model)
        return None

    def _choose_backend(self, ctx):
        """use_backend rules, else default_backend (None: no backend, a 503)."""
        backend = self.own_backend
        if backend is None:
            model = self.model
            backends = self.proc.backends
            for ub in model.use_backends:
                if ub.cond is None or ub.cond(ctx):
                    name = ub.backend
                    if "%[" not in name:
                        return backends.get(name)
                    found = backends.get(log_format(name, ctx))      # a dynamic name
                    if found is not None:
                        return found
                    break           # unknown: HAProxy takes the default backend
            if model.default_backend:
                backend = backends.get(model.default_backend)
        return backend

    async def _to_backend(self, c, req, ctx, stream, backend) -> bool:
        model = self.model
        if backend is None:
            return self._local_error(c, req, stream, 503, ctx)
        bm = backend.model
        ctx.be = backend
        if bm is not model and (bm.http_request or bm.redirects or bm.stats is not None):
            ctx.table = backend.table
            verdict = await self._http_rules(c, req, ctx, stream, bm.http_request,
                                             backend.table, backend)
            if verdict is None and bm.stats is not None and bm.stats.matches(req):
                return await stats_page.serve(self, c, req, ctx, stream, bm.stats, backend)
            if verdict is None and bm.redirects:
                verdict = self._redirect_rules(c, req, ctx, stream, bm)
            if verdict is not None:
                return verdict
        return await self._forward(c, req, ctx, stream, backend)

    async def _http_rules(self, c, req, ctx, stream, rules, table, backend=None):
        """http-request rules in order; returns None to go on, or keep-alive verdict."""
        verdict = self._http_rules_sync(c, req, ctx, stream, rules, backend)
        if type(verdict) is not tuple:
            return verdict
        kind, rule = verdict
        if kind == "wait":
            return await request_body.rules_after(self, c, req, ctx, stream, rules, rule, table,
                                                  backend)
        if kind == "tarpit":
            if self.t_tarpit:
                await asyncio.sleep(self.t_tarpit)
                ctx.now = None
            if stream.log is not None:
                stream.log.term, stream.log.t_queue = "PT", time.time()
            return self._reply(c, req, ctx, stream, rule.reply, 500)
        if kind == "cache":             # a cache-use rule hit, the other rules passed
            return await cache_mod.serve(self, c, req, ctx, stream, backend)
        return await self._service(c, req, ctx, stream, rule.service)

    def _http_rules_sync(self, c, req, ctx, stream, rules, backend=None):
        """The rules up to a verdict: None (go on), a keep-alive bool (answered here), or
        ("tarpit" | "service" | "wait", rule) for the actions that must wait (wait: for
        the body, request_body.rules_after; never for a request without one)."""
        sc = stream.sc
        for rule in rules:
            if rule.cond is not None and not rule.cond(ctx):
                continue
            act = rule.action
            if act == "track-sc":
                self._track(rule, ctx, sc, stream, True)
            elif act == "deny":
                self.stats.dreq += 1
                if backend is not None:
                    backend.dreq += 1
                for t in sc:
                    if t is not None:
                        t[0].inc_http_err(t[1], ctx.now)
                return self._reply(c, req, ctx, stream, rule.reply, 403)
            elif act == "tarpit":
                self.stats.dreq += 1
                for t in sc:
                    if t is not None:
                        t[0].inc_http_err(t[1])
                return ("tarpit", rule)
            elif act == "return":
                if backend is None:     # (a backend's rules count on the backend, unshown)
                    self.stats.intercepted += 1
                return self._reply(c, req, ctx, stream, rule.reply, 200, True)
            elif act == "allow":
                break
            elif act == "reject":
                self.stats.dreq += 1
                c.reset()
                return False

            elif act == "use-service":
                if backend is None:
                    self.stats.intercepted += 1
                return ("service", rule)
            elif act in ("set-header", "add-header"):
                value = log_format(rule.fmt or "", ctx)
                name = rule.header.lower()
                if act == "set-header":
                    req.remove(name)
                req.add(name, value)
                ctx.headers = req.headers
            elif act == "del-header":
                req.remove(rule.header.lower())
                ctx.headers = req.headers
            elif act in REWRITE_ACTIONS:
                _rewrite(req, ctx, rule)
            elif act == "redirect":
                return self._redirect(c, req, ctx, stream, rule, backend is None)
            elif act == "auth":
                return self._unauthorized(c, req, ctx, stream, rule, backend)
            elif act == "cache-use":
                if cache_mod.use(rule, ctx, req, self, backend):
                    # (served once the rules after it are done, unless one answers)
                    rest = rules[rules.index(rule) + 1:]
                    verdict = self._http_rules_sync(c, req, ctx, stream, rest, backend)
                    return ("cache", rule) if verdict is None else verdict
            elif act == "capture":
                log_mod.run_capture(rule, ctx)
            elif self._counter_action(rule, ctx, c):         # silent-drop
                if act == "wait-for-body":
                    if req.framing != http1.NO_BODY:
                        return ("wait", rule)
                    continue
                self.stats.dreq += 1
                return False
        return None

    def _unauthorized(self, c, req, ctx, stream, rule, backend) -> bool:
        """`http-request auth`: HAProxy's 401 (realm: the rule's, else the proxy's name),
        an http_err on the trackers; the connection stays open (a request body wholly
        received is dropped; one still to come closes it, as in HAProxy)."""
        for t in stream.sc:
            if t is not None:
                t[0].inc_http_err(t[1], ctx.now)
        if backend is None:
            self.stats.intercepted += 1
        if req.framing != http1.NO_BODY:
            used = _buffered_body(c.buf, req)
            if used is not None:
                del c.buf[:used]
                c.consumed()
                stream.bytes_in += used
                req.framing = http1.NO_BODY
        closing = not req.keep_alive or self.proc.stopping or req.framing != http1.NO_BODY
        realm = rule.fmt or (backend.name if backend is not None else self.name)
        data, ends = auth.unauthorized(realm, closing, req.version < 11,
                                       self._error_page(401, backend))
        return self._finish_local(c, req, stream, 401, data, ends, ctx=ctx)

    def _finish_local(self, c, req, stream, status: int, data: bytes,
                      ends: bool = False, ctx=None) -> bool:
        """Account and send a response produced here; returns keep-alive. `ends`: the
        response ends with the connection (an errorfile without Content-Length)."""
        if self.after_rules and ctx is not None:
            data, status = self._after_local(req, ctx, stream, data, status)
        st = self.stats
        k = _HRSP_SLOT[status // 100]
        st.hrsp[k] += 1
        be = stream.be              # the backend it reached (only srv on the fast path)
        if be is None and stream.srv is not None:
            be = stream.srv.backend
        if be is not None:
            be.hrsp[k] += 1
        stream.status = status
        rec = stream.log
        if rec is not None and rec.term is None and be is None:
            rec.term = "LR"             # answered by the frontend (deny: _reply)
        adj = _LOCAL_HTX.get(data)     # (_local_htx's common case, inline)
        stream.adj_out += adj if adj is not None else _local_htx(data)
        if req.method == "HEAD":       # the head alone, as HAProxy sends it
            data = data[:data.find(b"\r\n\r\n") + 4]
        stream.bytes_out += len(data)
        c.write(data)
        closing = (ends or not req.keep_alive or status in http1.CLOSING_STATUSES
                   or self.proc.stopping)
        if req.framing != http1.NO_BODY:
            # the request body was not read: closing is the only safe way on
            closing = True
        return not closing

    def _reply(self, c, req, ctx, stream, reply, default_status: int, is_return=False) -> bool:
        if stream.log is not None and stream.log.term is None:
            stream.log.term = "LR" if is_return else "PR"
        body = req.framing != http1.NO_BODY
        closing = (not req.keep_alive or self.proc.stopping
                   or body and not request_body.whole(c.buf, req))
        http10 = req.version < 11
        # replies that do not depend on the request are built once (the deny path is
        # the one a flood takes)
        be = ctx.be                 # (whose error pages apply, with the frontend's)
        key = (id(reply), closing, http10, is_return, be)
        cached = self._replies.get(key)
        if cached is not None:
            status, data, ends = cached
        else:
            if reply is None:
                status, data, ends = self._error_bytes(default_status, closing, be)
            else:
                status, data, ends = reply_bytes(
                    reply, ctx, closing, is_return, lambda st: self._error_page(st, be))
            if http10 and not closing and b"\r\nconnection:" not in data[:data.find(b"\r\n\r\n") + 2]:
                data = data.replace(b"\r\n\r\n", b"\r\nconnection: keep-alive\r\n\r\n", 1)
            if reply is None or (reply.body_kind not in ("lf-string", "lf-file") and
                                 not any("%" in v for _, v in reply.headers)):
                self._replies[key] = (status, data, ends)
        if body and not closing:
            _drop_body(c, req, stream)
        return self._finish_local(c, req, stream, status, data, ends, ctx)

    def _error_page(self, status: int, be):
        """The configured page of an error (errorfile, errorloc): the backend's, else the
        frontend's (HAProxy's http_error_message); None for the built-in one."""
        if be is not None:
            page = be.model.errorfiles.get(status)
            if page is not None:
                return page
        return self.model.errorfiles.get(status)

    def _error_bytes(self, status: int, closing: bool, be) -> tuple[int, bytes, bool]:
        """(status, bytes, whether they end the connection) of an error answered here."""
        page = self._error_page(status, be)
        if page is None:
            return status, http1.error_response(status, closing), False
        return status, page.response(closing), page.closes

    def _local_error(self, c, req, stream, status: int, ctx=None) -> bool:
        closing = not req.keep_alive or self.proc.stopping or req.framing != http1.NO_BODY
        _, data, ends = self._error_bytes(status, closing, stream.be)
        return self._finish_local(c, req, stream, status, data, ends, ctx)

    def _redirect(self, c, req, ctx, stream, rule, counted: bool = True) -> bool:
        """http-request redirect location|prefix|scheme, bytes as HAProxy 2.6 writes them.
        `counted`: the frontend's own rule (HAProxy counts it intercepted where it is)."""
        r = rule.redirect
        code = r["code"]
        value = log_format(r["value"], ctx)
        kind = r["type"]
        if kind == "location":
            location = value
        else:
            path, query = ctx.path or "/", ctx.query
            if r["drop_query"]:
                query = None
            if r["append_slash"] and not path.endswith("/"):
                path += "/"
            rest = path + ("?" + query if query is not None else "")
            if kind == "prefix":
                location = rest if value == "/" else value + rest
            else:
                host = req.get("host")
                location = f"{value}://{host}{rest}" if host else f"{value}://{rest}"
        body = req.framing != http1.NO_BODY
        closing = (not req.keep_alive or self.proc.stopping
                   or body and not request_body.whole(c.buf, req))
        head = [f"HTTP/1.1 {code} {http1.reason_for(code).decode()}\r\n",
                "content-length: 0\r\n", f"location: {location}\r\n"]
        if code in (302, 303, 307):
            head.append("cache-control: no-cache\r\n")
        if r["set_cookie"]:
            head.append(f"set-cookie: {r['set_cookie']}; path=/;\r\n")
        if r["clear_cookie"]:
            head.append(f"set-cookie: {r['clear_cookie']}; path=/; Max-Age=0;\r\n")
        if closing:
            head.append("connection: close\r\n")
        elif req.version < 11:
            head.append("connection: keep-alive\r\n")
        head.append("\r\n")
        if counted:
            self.stats.intercepted += 1
        if body and not closing:
            _drop_body(c, req, stream)
        return self._finish_local(c, req, stream, code, "".join(head).encode("latin-1"),
                                  ctx=ctx)

    async def _service(self, c, req, ctx, stream, service) -> bool:
        if service == "prometheus-exporter" and self.proc.metrics is not None:
            body = self.proc.metrics.render(ctx.query).encode()
            closing = True          # promex answers with connection: close, chunked
            head = (b"HTTP/1.1 200 OK\r\ncache-control: no-cache\r\n"
                    b"content-type: text/plain; version=0.0.4\r\n"
                    b"transfer-encoding: chunked\r\nconnection: close\r\n\r\n")
            data = head + (b"%x\r\n%s\r\n" % (len(body), body) if body else b"") + b"0\r\n\r\n"
            self._finish_local(c, req, stream, 200, data, ctx=ctx)
            return not closing
        return self._local_error(c, req, stream, 503, ctx)

    # ---- towards the backend

    async def _forward(self, c, req, ctx, stream, backend: Backend) -> bool:
        proc = self.proc
        bm = backend.model
        backend.req_tot += 1
        backend.stot += 1
        stream.be = backend
        persist = bm.options.persist
        force = ignore = False
        if bm.persist_rules:            # force-persist / ignore-persist
            force, ignore = backend.persist_flags(ctx)
        srv: ServerState | None = None
        direct = False
        cookie = None
        if bm.cookie is not None:
            cookie = be_mod.cookie_request(backend, req, time.time())
            if ignore:
                cookie.server, cookie.ignored = None, True
            cs = cookie.server      # (a drained server keeps its persistent clients)
            if cs is not None and (cs.usable or cs.admin_drain and cs.op_up
                                   or persist and not cs.admin_maint or force):
                srv = cookie.server
                direct = True
        stores = []
        if bm.stick_rules:
            srv = backend.stick_request(ctx, proc.tables, srv, persist, stores, force)
        persisted = srv is not None
        reserved = False
        if srv is None:
            srv = backend.pick(c.src, None, req)
            if srv is None and backend.up:          # every server at its maxconn: queue
                srv = await self._wait_slot(c, stream, backend, None)
                if srv is abortonclose.ABORTED:
                    return False
                reserved = srv is not None
            if srv is None:
                return self._local_error(c, req, stream, 503, ctx)
        elif srv.maxconn and srv.cur >= srv.maxconn:
            srv = await self._wait_slot(c, stream, backend, srv)
            if srv is abortonclose.ABORTED:
                return False
            if srv is None:
                return self._local_error(c, req, stream, 503, ctx)
            reserved = True
        if not reserved:                            # the slot is taken at assignment
            srv.cur += 1
        backend.reposition(srv)
        _assign(stream, backend, srv, persisted)
        backend.cur += 1
        if backend.cur > backend.smax:
            backend.smax = backend.cur
        try:
            # connect, with retries and redispatch (an idle keep-alive connection first)
            conn = srv.take_idle(srv.conn_key(ctx, c) if srv.private else None)
            if conn is None:
                conn, other = await self._connect(backend, srv, persisted, c.src, req, ctx, c)
                if conn is abortonclose.ABORTED:
                    return abortonclose.dropped(c, stream, "CC")
                if other is not srv:                # redispatched: the slot moves too
                    srv.unsent += 1
                    backend.release_slot(srv)
                    srv = other
                    srv.cur += 1
                    backend.reposition(srv)
                    _assign(stream, backend, srv, False)
            if conn is None:
                srv.unsent += 1
                return self._local_error(c, req, stream, 503, ctx)
            if srv is not cookie_server(cookie):
                direct = False
            if stream.log is not None:
                stream.log.t_connect = time.time()
                self.logging.add_unique_id(stream.log, req)
            return await self._exchange(c, req, ctx, stream, backend, srv, conn, stores,
                                        cookie, direct)
        finally:
            backend.cur -= 1
            backend.release_slot(srv)

    async def _wait_slot(self, c, stream, backend, srv):
        """A slot on `srv` (any server for None) after waiting in the queue: a server,
        None after `timeout queue`, or abortonclose.ABORTED."""
        timeout = _sec(backend.model.timeouts.get("queue") or backend.model.timeouts.get("connect"))
        if abortonclose.applies(self, backend):
            return await abortonclose.wait_slot(self, c, stream, backend, srv, timeout)
        return await backend.wait_slot(srv, timeout)

    async def _connect(self, backend: Backend, srv: ServerState, persisted: bool, src,
                       req=None, ctx=None, client: ClientConn | None = None):
        """A connection to `srv` (or, redispatched, to another: returned with it), after
        the retries; `req`, `ctx`, `client`: what hashing, SNI and PROXY headers read."""
        bm = backend.model
        t_connect = _sec(bm.timeouts.get("connect"))
        retries = bm.retries
        attempt = 0
        while True:
            try:
                key = srv.conn_key(ctx, client) if srv.private else None
                return await srv.connect(t_connect, key), srv
            except (OSError, TimeoutError, asyncio.TimeoutError):
                pass
            if client is not None and client.eof and abortonclose.applies(self, backend):
                return abortonclose.ABORTED, srv    # (before any retry, as 2.6.12)
            if attempt >= retries:
                srv.econ += 1               # counted once, when HAProxy gives up
                backend.econ += 1
                return None, srv
            attempt += 1
            # option redispatch: on the last retry, or at once when the server is down
            # or was not chosen by persistence or a hash among several (HAProxy's st_cer)
            if bm.options.redispatch and (attempt == retries or not srv.usable or (
                    not persisted and len(backend._active) > 1
                    and backend.algo not in be_mod._HASHED)):
                other = backend.pick(src, srv, req)
                if other is not None and other is not srv:
                    srv.wredis += 1
                    backend.wredis += 1
                    srv = other
                    continue
            srv.wretr += 1
            backend.wretr += 1
            # HAProxy's turn-around before retrying the same server: one second, or
            # `timeout connect` when shorter
            await asyncio.sleep(min(1.0, t_connect or 1.0))
            if client is not None and self._client_left(client):
                return None, srv            # HAProxy aborts such a stream, uncounted
            srv.stot += 1                   # each attempt is a session of the server

    def _client_left(self, client) -> bool:
        """The client went away while a connection was retried (HTTP: the request is
        still sent, as HAProxy without `option abortonclose`)."""
        return False

    def _head_options(self, backend):
        """What requests to `backend` get: (X-Forwarded-For: header name or None, the
        `except` networks' matcher, `if-none`), (X-Original-To: name or None, its
        `except` matcher), whether the server connection closes after the exchange
        (httpclose / http-server-close). As HAProxy: the backend's header name when it
        has the option, an address in either proxy's `except` network gets no header."""
        opts = self._head_opts.get(backend)
        if opts is None:
            fo, bo = self.model.options, backend.model.options
            xff = xto = None
            if self.forwardfor or bo.forwardfor:
                xff = ((bo if bo.forwardfor else fo).forwardfor_header.lower(),
                       _except_matcher(fo.forwardfor_except, bo.forwardfor_except),
                       fo.forwardfor_if_none)
            if fo.originalto or bo.originalto:
                xto = ((bo if bo.originalto else fo).originalto_header.lower(),
                       _except_matcher(fo.originalto_except, bo.originalto_except))
            opts = self._head_opts[backend] = (xff, xto, bool(
                fo.httpclose or fo.http_server_close or bo.httpclose or bo.http_server_close))
        return opts

    def _request_head(self, c, req, backend) -> tuple[bytes, bool]:
        """The request head for the server, and whether the server connection closes
        after this exchange (httpclose / http-server-close)."""
        xff, xto, server_close = self._head_options(backend)
        extra = None
        if xff is not None:
            hdr, skip, if_none = xff
            if not (if_none and req.get(hdr) is not None) and not (skip and skip(c.src)):
                extra = [(hdr, c.src)]
        if xto is not None and not (xto[1] and xto[1](c.dst)):
            extra = (extra or []) + [(xto[0], c.dst)]
        return http1.serialize_request(req, extra, server_close), server_close

    async def _exchange(self, c, req, ctx, stream, backend, srv, conn, stores, cookie, direct,
                        sent: bytes | None = None, exc: BaseException | None = None,
                        comp=None) -> bool:
        """Request to the server, response to the client. `sent`: the fast path wrote
        this head (a body-less request) already, `comp` its compression choice; `exc`:
        what ended its wait."""
        proc = self.proc
        st = self.stats
        bm = backend.model
        ctx.now = None
        body_task = None
        body_state = [req.framing == http1.NO_BODY]
        if sent is not None:
            head = sent
            server_close = self._head_options(backend)[2]
        else:
            if bm.compression is not None or self.model.compression is not None:
                cplan = self._comp_plans.get(backend)
                if cplan is None:
                    cplan = self._comp_plans[backend] = compression.Plan(
                        self.model.compression, bm.compression)
                comp = cplan.select(req)
            head, server_close = self._request_head(c, req, backend)
            if req.framing == http1.LENGTH and len(c.buf) >= req.length:
                n = req.length               # the whole body is here: one write
                head += bytes(c.buf[:n])
                del c.buf[:n]
                c.consumed()
                stream.bytes_in += n
                body_state[0] = True
            srv.wire_out += len(head)
            conn.transport.write(head)
            if not body_state[0]:
                body_task = asyncio.get_running_loop().create_task(
                    self._send_body(c, req, conn, stream, body_state))
        t_server = _sec(bm.timeouts.get("server"))
        if self.stream_timeouts:        # (http-request set-timeout somewhere)
            t_server = stream_actions.stream_timeout(stream, "server", t_server)
        server_broken = False
        try:
            if exc is not None:
                raise exc
            resp = await self._read_response(c, conn, req, t_server, stream)
            if resp is None and conn.reused and not conn.buf and not (
                    server_health.CUT and conn in server_health.CUT):
                # the server closed this idle connection as the request left: an
                # idempotent request goes once more on a new connection; otherwise the
                # client connection closes without an answer (as HAProxy does), so the
                # client may decide
                conn.close()
                if body_task is not None or req.method not in _IDEMPOTENT:
                    c.close()
                    return False
                try:
                    conn = await srv.connect(_sec(bm.timeouts.get("connect")))
                except (OSError, TimeoutError, asyncio.TimeoutError):
                    srv.econ += 1
                    backend.econ += 1
                else:
                    srv.wire_out += len(head)
                    conn.transport.write(head)
                    resp = await self._read_response(c, conn, req, t_server, stream)
        except TimeoutError:
            resp, server_broken = 504, True
        except http1.BadMessage:
            resp, server_broken = 502, True
        if isinstance(resp, int) or resp is None:
            if body_task is not None:
                body_task.cancel()
            conn.close()
            status = 502 if resp is None else resp
            if c.closed:
                return False
            srv.eresp += 1
            backend.eresp += 1
            for t in stream.sc:
                if t is not None:
                    t[0].inc_http_fail(t[1])
            if server_health.CUT and server_health.was_cut(conn):
                # on-marked-down/-up cut it: the client connection stays (as HAProxy)
                return self._local_error(c, req, stream, status, ctx)
            srv.hrsp[_HRSP_SLOT[status // 100]] += 1  # the frontend and backend: below
            return self._local_error(c, req, stream, status, ctx) and False
        status = resp.status
        ctx.status = status
        if stream.log is not None:
            self.logging.response(stream.log, resp.headers)
        if comp is not None:        # decided on the server's head, before http-response rules
            if comp.applies(req, resp):
                ctx.comp = comp     # (res.comp, res.comp_algo)
            else:
                comp = None
        sc = stream.sc
        if 400 <= status < 500:
            for t in sc:
                if t is not None:
                    t[0].inc_http_err(t[1])
        elif status >= 500 and status not in (501, 505):
            for t in sc:
                if t is not None:
                    t[0].inc_http_fail(t[1])
        if bm.stick_rules:
            self._store_response(backend, ctx, resp, stores)
        storing = None
        for table, key in stores:
            row = table.get_or_create(key)
            if row is not None:
                table.set_server(row, srv.id, srv.key)
        if bm.http_response or self.model.http_response:
            if self._response_rules(resp, ctx, stream, backend):
                # denied: HAProxy's 502 instead; the server's body is not read
                if self.caching and cache_mod.pending(ctx) is not None:
                    cache_mod.pending(ctx).abandon()     # (now, not when collected)
                conn.close()
                if body_task is not None:
                    body_task.cancel()
                    return False
                closing = not req.keep_alive or proc.stopping or c.eof
                _, data, ends = self._error_bytes(502, closing, backend)
                closing = closing or ends
                stream.bytes_out += len(data)
                stream.status = 502
                c.write(data)
                return not closing
            if self.caching:
                storing = cache_mod.pending(ctx)
        if cookie is not None:         # after the http-response rules, as HAProxy
            be_mod.cookie_response(backend, cookie, srv, direct, req, resp, time.time())
        self._count_status(backend, srv, status)
        stream.status = status
        if status == 101 and req.upgrade:
            head = http1.serialize_response(resp, None)
            c.write(head)
            stream.bytes_out += len(head)
            stream.adj_out -= len(head)
            await self._tunnel(c, conn, stream, bm, t_server)
            return False
        closing = not req.keep_alive or proc.stopping or c.eof or self.model.options.httpclose
        chunk_out = False
        if resp.framing == http1.UNTIL_CLOSE:
            if req.version >= 11 and not closing:
                resp.add("transfer-encoding", "chunked")
                chunk_out = True
            else:
                closing = True
        if self.after_rules:
            self._response_rules(resp, ctx, stream, backend, "http_after_response")
        if comp is not None:
            comp.rewrite_head(resp)
        head = http1.serialize_response(resp, http1.connection_header(req, closing))
        stream.adj_out -= len(head)
        if storing is not None:        # (http-response cache-store took this response)
            c.write(head)
            stream.bytes_out += len(head)
            server_reusable = await cache_mod.relay_body(self, c, conn, resp, stream, storing,
                                                         comp, t_server)
        elif comp is not None:
            c.write(head)
            stream.bytes_out += len(head)
            server_reusable = await compression.relay_body(c, conn, resp, stream, comp, t_server,
                                                           (self, backend))
        elif resp.framing == http1.NO_BODY:
            c.write(head)
            stream.bytes_out += len(head)
            server_reusable = True
        elif resp.framing == http1.LENGTH and len(conn.buf) >= resp.length:
            n = resp.length              # the whole body is here: one write
            if len(conn.buf) == n:
                body = bytes(conn.buf)
                conn.buf.clear()
            else:
                body = bytes(conn.buf[:n])
                del conn.buf[:n]
            conn.consumed()
            srv.wire_in += n
            c.write(head + body)
            stream.bytes_out += len(head) + n
            server_reusable = True
        else:
            c.write(head)
            stream.bytes_out += len(head)
            server_reusable = await self._relay_body(c, conn, resp, stream, chunk_out, t_server)
        if body_task is not None:
            if not body_state[0]:
                try:
                    await asyncio.wait_for(body_task, _sec(bm.timeouts.get("client")) or 30)
                except Exception:
                    server_reusable = False
                    closing = True
            if not body_state[0]:
                closing = True
                server_reusable = False
        if server_reusable and resp.keep_alive and not server_broken and not server_close:
            srv.give_back(conn)
        else:
            conn.close()
        if c.paused:
            await c.drain()
        return not closing and not c.closed

    async def _tunnel(self, c, conn, stream, bm, t_server):
        """After `101 Switching Protocols`: bytes both ways until one side closes
        (`timeout tunnel`, else client/server timeouts, bound the silence)."""
        t = _sec(bm.timeouts.get("tunnel") or self.model.timeouts.get("tunnel"))
        if self.stream_timeouts:
            t = stream_actions.stream_timeout(stream, "tunnel", t)

        async def pump(src, dst, to_server: bool):
            timeout = t or (t_server if not to_server else self.t_client)
            while True:
                if src.buf:
                    data = bytes(src.buf)
                    src.buf.clear()
                    src.consumed()
                    dst.transport.write(data)
                    if to_server:
                        stream.bytes_in += len(data)
                        conn.server.wire_out += len(data)
                    else:
                        stream.bytes_out += len(data)
                        conn.server.wire_in += len(data)
                    if dst.paused:
                        await dst.drain()
                    continue
                if src.eof or dst.closed:
                    return
                await src.wait_data(timeout)

        up = asyncio.ensure_future(pump(c, conn, True))
        down = asyncio.ensure_future(pump(conn, c, False))
        try:
            await asyncio.wait((up, down), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (up, down):
                task.cancel()
            conn.close()
            c.close()

    def _count_status(self, backend, srv, status):
        k = _HRSP_SLOT[status // 100]
        self.stats.hrsp[k] += 1
        backend.hrsp[k] += 1
        srv.hrsp[k] += 1

    async def _read_response(self, c, conn, req, t_server, stream):
        """The final response head from the server; 1xx interim responses are relayed."""
        loop = asyncio.get_running_loop()
        while True:
            if conn.buf:
                resp = http1.parse_response(conn.buf, 0, req.method)
                if resp is not None:
                    raw = bytes(conn.buf[:resp.head_len])
                    del conn.buf[:resp.head_len]
                    conn.server.wire_in += resp.head_len
                    if 100 <= resp.status < 200 and resp.status != 101:
                        c.write(raw)
                        stream.bytes_out += len(raw)
                        stream.adj_out -= len(raw)
                        continue
                    stream.adj_out += http1.htx_size(resp, False)
                    return resp
            if conn.closed:
                return None
            await conn.wait_data(t_server)

    async def _send_body(self, c, req, conn, stream, state):
        """Request body client → server (Content-Length or chunked)."""
        t_client = self.t_client
        if req.framing == http1.LENGTH:
            left = req.length
            while left > 0:
                if c.buf:
                    take = min(left, len(c.buf))
                    conn.transport.write(bytes(c.buf[:take]))
                    del c.buf[:take]
                    c.consumed()
                    left -= take
                    stream.bytes_in += take
                    conn.server.wire_out += take
                    if conn.paused:
                        await conn.drain()
                    continue
                if c.eof:
                    conn.server.cli_abrt += 1   # the client left amid its body
                    return
                await c.wait_data(t_client)
        else:
            scanner = http1.ChunkedScanner()
            while not scanner.done:
                if c.buf:
                    try:
                        used = scanner.feed(c.buf)
                    except http1.BadMessage:
                        self.stats.ereq += 1
                        conn.close()
                        c.buf.clear()
                        return
                    payload = sum(map(len, scanner.payload))
                    data = scanner.take()
                    conn.server.wire_out += len(data)
                    conn.transport.write(data)
                    del c.buf[:used]
                    c.consumed()
                    stream.bytes_in += used
                    stream.adj_in -= used - payload
                    if conn.paused:
                        await conn.drain()
                    continue
                if c.eof:
                    conn.server.cli_abrt += 1
                    return
                await c.wait_data(t_client)
        state[0] = True

    async def _relay_body(self, c, conn, resp, stream, chunk_out, t_server) -> bool:
        """Response body server → client; True when the server connection may be reused."""
        framing = resp.framing
        if framing == http1.NO_BODY:
            return True
        if framing == http1.LENGTH:
            left = resp.length
            while left > 0:
                if conn.buf:
                    take = min(left, len(conn.buf))
                    if take == len(conn.buf):
                        data = bytes(conn.buf)
                        conn.buf.clear()
                    else:
                        data = bytes(conn.buf[:take])
                        del conn.buf[:take]
                    conn.consumed()
                    c.write(data)
                    left -= take
                    stream.bytes_out += take
                    conn.server.wire_in += take
                    if c.paused:
                        await c.drain()
                    continue
                if conn.closed:
                    conn.server.srv_abrt += 1
                    return False
                await conn.wait_data(t_server)
            return True
        if framing == http1.CHUNKED:
            scanner = http1.ChunkedScanner()
            while not scanner.done:
                if conn.buf:
                    used = scanner.feed(conn.buf)
                    del conn.buf[:used]
                    conn.consumed()
                    conn.server.wire_in += used
                    payload = sum(map(len, scanner.payload))
                    data = scanner.take()
                    c.write(data)
                    stream.bytes_out += len(data)
                    stream.adj_out -= len(data) - payload
                    if c.paused:
                        await c.drain()
                    continue
                if conn.closed:
                    conn.server.srv_abrt += 1
                    return False
                await conn.wait_data(t_server)
            return True
        # until close
        while True:
            if conn.buf:
                data = bytes(conn.buf)
                conn.buf.clear()
                conn.consumed()
                conn.server.wire_in += len(data)
                out = (b"%x\r\n%s\r\n" % (len(data), data)) if chunk_out else data
                c.write(out)
                stream.bytes_out += len(out)
                stream.adj_out -= len(out) - len(data)
                if c.paused:
                    await c.drain()
                continue
            if conn.closed:
                break
            await conn.wait_data(t_server)
        if chunk_out:
            c.write(b"0\r\n\r\n")
            stream.bytes_out += 5
            stream.adj_out -= 5
        return False

    def _store_response(self, backend, ctx, resp, stores: list) -> None:
        """`stick store-response` rules, their fetches and conditions on the response:
        (table, key) pairs join the request's stores (8 at most, one a table among the
        response's), all committed with the server that answered."""
        first = len(stores)
        ctx.response, ctx.res_headers = True, resp.headers
        try:
            for rule in backend.model.stick_rules:
                if rule.kind != "store-response":
                    continue
                if len(stores) >= 8:
                    break
                if rule.cond is not None and not rule.cond(ctx):
                    continue
                table = self.proc.tables.get(rule.table) if rule.table else backend.table
                if table is None or any(t is table for t, _ in stores[first:]):
                    continue
                key = rule.expr(ctx)
                if key is not None:
                    stores.append((table, key))
        finally:
            ctx.response = False

    def _response_rules(self, resp, ctx, stream, backend, kind: str = "http_response") -> bool:
        """http-response rules, or (`kind` "http_after_response") http-after-response ones
        on a response about to leave, from a server or made here: the backend's first,
        then the frontend's (an `allow` ends its own proxy's rules only). True = denied."""
        groups = [] if backend is None else [getattr(backend.model, kind)]
        if backend is None or backend.model is not self.model:
            groups.append(getattr(self.model, kind))
        response, ctx.response, ctx.res_headers = ctx.response, True, resp.headers
        if ctx.vars is not None:
            ctx.vars.to_response()
        try:
            for rules in groups:
                for rule in rules:
                    if rule.cond is not None and not rule.cond(ctx):
                        continue
                    act = rule.action
                    if act in _RESPONSE_EDITS:
                        _edit_response(resp, rule, ctx)
                    elif act == "deny":         # (http-response only)
                        self.stats.dresp += 1
                        backend.dresp += 1
                        if stream.srv is not None:
                            stream.srv.dresp += 1
                        self._count_status(backend, _NullServer, 502)
                        return True
                    elif act == "allow":
                        break
                    elif act == "capture":
                        log_mod.run_capture(rule, ctx)
                    elif act == "cache-store":
                        cache_mod.store_head(rule, ctx, resp)
                    elif act == "track-sc":     # (http-response only)
                        if self._track(rule, ctx, stream.sc, stream, True):
                            # tracking at response time counts this request and its
                            # response too (as HAProxy 2.6 does)
                            table, row = stream.sc[rule.track.slot]
                            status = resp.status
                            if 400 <= status < 500:
                                table.inc_http_err(row)
                            elif status >= 500 and status not in (501, 505):
                                table.inc_http_fail(row)
                    else:
                        self._counter_action(rule, ctx)
            return False
        finally:
            ctx.response = response

    def _after_local(self, req, ctx, stream, data: bytes, status: int) -> tuple[bytes, int]:
        """A response made here, through the http-after-response rules: its head parsed,
        edited, written again (the body as it was)."""
        end = data.find(b"\r\n\r\n") + 4
        resp = http1.parse_response(data[:end], 0, "GET")
        conn = resp.get("connection")
        ctx.status = resp.status
        self._response_rules(resp, ctx, stream, ctx.be, "http_after_response")
        return http1.serialize_response(resp, conn) + data[end:], resp.status

    async def close_idle(self):
        """Graceful stop: close connections that sit between requests."""
        for c in list(self.conns):
            if c.inflight:
                c.eof = True            # closes after the response in flight
            elif not c.buf and not c.closed:
                c.eof = True
                c._wake()


class _LateStart:
    """Stands in a new connection's waiter slot until its coroutine is needed: a wake-up
    (bytes the data callback left, EOF, close) starts it; the reaper's timeout is handled
    here."""
    __slots__ = ("fe", "c")

    def __init__(self, fe, c):
        self.fe, self.c = fe, c

    def done(self):
        return False

    def set_result(self, _):
        self.fe.start_late(self.c)

    def set_exception(self, exc):
        self.fe.late_timeout(self.c)


class _Relay:
    """A request the fast path forwarded: it stands in the server connection's waiter
    slot, so the server's data callback (or EOF, or the reaper's timeout) calls it."""
    __slots__ = ("fe", "c", "req", "ctx", "stream", "backend", "srv", "conn", "head",
                 "server_close")
    comp = None         # the compression.Choice of a _CompressingRelay

    def __init__(self, fe, c, req, ctx, stream, backend, srv, conn, head, server_close):
        self.fe, self.c, self.req, self.ctx, self.stream = fe, c, req, ctx, stream
        self.backend, self.srv, self.conn, self.head = backend, srv, conn, head
        self.server_close = server_close

    # the future protocol Endpoint and the reaper use
    def done(self):
        return False

    def set_result(self, _):
        try:
            if self.respond():
                return
        except Exception as e:
            self.fe.internal_error(self.c.src, e)
            be_mod.WAITING.discard(self.conn)
            self.conn.close()
            self.fe._relay_done(self, False)
            return
        self.conn.waiter = self         # incomplete head: wait on

    def set_exception(self, exc):
        be_mod.WAITING.discard(self.conn)
        asyncio.get_running_loop().create_task(self.fe._relay_tail(self, exc))

    def respond(self) -> bool:
        """The response, when it is complete and plain; False: wait for more bytes.
        Anything else goes on in the coroutine's code (_Frontend._exchange)."""
        conn, fe = self.conn, self.fe
        buf = conn.buf
        proc = fe.proc
        req = self.req
        # a head already in the form we would write goes out as it came (no parse)
        plain = http1.canonical_response(buf, req.method) if buf else None
        if plain is not None:
            status, head_len, length, lines = plain
            end = head_len + length
            resp = None
            server_keep = True
            # its HTX size (http1.htx_size) less its own, without parsing it
            adj = _CANONICAL_ADJ - 4 * lines
        else:
            resp = None
            if buf:
                try:
                    resp = http1.parse_response(buf, 0, req.method)
                except http1.BadMessage:
                    resp = -1
            if resp is None and not conn.closed:
                return False
            if (resp is None or resp == -1 or resp.status < 200 or resp.status == 101
                    or resp.framing not in (http1.NO_BODY, http1.LENGTH)):
                end = -1
            else:
                status, head_len = resp.status, resp.head_len
                end = head_len + resp.length if resp.framing == http1.LENGTH else head_len
                server_keep = resp.keep_alive
        be_mod.WAITING.discard(conn)
        if end < 0 or len(buf) < end or (self.comp is not None and
                                         compression.may_apply(status, end - head_len)):
            # (a response that may be compressed: the general path decides and does it)
            asyncio.get_running_loop().create_task(fe._relay_tail(self, None))
            return True
        c, stream, srv, backend = self.c, self.stream, self.srv, self.backend
        srv.wire_in += end
        self.ctx.status = status
        if 400 <= status < 500:
            for t in stream.sc:
                if t is not None:
                    t[0].inc_http_err(t[1])
        elif status >= 500 and status not in (501, 505):
            for t in stream.sc:
                if t is not None:
                    t[0].inc_http_fail(t[1])
        fe._count_status(backend, srv, status)
        stream.status = status
        if stream.log is not None:
            stream.log.t_resp = time.time()
        closing = not req.keep_alive or proc.stopping or c.eof or fe.model.options.httpclose
        conn_header = http1.connection_header(req, closing)
        if resp is None:
            if conn_header is None:
                data = bytes(buf[:end])
            else:
                extra = b"connection: %s\r\n\r\n" % conn_header.encode()
                data = b"".join((buf[:head_len - 2], extra, buf[head_len:end]))
                adj -= len(extra) - 2
        else:
            head = http1.serialize_response(resp, conn_header)
            adj = _memo_htx(resp, False, _RESP_HTX) - len(head)
            data = head + bytes(buf[head_len:end]) if end > head_len else head
        stream.adj_out = adj
        if len(buf) == end:
            buf.clear()
        else:
            del buf[:end]
        if conn.reading_paused:
            conn.consumed()
        if not c.closed:
            c.transport.write(data)
        stream.bytes_out += len(data)
        if server_keep and not self.server_close:
            srv.give_back(conn)
        else:
            conn.close()
        fe._relay_done(self, not closing and not c.closed)
        return True


class _CompressingRelay(_Relay):
    """A forwarded request whose response may be compressed (its `comp`): kept apart so
    that requests without compression build the relay as before."""
    __slots__ = ("comp",)


class _NullServerType:
    hrsp = [0, 0, 0, 0, 0, 0]


_NullServer = _NullServerType()


_BYTES_TYPES = ("bytes_in_cnt", "bytes_in_rate", "bytes_out_cnt", "bytes_out_rate")
_COUNTS_BYTES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _counts_bytes(table) -> bool:
    r = _COUNTS_BYTES.get(table)
    if r is None:
        r = _COUNTS_BYTES[table] = any(table.stores(n) for n in _BYTES_TYPES)
    return r


_UNSET = object()
_IDEMPOTENT = frozenset(("GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"))
_LOCAL_HTX: dict = {}
# a canonical response head (http1.canonical_response) in HTX loses its separators: 4
# bytes on the status line, 4 on each header line, the empty line's 2
_CANONICAL_ADJ = http1.HTX_OVERHEAD + 2
_REQ_HTX: dict = {}     # http1's memo's request templates -> their HTX size (Frontend._begin)


_RESP_HTX: dict = {}    # the same for response templates (_Relay)


def _memo_htx(msg, is_request: bool, memo: dict) -> int:
    """The HTX size of a head, kept in `memo` for the heads http1 memoises (origin): a
    head seen again is not measured again."""
    origin = msg.origin
    if origin is None:
        return http1.htx_size(msg, is_request)
    htx = memo.get(origin)
    if htx is None:
        if len(memo) >= 4096:
            memo.clear()
        htx = memo[origin] = http1.htx_size(origin, is_request)
    return htx


def _local_htx(data: bytes) -> int:
    """HTX size minus raw size of the head of a reply built here (few distinct)."""
    r = _LOCAL_HTX.get(data)
    if r is None:
        msg = http1.parse_response(data, 0, "GET")
        r = http1.htx_size(msg, False) - msg.head_len
        if len(_LOCAL_HTX) < 256:
            _LOCAL_HTX[data] = r
    return r


def _except_matcher(*nets):
    """`option forwardfor|originalto except NET` of the frontend and the backend: a test
    of an address against them, None without any."""
    nets = [n for n in nets if n]
    return acl_mod.build_matcher("ip", nets, False) if nets else None


_ADDRESS_ACTIONS = frozenset({"set-src", "set-src-port", "set-dst", "set-dst-port"})
_STREAM_ACTIONS = stream_actions.ACTIONS


def _set_address(c: ClientConn, ctx, rule) -> None:
    """set-src/-dst <expr> (an address: the port stays), set-src-port/-dst-port <expr>:
    the connection's addresses as the following rules, requests and logs see them; a
    value that is no address or port changes nothing."""
    v = rule.value(ctx)
    if v is None:
        return
    act = rule.action
    if act.endswith("-port"):
        try:
            port = int(v) & 0xFFFF      # (a 16-bit field: HAProxy keeps the low bits)
        except (TypeError, ValueError):
            return
        if act == "set-src-port":
            c.src_port = ctx.src_port = port
        else:
            c.dst_port = ctx.dst_port = port
        return
    try:
        addr = str(ipaddress.ip_address(str(v).strip()))
    except ValueError:
        return
    if act == "set-src":
        c.src = ctx.src = addr
    else:
        c.dst = ctx.dst = addr


_RESPONSE_EDITS = frozenset({"set-header", "add-header", "del-header", "replace-header",
                             "replace-value", "set-status"})


def _edit_response(resp, rule, ctx) -> None:
    """One header (or status) edit of an http-response / http-after-response rule."""
    act = rule.action
    if act in ("set-header", "add-header"):
        name = rule.header.lower()
        value = log_format(rule.fmt or "", ctx)
        if act == "set-header":
            resp.remove(name)
        resp.add(name, value)
    elif act == "del-header":
        resp.remove(rule.header.lower())
    elif act == "set-status":
        resp.origin = None
        resp.status = ctx.status = rule.status
        resp.reason = (log_format(rule.fmt, ctx) if rule.fmt is not None
                       else http1.status_reason(rule.status).decode("latin-1"))
    else:                                           # replace-header, replace-value
        resp.origin = None
        resp.headers = _replaced_headers(resp.headers, rule, log_format(rule.fmt, ctx))
    ctx.res_headers = resp.headers


def _assign(stream, backend, srv, persisted: bool):
    """The stream goes to `srv` (coroutine path): its session counters."""
    stream.srv = srv
    if stream.log is not None:
        stream.log.t_queue = time.time()
    srv.stot += 1
    if not persisted:
        srv.lbtot += 1
    if srv.cur > srv.smax:
        srv.smax = srv.cur


def cookie_server(cookie):
    return None if cookie is None else cookie.server


def _drop_body(c, req, stream) -> None:
    """A reply made here to a request whose body is all in the buffer (rules waited for
    it, or it came with the head): the body goes, the connection stays (as HAProxy)."""
    used = _buffered_body(c.buf, req)
    del c.buf[:used]
    c.consumed()
    stream.bytes_in += used
    req.framing = http1.NO_BODY


def _buffered_body(buf, req):
    """Length of the request's body when all of it is in `buf` already, else None."""
    if req.framing == http1.LENGTH:
        return req.length if len(buf) >= req.length else None
    if req.framing == http1.CHUNKED:
        scanner = http1.ChunkedScanner()
        try:
            used = scanner.feed(buf)
        except http1.BadMessage:
            return None
        return used if scanner.done else None
    return None


def _sec(ms):
    return None if ms is None else ms / 1000.0
