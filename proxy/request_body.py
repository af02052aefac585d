"""The request body in HTTP rules, as HAProxy 2.6 has it (http_ana.c's
http_wait_for_msg_body, http_fetch.c's req.body fetches).

`option http-buffer-request` (frontend or backend) and `http-request wait-for-body time T
[at-least N]` hold the rules until the body is there: all of it, N bytes of it, or as
much as HAProxy's request buffer holds. A client that sends `Expect: 100-continue` is
answered `100 Continue` first (the header then goes). A wait that runs out of time
answers 408 (HAProxy's stream 408, `cR` in the log); a client that closes its side
amid its body has the rules run and logged on what came, but hears nothing and its
request reaches no server (`CR`, rules_after).

The body stays where it arrived (the client connection's buffer, after the head): the
fetches read it there and the request leaves for the server as it came. The buffering
option is an implicit wait-for-body rule ahead of the proxy's own rules (finish), timed
by the proxy's `timeout http-request`; without a time, the client's `timeout client`
still ends a wait, as in HAProxy.

HAProxy keeps a request in one buffer (tune.bufsize 16384, tune.maxrewrite 1024 kept
free): a body larger than what the head leaves of it is seen in part, and a wait ends
once it is full. ROOM is that budget, probed on 2.6.12: the head's HTX size
(http1.htx_size) plus 8 bytes a header plus the body's bytes fill at most ROOM.
"""
from __future__ import annotations

import asyncio
import re
import time
from typing import Optional

from . import http1
from . import model as m
from .payload import BUFSIZE, MAXREWRITE
from .sample import FETCHES, FetchDef, SampleError
from .stream_actions import count_interim

ROOM = BUFSIZE - MAXREWRITE - 72      # 15288: e.g. 15210 body bytes behind a 2-header POST
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class Wait:
    """A wait-for-body rule's arguments: `time_ms` None waits as long as `timeout
    client` lets it; `at_least` 0 waits for the whole body."""
    __slots__ = ("time_ms", "at_least")

    def __init__(self, time_ms: Optional[int], at_least: int = 0):
        self.time_ms, self.at_least = time_ms, at_least


# ---------------------------------------------------------------------------- the view

class View:
    """What rules see of a request body: `data` (decoded, at most what HAProxy's buffer
    holds), `size` (the announced length: Content-Length, or for a chunked body what
    came plus the rest of the chunk under way), `complete`, `full` (the buffer is)."""
    __slots__ = ("data", "size", "complete", "full")

    def __init__(self, data: bytes, size: int, complete: bool, full: bool):
        self.data, self.size, self.complete, self.full = data, size, complete, full


_NONE = View(b"", 0, True, False)


def _room(req) -> int:
    keep_connection = req.upgrade
    headers = sum(1 for h in req.headers if h[0] != "connection" or keep_connection)
    return ROOM - http1.htx_size(req, True) - 8 * headers


def view(buf, req) -> View:
    """The body of `req` as its bytes in `buf` (which starts where the head ended)."""
    framing = req.framing
    if framing == http1.LENGTH:
        length = req.length
        avail = min(len(buf), length)
        room = _room(req)
        if avail >= room and length > room:
            return View(bytes(buf[:room]), length, False, True)
        return View(bytes(buf[:avail]), length, avail == length, False)
    if framing == http1.CHUNKED:
        chunks = Chunks(req, True)
        chunks.feed(buf)
        return View(b"".join(chunks.parts), chunks.size, chunks.complete, chunks.full)
    return _NONE


def whole(buf, req) -> bool:
    """The body is all in `buf` and within what HAProxy's buffer holds (a reply made here
    then drops it and keeps the connection; else the connection closes)."""
    if req.framing == http1.LENGTH:
        return len(buf) >= req.length and req.length <= _room(req)
    chunks = Chunks(req, False)
    chunks.feed(buf)
    return chunks.complete


_HEX = re.compile(rb"[0-9a-fA-F]+")


class Chunks:
    """A chunked body decoded as far as it arrived, resumable (feed again once more came:
    only what is new is parsed, so a wait over many small chunks stays linear). Whole
    chunks fit while the total stays within HAProxy's room; a chunk cut short (by the
    room or by its bytes still to come) costs HAProxy another 8 bytes (probed: 100-byte
    chunks stop at 15200, 1000-byte ones at 15197 with the same head). `parts`: the
    data, when `keep`."""
    __slots__ = ("room", "keep", "parts", "pos", "total", "got", "size", "complete", "full")

    def __init__(self, req, keep: bool):
        self.room = _room(req) + 1          # (htx_size counts the trailers' block)
        self.keep, self.parts = keep, []
        self.pos = self.total = 0           # whole chunks: where the next one starts, bytes
        self.got = self.size = 0            # with the chunk under way: bytes, announced
        self.complete = self.full = False

    def feed(self, buf) -> None:
        n, room, pos = len(buf), self.room, self.pos
        self.got = self.size = self.total
        while not self.complete:
            eol = buf.find(b"\n", pos)
            if eol < 0:
                break
            word = bytes(buf[pos:eol]).split(b";")[0].strip()
            if not _HEX.fullmatch(word):    # malformed: the forwarding reports it
                break
            size, start = int(word, 16), eol + 1
            if size == 0:
                rest = bytes(buf[start:start + 2])
                self.complete = (rest == b"\r\n" or rest[:1] == b"\n"
                                 or buf.find(b"\n\r\n", start) >= 0
                                 or buf.find(b"\n\n", start) >= 0)
                break
            avail = n - start
            end = start + size
            crlf = 2 if buf[end:end + 2] == b"\r\n" else 1 if buf[end:end + 1] == b"\n" else 0
            if avail >= size and self.total + size <= room and crlf:
                if self.keep:
                    self.parts.append(bytes(buf[start:end]))
                self.total += size
                pos = self.pos = end + crlf
                self.got = self.size = self.total
                continue
            take = min(avail, size, max(0, room - self.total - 8))
            if self.keep:
                self.parts.append(bytes(buf[start:start + take]))
            self.got, self.size = self.total + take, self.total + size
            self.full = avail > take
            break


