"""`mode tcp` frontends and listen sections: HAProxy 2.6's TCP streams.

Order of events (HAProxy's stream analysers in TCP mode):
  accept → tcp-request connection rules → (PROXY header) → tcp-request session rules →
  session (stot, sess_cnt of the session trackers) → the stream starts with a copy of
  the session's trackers → the frontend's tcp-request content rules, which may wait for
  the client's first bytes up to `tcp-request inspect-delay` → use_backend /
  default_backend → the backend's own tcp-request content rules → stick match/on →
  load balancing (queue at maxconn) → connect, with retries and redispatch → stick
  store → bytes relayed both ways, a half-close passed on to the other side →
  the stream ends when both directions are shut (a FIN or a read timeout each) or on a
  reset: bytes counted (show stat, bytes_in/out of the trackers), the stream's
  trackers released.

Reused from the HTTP engine (proxy/frontend.py): listeners, maxconn admission, the
tcp-request connection/session rule runner, track-sc and the sc-*/set-var actions,
backend switching and the connect loop; from proxy/backend.py: server selection,
queues, stick rules, health checks.
"""
from __future__ import annotations

import asyncio

from .acl import MISS, PASS
from .backend import ServerConn
from .frontend import Frontend, Stream, _assign, _counts_bytes, _sec
from .payload import BUFSIZE, MAXREWRITE
from .sample import Context

_FULL = BUFSIZE - MAXREWRITE        # a request buffer holding this much is full


class TcpContext(Context):
    """A rule context that also sees the bytes received so far (proxy/payload.py)."""
    __slots__ = ("payload", "final", "may_change", "stores")


class TcpServerConn(ServerConn):
    """A server connection that stays open for writing after the server's FIN (a
    half-closed server still reads what the client sends)."""
    __slots__ = ()

    def eof_received(self):
        self.eof = True
        self._wake()
        return True