def _source_view(ctx) -> Optional[View]:
    src = getattr(ctx.stream, "body", None)
    if src is None:
        return None
    c, req = src
    return view(c.buf, req)


# ---------------------------------------------------------------------------- fetches

FETCHES_COMPILED = [0]      # builds since the last configuration finished (see finish)


def _no_args(name: str, args) -> None:
    if args:
        raise SampleError(f"fetch method '{name}' : no argument supported, but got "
                          f"'{args[0]}'")


def _fetch(name: str, out: str, getter):
    def build(args, refs):
        _no_args(name, args)
        FETCHES_COMPILED[0] += 1

        def fetch(ctx):
            v = _source_view(ctx)
            return None if v is None else getter(v)
        return fetch
    FETCHES[name] = FetchDef(name, out, build, {"bin": "bin", "int": "int"}[out])


_fetch("req.body", "bin", lambda v: v.data)
_fetch("req.body_len", "int", lambda v: len(v.data))
_fetch("req.body_size", "int", lambda v: v.size)


def _params(data: bytes, name: Optional[str]):
    """Values of url-encoded parameters named `name` (any when None), in order: a
    parameter without '=' is no parameter (as HAProxy's http_find_next_url_param)."""
    for part in data.decode("latin-1").replace(";", "&").split("&"):
        k, eq, v = part.partition("=")
        if eq and (name is None or k == name):
            yield v


def _body_param_build(args, refs):
    if len(args) > 1:
        raise SampleError("fetch method 'req.body_param' : expects at most 1 argument(s)")
    FETCHES_COMPILED[0] += 1
    name = args[0] if args else None

    def fetch(ctx):
        v = _source_view(ctx)
        return None if v is None else next(_params(v.data, name), None)
    return fetch


def _body_param_multi(args, refs):
    _body_param_build(args, refs)           # (its checks)
    name = args[0] if args else None

    def fetch(ctx):
        v = _source_view(ctx)
        return [] if v is None else list(_params(v.data, name))
    return fetch


FETCHES["req.body_param"] = FetchDef("req.body_param", "str", _body_param_build, "str",
                                     _body_param_multi)


def attach(fe) -> None:
    """A frontend whose rules may read the body: its streams carry (connection, request)
    for the fetches (a wrapper on _begin, as vars.with_scopes; nothing otherwise)."""
    begin = fe._begin

    def _begin(c, req, sess_sc):
        ctx, stream = begin(c, req, sess_sc)
        stream.body = (c, req)
        return ctx, stream
    fe._begin = _begin


# ---------------------------------------------------------------------------- configuration

def parse_wait(p, line, args, what: str) -> tuple[Wait, list]:
    """`wait-for-body time <time> [at-least <bytes>]` (either order, repeated words: the
    last wins): the Wait and the words left (HAProxy's parse_http_wait_for_body)."""
    from .stick_table import parse_time_err
    err = f"error detected in {p.kind} '{p.name}' while parsing '{what}' rule : "
    if not args:
        raise line.error(err + "expects time <time> [ at-least <bytes> ].")
    time_ms, at_least, i = None, 0, 0
    while i < len(args):
        word = args[i]
        if word not in ("time", "at-least"):
            break
        if i + 1 >= len(args):
            raise line.error(err + f"missing argument for '{word}'.")
        value = args[i + 1]
        if word == "time":
            ms, bad, _ = parse_time_err(value)
            if bad == "over":
                raise line.error(err + "time overflow (maximum value is 2147483647 ms or "
                                 "~24.8 days).")
            if bad is not None:
                raise line.error(err + f"unexpected character '{bad}'.")
            time_ms = ms
        else:
            at_least = _parse_size(line, err, value)
        i += 2
    if time_ms is None:
        raise line.error(err + "expects time <time> [ at-least <bytes> ].")
    return Wait(time_ms or None, at_least), list(args[i:])