class TcpFrontend(Frontend):
    """A frontend (or listen section) in `mode tcp`."""

    def __init__(self, proc, model, table=None):
        super().__init__(proc, model, table)
        self.fast_ok = self.late_start = False
        self.session_gate = True        # stot counted once the session rules accepted it
        self.inspect_delay = _sec(model.tcp_request_inspect_delay_ms)

    def _ctx(self, c, sc) -> TcpContext:
        ctx = TcpContext(c.src, c.src_port, c.dst, c.dst_port, c.ssl, sc=sc, table=self.table,
                         tables=self.proc.tables, fe=self)
        ctx.payload, ctx.final, ctx.may_change = c.buf, True, False
        return ctx

    def _client_left(self, client) -> bool:
        """A client that sent its FIN and nothing left to deliver: retries stop."""
        return client.eof and not client.buf

    async def close_idle(self):
        """Graceful stop: a TCP stream has no idle point; it runs until the grace ends."""

    # ---- one connection

    async def serve(self, c, sess_sc=None, first: bool = True, late: bool = False):
        sess_sc = [None, None, None]
        stream = None
        try:
            if self.model.tcp_request_connection and not self._connection_rules(c, sess_sc):
                return
            if c.expect_proxy and not await self._proxy_header(c):
                c.reset()
                return
            if not self._session_rules(c, sess_sc):
                return
            self.stats.stot += 1
            stream = Stream(sess_sc, 0, 0)
            await self._stream(c, stream)
        except Exception as e:          # never let one connection take the loop down
            self.internal_error(c.src, e)
        finally:
            if stream is not None:
                self._flush_bytes(stream)
                for table, entry in stream.own:
                    table.release(entry)
            for t in sess_sc:
                if t is not None:
                    t[0].release(t[1])
            if not c.closed:
                c.close()

    async def _stream(self, c, stream: Stream):
        ctx = self._ctx(c, stream.sc)
        verdict = True
        if self.model.tcp_request_content:
            verdict = await self._content_rules(c, ctx, stream, self.model.tcp_request_content,
                                                self.inspect_delay)
            if verdict is False:
                return
        ctx.final = True
        backend = self._choose_backend(ctx)
        if backend is None:
            return
        ctx.be = stream.be = backend
        backend.stot += 1               # a session of the backend from the switch on
        if verdict is None:
            # the client timed out while its first bytes were inspected: HAProxy still
            # switches to the backend, then aborts
            stream.bytes_in += len(c.buf)
            return
        bm = backend.model
        if bm is not self.model and bm.tcp_request_content:
            ctx.table = backend.table
            if not await self._content_rules(c, ctx, stream, bm.tcp_request_content,
                                             _sec(bm.tcp_request_inspect_delay_ms)):
                return
            ctx.final = True
        await self._to_server(c, ctx, stream, backend)

    async def _content_rules(self, c, ctx, stream, rules, delay) -> bool | None:
        """tcp-request content rules as HAProxy's tcp_inspect_request runs them: a
        condition (or a track-sc key) that more bytes may change waits for them, until
        `delay` ends, the client closes or the buffer is full; then the rules run again
        from the first one. False: rejected (dreq); None: the client was silent for
        `timeout client` meanwhile."""
        loop = asyncio.get_running_loop()
        deadline = idle_since = None
        while True:
            final = (delay is None or c.eof or len(c.buf) >= _FULL
                     or (deadline is not None and loop.time() >= deadline))
            ctx.final = final
            waiting = False
            for rule in rules:
                if rule.cond is not None:
                    verdict = rule.cond.tri(ctx)
                    if verdict == MISS:
                        waiting = True
                        break
                    if verdict != PASS:
                        continue
                act = rule.action
                if act == "accept":
                    return True
                if act == "reject":
                    self.stats.dreq += 1
                    stream.bytes_in += len(c.buf)       # received, counted, dropped
                    c.close()               # (no RST here, unlike a connection reject)
                    return False
                if act == "track-sc":
                    ctx.may_change = False
                    if not self._track(rule, ctx, stream.sc, stream) and ctx.may_change:
                        waiting = True
                        break
                elif self._counter_action(rule, ctx, c):     # silent-drop
                    self.stats.dreq += 1
                    return False
            if not waiting:
                return True
            now = loop.time()
            if deadline is None:
                deadline = now + delay
            if self.t_client is not None and idle_since is None:
                idle_since = now
            wait = deadline - now
            if self.t_client is not None:
                wait = min(wait, idle_since + self.t_client - now)
            had = len(c.buf)
            try:
                await c.wait_data(wait)
            except TimeoutError:
                if self.t_client is not None and loop.time() >= idle_since + self.t_client:
                    return None     # `timeout client` while inspecting (see _stream)
            if c.closed:
                return False
            if len(c.buf) != had:
                idle_since = loop.time()

    # ---- towards the server

    async def _to_server(self, c, ctx, stream, backend):
        bm = backend.model
        backend.cur += 1                # a queued stream counts in the backend's scur
        if backend.cur > backend.smax:
            backend.smax = backend.cur
        try:
            srv, persisted = await self._take_server(c, ctx, backend)
            if srv is None:
                return
            try:
                _assign(stream, backend, srv, persisted)
                conn, other = await self._connect(backend, srv, persisted, c.src, None, ctx, c)
                if other is not srv:                # redispatched: the slot moves too
                    backend.release_slot(srv)
                    srv = other
                    srv.cur += 1
                    backend.reposition(srv)
                    _assign(stream, backend, srv, False)
                if conn is None or c.closed:
                    if conn is not None:
                        conn.close()
                    else:                       # received for a server: counted there
                        stream.bytes_in += len(c.buf)
                    return
                for table, key in ctx.stores:
                    row = table.get_or_create(key)
                    if row is not None:
                        table.set_server(row, srv.id, srv.key)
                await self._relay(c, conn, stream, bm)
            finally:
                backend.release_slot(srv)
        finally:
            backend.cur -= 1

    async def _take_server(self, c, ctx, backend):
        """(server, chosen by persistence) with a connection slot taken, waiting in the
        queue when every server is at its maxconn; (None, False) when there is none."""
        bm = backend.model
        srv = None
        ctx.stores = []
        if bm.stick_rules:
            force = bool(bm.persist_rules) and backend.persist_flags(ctx)[0]
            srv = backend.stick_request(ctx, self.proc.tables, None, bm.options.persist,
                                        ctx.stores, force)
        persisted = srv is not None
        t_queue = _sec(bm.timeouts.get("queue") or bm.timeouts.get("connect"))
        if srv is None:
            srv = backend.pick(c.src)
            if srv is None and backend.up:          # every server at its maxconn: queue
                srv = await backend.wait_slot(None, t_queue)
                return srv, False                   # (the slot comes reserved)
            if srv is None:
                return None, False
        elif srv.maxconn and srv.cur >= srv.maxconn:
            return await backend.wait_slot(srv, t_queue), True
        srv.cur += 1
        backend.reposition(srv)
        return srv, persisted

    async def _relay(self, c, conn, stream, bm):
        """Bytes both ways until both directions are shut. A FIN is passed on as a FIN
        (the other direction keeps flowing), so is a read timeout; a reset ends both.
        Timeouts as HAProxy's: `timeout client` on the client side and `timeout server`
        on the server side, where traffic either way keeps a side alive; `timeout
        tunnel`, when set, replaces both and any traffic keeps the stream alive. A side
        that was sent a FIN gets `timeout client-fin` / `server-fin` instead, when set."""
        loop = asyncio.get_running_loop()
        tunnel = _sec(bm.timeouts.get("tunnel") or self.model.timeouts.get("tunnel"))
        timeout = {c: tunnel or self.t_client, conn: tunnel or _sec(bm.timeouts.get("server"))}
        fin = {c: _sec(self.model.timeouts.get("client-fin")),
               conn: _sec(bm.timeouts.get("server-fin"))}
        now = loop.time()
        last = {c: now, conn: now, "both": now}
        side = {c: "both", conn: "both"} if tunnel else {c: c, conn: conn}
        shut_dirs = []

        def shut(src, dst):
            """A direction is over: its FIN goes on; when it was the last one, both
            connections close now, so the stream has ended (scur) before the client
            sees that FIN (it may connect again at once)."""
            shut_dirs.append(src)
            if len(shut_dirs) == 2:
                src.close()
                dst.close()
            elif not dst.closed and dst.transport.can_write_eof():
                dst.transport.write_eof()
                if fin[dst] is not None:        # its half-closed timeout, from now
                    timeout[dst], side[dst], last[dst] = fin[dst], dst, loop.time()
                    dst._wake()

        async def pump(src, dst, to_server: bool):
            while True:
                src_side, dst_side = side[src], side[dst]
                if src.buf:
                    data = src.buf              # handed over whole: no copy
                    src.buf = bytearray()
                    src.consumed()
                    if dst.closed:
                        return False
                    dst.transport.write(data)
                    last[src_side] = last[dst_side] = loop.time()
                    n = len(data)
                    if to_server:
                        stream.bytes_in += n
                    else:
                        stream.bytes_out += n
                    if dst.paused:
                        await dst.drain()
                    continue
                if src.eof:
                    if src.closed:
                        return False                # reset or gone: nothing to pass on
                    shut(src, dst)
                    return True
                if dst.closed:
                    return False
                t = timeout[src]
                wait = None if t is None else last[src_side] + t - loop.time()
                if wait is not None and wait <= 0:
                    # a read timeout shuts this direction as a FIN would (HAProxy's
                    # CF_READ_TIMEOUT): the other one still runs
                    shut(src, dst)
                    return True
                try:
                    await src.wait_data(wait)
                except TimeoutError:
                    pass

        up = asyncio.ensure_future(pump(c, conn, True))
        down = asyncio.ensure_future(pump(conn, c, False))
        try:
            pending = {up, down}
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for t in done:
                    if t.exception() is not None:
                        raise t.exception()     # (serve logs it: eint)
                if any(t.result() is False for t in done):
                    break
        finally:
            for task in (up, down):
                task.cancel()
            conn.close()
            c.close()
            self._flush_bytes(stream)

    def _flush_bytes(self, stream):
        """The stream's bytes into the trackers' bytes_in/out and the frontend's and
        server's bin/bout, once it ends: HAProxy counts when the stream task runs, which
        plain forwarding does not wake (`show table` of an open TCP stream shows 0)."""
        b_in, b_out = stream.bytes_in, stream.bytes_out
        if not (b_in or b_out):
            return
        stream.bytes_in = stream.bytes_out = 0
        if self.proc.counts_bytes:
            for t in stream.sc:
                if t is not None and _counts_bytes(t[0]):
                    t[0].add_bytes_in(t[1], b_in)
                    t[0].add_bytes_out(t[1], b_out)
        st = self.stats
        st.bin += b_in
        st.bout += b_out
        srv = stream.srv
        if srv is not None:
            srv.bin += b_in
            srv.bout += b_out
        elif stream.be is not None:
            stream.be.bin_own += b_in
            stream.be.bout_own += b_out