def _parse_size(line, err: str, text: str) -> int:
    """HAProxy's parse_size_err: digits, then an optional k/m/g (powers of 1024)."""
    i = 0
    while i < len(text) and text[i].isdigit():
        i += 1
    if i == 0:
        raise line.error(err + f"unexpected character '{text[:1] or chr(0)}'.")
    value = int(text[:i])
    if i < len(text):
        shift = {"k": 10, "m": 20, "g": 30}.get(text[i].lower())
        if shift is None or i + 1 < len(text):
            bad = text[i] if shift is None else text[i + 1]
            raise line.error(err + f"unexpected character '{bad}'.")
        value <<= shift
    return value & 0xFFFFFFFF


def finish(cfg, warnings: list) -> None:
    """`option http-buffer-request`: an implicit wait-for-body ahead of the proxy's
    http-request rules, timed by its `timeout http-request`; and whether any rule may
    read the body (cfg.request_body: main.py then gives frontends the source)."""
    for p in cfg.proxies:
        if p.options.other.get("http-buffer-request"):
            if p.mode != "http":
                kind = {"frontend": "frontend", "backend": "backend"}.get(p.kind, "proxy")
                warnings.append(f"{p.where}: 'option http-buffer-request' ignored for {kind} "
                                f"'{p.name}' as it requires HTTP mode.")
                continue
            rule = m.Rule("wait-for-body", where=p.where)
            rule.value = Wait(p.timeouts.get("http-request"))
            p.http_request.insert(0, rule)
    cfg.request_body = bool(FETCHES_COMPILED[0])
    FETCHES_COMPILED[0] = 0


# ---------------------------------------------------------------------------- the wait

async def wait(fe, c, req, ctx, stream, spec: Wait):
    """Hold the request until its body is there (see the module's docstring). None: the
    rules go on; a bool: answered here (408), the keep-alive verdict; ABORTED: the client
    closed its side first."""
    if req.framing == http1.NO_BODY or req.method == "CONNECT":
        return None
    if req.version >= 11:
        expect = req.get("expect")
        if expect is not None and expect.lower() == "100-continue":
            c.write(CONTINUE)
            count_interim(stream, CONTINUE)
            req.remove("expect")
            ctx.headers = req.headers
    loop = c.loop
    deadline = None if spec.time_ms is None else loop.time() + spec.time_ms / 1000.0
    t_client = fe.t_client
    aborted = None
    chunks = Chunks(req, False) if req.framing == http1.CHUNKED else None
    room = _room(req)
    while True:
        buf = c.buf
        if chunks is not None:
            chunks.feed(buf)
            got, done = chunks.got, chunks.complete or chunks.full
        else:
            got = min(len(buf), req.length, room)
            done = got == req.length or got == room
        if done or (spec.at_least and got >= spec.at_least):
            break
        if c.eof:                       # the client closed its side amid its body
            aborted = ABORTED
            break
        now = loop.time()
        if deadline is not None and now >= deadline:
            return _timeout(fe, c, req, ctx, stream)
        left = None if deadline is None else deadline - now
        if t_client is not None and (left is None or t_client < left):
            left = t_client
        try:
            await c.wait_data(left)
        except TimeoutError:
            if deadline is None or t_client is not None and loop.time() < deadline:
                return _timeout(fe, c, req, ctx, stream)    # `timeout client` first
    ctx.now = None
    rec = stream.log
    if rec is not None:
        rec.t_req_end = time.time()
    return aborted


ABORTED = object()  # wait()'s verdict when the client closed amid its body (see rules_after)


def _timeout(fe, c, req, ctx, stream) -> bool:
    """HAProxy's abort_req: 408 (the proxies' error page), a failed request, `cR`."""
    fe.stats.ereq += 1
    if stream.log is not None:
        stream.log.term = "cR"
    ctx.now = None
    if fe._error_page(408, ctx.be) is None:
        # HAProxy's own 408 page keeps its `Connection: close` in HTX (bytes_read counts it)
        stream.adj_out += len("connection") + len("close")
    return fe._local_error(c, req, stream, 408, ctx)


async def rules_after(fe, c, req, ctx, stream, rules, rule, table, backend):
    """A wait-for-body rule stopped the http-request rules: wait, then the rules after it.
    A client that closed amid its body (HAProxy's client abort) still has the rules run
    and logged, but hears nothing more, and its request reaches no server (`CR`)."""
    verdict = await wait(fe, c, req, ctx, stream, rule.value)
    if verdict is ABORTED:
        c.transport.close()
        c.closed = True                 # (what the rules answer is counted, not sent)
    elif verdict is not None:
        return verdict
    rest = rules[next(i for i, r in enumerate(rules) if r is rule) + 1:]
    result = await fe._http_rules(c, req, ctx, stream, rest, table, backend)
    if verdict is ABORTED and result is None:
        if backend is None:
            backend = fe._choose_backend(ctx)
        if backend is not None:         # (the log names it, its counts take the request)
            ctx.be = stream.be = backend
            backend.req_tot += 1
            backend.stot += 1
        fe.stats.ereq += 1
        if stream.log is not None:
            stream.log.term = "CR"
        return False
    return result
