"""Backends at run time: servers and their state, load balancing, health checks,
server connections (pooled keep-alive), and the persistence helpers (cookies, stick
rules) with HAProxy 2.6's rules (reference §9, §10)."""
from __future__ import annotations

import asyncio
import bisect
import collections
import ipaddress
import os
import random
import socket
import ssl
import struct
import time

from edgestick.freq_ctr import now_ms

from . import hashes, http1, outbound, server_health, tcp_check
from .stats import PerSecond

UP, DOWN, MAINT = "UP", "DOWN", "MAINT"
_LINGER_RST = struct.pack("ii", 1, 0)


def set_linger_rst(sock) -> None:
    """SO_LINGER 0: the close that follows sends a RST instead of a FIN (HAProxy's
    abort of a rejected connection, and of a health check once its verdict is known)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
    except OSError:
        pass


def abort_with_reset(transport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is not None:
        set_linger_rst(sock)
    transport.abort()


_TCP_REPAIR = 19                   # linux/tcp.h: a close then sends neither FIN nor RST


def silent_drop(transport) -> None:
    """HAProxy's silent-drop: the connection ends here and the client is told nothing.
    What it sent is read and acknowledged at once (so that it sends nothing more), then
    the socket goes to TCP repair mode, where closing sends neither FIN nor RST (else a
    TTL of 1, so that the reset dies on the way)."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            with socket.socket(fileno=os.dup(sock.fileno())) as dup:
                dup.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
                while dup.recv(65536, socket.MSG_DONTWAIT):
                    pass
        except OSError:
            pass
        try:
            sock.setsockopt(socket.IPPROTO_TCP, _TCP_REPAIR, 1)
        except OSError:
            try:
                if sock.family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, 1)
                else:
                    sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 1)
            except OSError:
                pass
    transport.abort()


# --------------------------------------------------------------------------- server connections

READ_HIGH_WATER = 1 << 20          # bytes buffered from a peer before reading pauses
READ_LOW_WATER = 256 << 10

# Connections waiting for data with a deadline; one reaper task expires them, so a wait
# costs a set insertion instead of a timer (the per-request path waits twice).
WAITING: set = set()


async def reaper(interval_s: float = 0.05):
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(interval_s)
        now = loop.time()
        for conn in [c for c in WAITING if c.deadline <= now]:
            WAITING.discard(conn)
            w = conn.waiter
            if w is not None:
                conn.waiter = None
                if not w.done():
                    w.set_exception(TimeoutError())


class Endpoint(asyncio.Protocol):
    """One side of a proxied exchange: a byte buffer filled by the loop, one waiter,
    write flow control."""
    __slots__ = ("transport", "buf", "waiter", "eof", "closed", "paused", "drain_waiter",
                 "deadline", "loop", "reading_paused")

    def __init__(self):
        self.reading_paused = False
        self.transport = None
        self.buf = bytearray()
        self.waiter: asyncio.Future | None = None
        self.eof = self.closed = self.paused = False
        self.drain_waiter: asyncio.Future | None = None
        self.deadline = 0.0
        self.loop = None

    def connection_made(self, transport):
        # (uvloop sets TCP_NODELAY on its TCP transports itself)
        self.transport = transport
        self.loop = asyncio.get_running_loop()

    def data_received(self, data):
        buf = self.buf
        buf += data
        if len(buf) > READ_HIGH_WATER and not self.reading_paused:
            # the other side is not keeping up: stop reading until it does
            self.reading_paused = True
            self.transport.pause_reading()
        w = self.waiter
        if w is not None:
            self.waiter = None
            if not w.done():
                w.set_result(None)

    def consumed(self):
        """Call after taking bytes out of `buf`: reading resumes below the low mark."""
        if self.reading_paused and len(self.buf) < READ_LOW_WATER and not self.closed:
            self.reading_paused = False
            self.transport.resume_reading()

    def eof_received(self):
        self.eof = True
        self._wake()
        return True              # keep the write side open

    def connection_lost(self, exc):
        self.closed = self.eof = True
        self._wake()
        d = self.drain_waiter
        if d is not None and not d.done():
            d.set_result(None)

    def _wake(self):
        w = self.waiter
        if w is not None:
            self.waiter = None
            if not w.done():
                w.set_result(None)

    def pause_writing(self):
        self.paused = True

    def resume_writing(self):
        self.paused = False
        d = self.drain_waiter
        if d is not None:
            self.drain_waiter = None
            if not d.done():
                d.set_result(None)

    async def drain(self):
        if self.paused and not self.closed:
            self.drain_waiter = self.loop.create_future()
            await self.drain_waiter

    async def wait_data(self, timeout_s: float | None):
        """Wait until more bytes or EOF arrive; raises TimeoutError."""
        if self.eof:
            return
        fut = self.waiter = self.loop.create_future()
        if timeout_s is None:
            await fut
            return
        self.deadline = self.loop.time() + timeout_s
        WAITING.add(self)
        try:
            await fut
        finally:
            WAITING.discard(self)


class ServerConn(Endpoint):
    """A connection to a server."""
    __slots__ = ("server", "reused", "key")

    def __init__(self, server: "ServerState"):
        super().__init__()
        self.server = server
        self.reused = False          # taken from the idle pool (may have been closed)
        self.key = None              # ServerState.conn_key: what it was opened for

    def eof_received(self):
        self.eof = self.closed = True
        self._wake()
        return False

    def connection_lost(self, exc):
        super().connection_lost(exc)
        self.server.forget(self)

    def close(self, reset: bool = False):
        self.closed = True
        t = self.transport
        if t is not None:
            if reset:
                abort_with_reset(t)
            else:
                t.close()


# --------------------------------------------------------------------------- servers

class ServerState:
    """A server's run-time state and counters (what `show stat` reports)."""
    __slots__ = ("backend", "model", "name", "id", "host", "port", "weight", "backup",
                 "cookie", "maxconn", "admin_maint", "op_up", "health", "check_status",
                 "check_code", "last_chk", "checking", "check_duration", "last_change", "down_s", "idle",
                 "all_conns", "cur", "smax", "stot", "bin", "bout", "hrsp", "econ",
                 "eresp", "wretr", "wredis", "chkfail", "chkdown", "lbtot", "connects",
                 "reuses", "unsent", "dresp", "cli_abrt", "srv_abrt", "wire_in", "wire_out",
                 "max_used", "rates", "queue", "lc_key", "lc_seq", "admin_drain", "tls_ctx",
                 "private", "eweight", "track", "trackers", "via_maint", "via_drain", "agent",
                 "warmup", "warm_since", "was_live", "errors", "hanafail")

    def __init__(self, backend: "Backend", model):
        self.backend = backend
        self.model = model
        # TLS to the server, and whether its connections belong to what they were opened
        # for (an SNI from the request, a PROXY header): see proxy/outbound.py
        tls = model.tls
        self.tls_ctx = outbound.client_context(tls) if model.ssl and tls is not None else None
        self.private = bool(model.send_proxy or (self.tls_ctx is not None and tls.sni_expr)
                            or backend.model.http_reuse == "never")
        self.name: str = model.name
        self.id: int = model.id
        self.host: str = model.host
        self.port: int | None = model.port
        self.weight: int = model.weight
        self.backup: bool = model.backup
        self.cookie: str | None = model.cookie
        self.maxconn: int = model.maxconn
        self.admin_maint = bool(model.disabled)
        self.admin_drain = False           # `set server ... state drain`: no new traffic
        self.op_up = True                  # HAProxy starts servers UP ("will fall at first failure")
        self.health = 0 if model.disabled else model.rise   # (HAProxy's, checked or not)
        self.check_status = "L4OK" if model.check else ""
        self.check_code = None             # the HTTP status of the last layer-7 check
        self.last_chk = ""                 # what the last failed check said
        self.checking = False              # a check is under way
        self.check_duration = None         # ms the last check took
        self.last_change = time.monotonic()
        self.down_s = 0.0                  # time spent DOWN before the current state
        self.idle: list[ServerConn] = []
        self.all_conns: set[ServerConn] = set()
        self.cur = 0                       # requests in flight (leastconn, first, scur)
        self.smax = self.stot = self.bin = self.bout = 0
        self.hrsp = [0, 0, 0, 0, 0, 0]     # 1xx..5xx, other
        self.econ = self.eresp = self.wretr = self.wredis = 0
        self.chkfail = self.chkdown = 0
        self.lbtot = 0
        self.connects = self.reuses = 0    # new server connections tried, idle ones reused
        self.unsent = 0                    # streams assigned here that sent no request
        self.dresp = self.cli_abrt = self.srv_abrt = 0
        self.wire_in = self.wire_out = 0   # bytes on the wire from / to the server
        self.max_used = 0                  # most connections in use at once (need_conn_est)
        self.rates = PerSecond(1)          # stot
        self.queue: collections.deque = collections.deque()   # requests waiting for a slot
        self.lc_key = 0                    # leastconn position (see Backend.reposition)
        self.lc_seq = model.id
        # weight: the user's (HAProxy's uweight); eweight: the effective one in 1/16ths,
        # lower while a slow start ramps up (proxy/server_health.py)
        self.eweight = self.weight * server_health.BE_WEIGHT_SCALE
        self.warmup = self.warm_since = None
        self.was_live = self.op_up and not self.admin_maint
        self.track = None                  # the ServerState this one tracks
        self.trackers: list[ServerState] = []
        self.via_maint = None              # the tracked server whose maintenance it inherits
        self.via_drain = False
        self.agent = None                  # agent_check.AgentState with `agent-check`
        self.errors = self.hanafail = 0    # observe: consecutive errors, their verdicts

    @property
    def state(self) -> str:
        if self.admin_maint:
            return MAINT
        return UP if self.op_up else DOWN

    @property
    def usable(self) -> bool:
        return self.op_up and not self.admin_maint and not self.admin_drain and self.weight > 0

    @property
    def key(self) -> str:
        """What `stick store` writes in server_key (srvkey name|addr)."""
        return self.model.addr if self.backend.srvkey == "addr" else self.name

    def set_state(self, up: bool):
        if up != self.op_up:
            self.op_up = up
            now = time.monotonic()
            if up:
                self.down_s += now - self.last_change
            self.last_change = now
            if not up:
                self.chkdown += 1
                self.drop_idle()
            self.backend.recalc()
            if self.model.on_marked_down or self.model.on_marked_up:
                server_health.marked(self, up)

    def drop_idle(self):
        for c in self.idle:
            c.close()
        self.idle.clear()

    def forget(self, conn: ServerConn):
        self.all_conns.discard(conn)
        try:
            self.idle.remove(conn)
        except ValueError:
            pass

    def downtime(self, now: float) -> int:
        """Seconds spent DOWN since the start (show stat downtime)."""
        down = self.down_s if self.op_up else self.down_s + now - self.last_change
        return int(down)

    def conn_key(self, ctx=None, client=None):
        """What a new connection to this server is opened for: None (any request may
        use it), else (SNI, PROXY header, client connection) as outbound.py describes;
        the client connection is named with `http-reuse never` only."""
        if not self.private:
            return None
        sni = None
        tls = self.model.tls
        if self.tls_ctx is not None and tls.sni_expr is not None and ctx is not None:
            sni = tls.sni_expr(ctx)
            sni = None if sni is None else str(sni)
        header = None
        if self.model.send_proxy and client is not None:
            header = outbound.proxy_header(self.model.send_proxy, client.src, client.src_port,
                                           client.dst, client.dst_port)
        owner = client if self.backend.model.http_reuse == "never" else None
        return (sni, header, owner)

    async def connect(self, timeout_s: float | None, key=None) -> ServerConn:
        self.connects += 1
        # no idle connection was left: every other one is in use, and so is this one
        # from its first attempt on
        used = len(self.all_conns) - len(self.idle) + 1
        if used > self.max_used:
            self.max_used = used
        loop = asyncio.get_running_loop()
        factory = lambda: self.backend.conn_class(self)    # noqa: E731
        if self.tls_ctx is None and key is None:
            coro = loop.create_connection(factory, self.host, self.port)
        else:
            coro = self._open(loop, factory, key)
        if timeout_s is None:
            _, proto = await coro
        else:
            _, proto = await asyncio.wait_for(coro, timeout_s)
        proto.key = key
        self.all_conns.add(proto)
        return proto

    async def _open(self, loop, factory, key):
        """A connection that starts with a PROXY header and/or TLS (the header goes first,
        in clear, as HAProxy sends it)."""
        sni, header, _ = key if key is not None else (None, None, None)
        ctx = self.tls_ctx
        hostname = (sni or "") if ctx is not None else None
        if header is None:
            transport, proto = await loop.create_connection(
                factory, self.host, self.port, ssl=ctx, server_hostname=hostname)
        else:
            sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET,
                                 socket.SOCK_STREAM)
            try:
                sock.setblocking(False)
                await loop.sock_connect(sock, (self.host, self.port))
                await loop.sock_sendall(sock, header)
                transport, proto = await loop.create_connection(
                    factory, sock=sock, ssl=ctx, server_hostname=hostname)
            except BaseException:
                sock.close()
                raise
        if ctx is not None:
            try:
                outbound.verify_peer(ctx, self.model.tls, sni,
                                     transport.get_extra_info("ssl_object"))
            except ssl.SSLError:
                transport.abort()
                raise
        return transport, proto

    def take_idle(self, key=None) -> ServerConn | None:
        idle = self.idle
        if key is not None:             # only a connection opened for the same
            for i in range(len(idle) - 1, -1, -1):
                c = idle[i]
                if c.key == key and not c.closed and not c.buf:
                    del idle[i]
                    c.reused = True
                    self.reuses += 1
                    return c
                owner = c.key[2] if c.key is not None else None
                if owner is not None and owner.closed:     # its client has gone
                    del idle[i]
                    c.close()
            return None
        while idle:
            c = idle.pop()
            if not c.closed and not c.buf:
                c.reused = True
                self.reuses += 1
                return c
            c.close()
        return None

    def give_back(self, conn: ServerConn):
        # (self.usable spelt out: this runs once a request)
        if conn.closed or conn.buf or not (self.op_up and not self.admin_maint and self.weight > 0):
            conn.close()
        elif len(self.idle) < 64:
            self.idle.append(conn)
        else:
            conn.close()


class ObservedServer(ServerState):
    """A server with `observe layer4|layer7`: the outcome of its connections (and with
    layer7 its responses, see server_health.observing) counts towards `error-limit`.
    A subclass, so that other servers pay nothing for it."""
    __slots__ = ("_eresp", "check_wake", "check_due")

    def __init__(self, backend: "Backend", model):
        self.check_wake = None          # the wait before its next check (see pause)
        self.check_due = 0.0
        ServerState.__init__(self, backend, model)

    async def connect(self, timeout_s: float | None, key=None) -> ServerConn:
        try:
            conn = await ServerState.connect(self, timeout_s, key)
        except (OSError, TimeoutError, asyncio.TimeoutError):
            server_health.observed(self, False, "L4 unsuccessful connection")
            raise
        if self.model.observe == "layer4":
            server_health.observed(self, True, "")
        return conn

    async def pause(self, delay_s: float):
        """The wait before the next check, which check_soon may cut short."""
        loop = asyncio.get_running_loop()
        self.check_due = loop.time() + delay_s
        fut = self.check_wake = loop.create_future()
        try:
            await asyncio.wait_for(fut, delay_s)
        except (TimeoutError, asyncio.TimeoutError):
            pass
        finally:
            self.check_wake = None

    def check_soon(self, delay_s: float):
        """The next check in `delay_s` at the latest (HAProxy requeues the check task at
        `fastinter` after an observe verdict)."""
        fut = self.check_wake
        if fut is None or fut.done():
            return
        loop = asyncio.get_running_loop()
        due = loop.time() + delay_s
        if due < self.check_due:
            self.check_due = due
            loop.call_at(due, lambda: fut.done() or fut.set_result(None))

    def observe_status(self, status: int):
        if self.model.observe == "layer7":
            server_health.observed(self, status < 500 or status in (501, 505),
                                   "Wrong http response")

    @property
    def eresp(self) -> int:
        return self._eresp

    @eresp.setter
    def eresp(self, value: int):
        # a response that failed (invalid, timed out, cut): an error for layer7
        if value > getattr(self, "_eresp", value) and self.model.observe == "layer7":
            server_health.observed(self, False, "Invalid http response")
        self._eresp = value


# --------------------------------------------------------------------------- backends

class Backend:
    """A backend (or the backend half of a listen section) at run time."""

    def __init__(self, model, table=None):
        self.model = model
        self.name: str = model.name
        self.iid = 0                       # HAProxy's proxy id (be_id, show stat iid)
        self.table = table                 # its own stick table, if it declares one
        self.conn_class = ServerConn       # (mode tcp: tcp_mode.TcpServerConn)
        self.srvkey = "name"
        decl = getattr(model, "stick_table", None)
        if decl is not None and getattr(decl, "srvkey", None):
            self.srvkey = decl.srvkey
        self.servers = [(ObservedServer if s.observe and s.check else ServerState)(self, s)
                        for s in model.servers]
        self.by_name = {s.name: s for s in self.servers}
        self.by_id = {s.id: s for s in self.servers}
        self.by_cookie = {s.cookie: s for s in self.servers if s.cookie}
        self.algo = model.balance
        self.leastconn = model.balance == "leastconn"   # only leastconn reads lc_key
        method, fn, avalanche = model.hash_type
        # random always walks the consistent-hash ring (HAProxy's BE_LB_ALGO_RND)
        self.consistent = method == "consistent" or model.balance == "random"
        self._hash_fn = hashes.BY_NAME[fn]
        # hash-balance-factor: consistent hashing with bounded loads (None: unbounded)
        self._eligible = self.bounded if self.consistent and model.hash_balance_factor else None
        self._cum: dict = {}
        self._avalanche = avalanche
        self._opts = model.balance_opts
        self._ring: _Ring | None = None
        self._rr = 0
        self._active: list[ServerState] = []
        self._map: list[ServerState] = []
        self._rr_map: list[ServerState] = []
        self._fwrr: Fwrr | None = None
        self._lc_seq = len(self.servers)
        self.queue: collections.deque = collections.deque()
        self._limited = any(s.maxconn for s in self.servers)
        # counters (show stat / metrics)
        self.cur = self.smax = self.stot = self.bin = self.bout = 0
        self.hrsp = [0, 0, 0, 0, 0, 0]
        self.req_tot = self.dreq = self.econ = self.eresp = self.wretr = self.wredis = 0
        self.lbtot = 0
        self.dresp = 0
        # bytes of streams that reached no server (the servers' own add up to the rest)
        self.bin_own = self.bout_own = 0
        self.chkdown = 0
        self.down_s = 0.0
        self.rates = PerSecond(1)          # stot
        self.last_change = time.monotonic()
        self.check_tasks: list[asyncio.Task] = []
        self.tracked: list[ServerState] = []   # its servers others track (server_health.link)
        self._slowstart = any(s.model.slowstart_ms for s in self.servers)
        self.recalc()

    # ---- load balancing

    def recalc(self):
        """Rebuild the server lists after a state change (HAProxy recounts too)."""
        active = [s for s in self.servers if s.usable and not s.backup]
        backup_mode = not active
        was_up = bool(self._active)
        if backup_mode:
            backups = [s for s in self.servers if s.usable and s.backup]
            # without `option allbackups` only the first usable backup serves
            active = backups[:1] if not getattr(self.model.options, "other", {}).get("allbackups") else backups
        self._active = active
        if was_up != bool(active):          # the backend went DOWN or came back
            now = time.monotonic()
            if was_up:
                self.chkdown += 1
            else:
                self.down_s += now - self.last_change
            self.last_change = now
        # the weighted maps serve static-rr and map-based hashing only (quadratic in the
        # servers: a 1000-server roundrobin backend does not pay for them at each change)
        maps = self.algo == "static-rr" or (self.algo in _HASHED and not self.consistent)
        self._map = _weighted_map(active) if maps else []
        if self.consistent:
            self._ring = _Ring(active, self._ring)
            if self._eligible is not None:
                self._weigh_cumulative()
        # static-rr turns over every normal server, skipping unusable ones
        normal = [s for s in self.servers if not s.backup and s.weight > 0]
        self._rr_map = (_weighted_map(normal) if any(s.usable for s in normal) else self._map
                        ) if maps else []
        # roundrobin keeps its positions across state changes, as HAProxy's fwrr does
        group = [s for s in self.servers if s.backup == backup_mode and s.weight > 0]
        if self._fwrr is None or self._fwrr.members != group:
            self._fwrr = Fwrr(group)
        self._fwrr.set_usable(set(active))
        if self.tracked:                    # trackers follow (server_health.py)
            server_health.propagate(self)
        if self._slowstart:
            server_health.check_warmups(self)

    def _weigh_cumulative(self):
        """Each active server's weight before it and the total (HAProxy's recount_servers
        cumulative_weight, lbprm.tot_weight), for `bounded`."""
        cum = 0
        self._cum = {}
        for s in self._active:
            self._cum[s] = cum
            cum += s.eweight
        self._cum[None] = cum

    def bounded(self, s: ServerState) -> bool:
        """`hash-balance-factor` (lb_chash.c chash_server_is_eligible): `s` may take one
        more request if it serves fewer than its weight's share of factor% of the
        requests in flight, this one included (at least one slot each)."""
        tot_weight = self._cum.get(None) or 1
        served = sum(x.cur for x in self.servers)
        tot_slots = ((served + 1) * self.model.hash_balance_factor + 99) // 100
        per_weight, remainder = divmod(tot_slots, tot_weight)
        cum = self._cum.get(s, 0)
        slots = (s.eweight * per_weight + (cum + s.eweight) * remainder // tot_weight
                 - cum * remainder // tot_weight)
        return s.cur < max(slots, 1)

    def reweight(self, srv: ServerState):
        """A server's effective weight changed (slow start, agent): balancing follows."""
        fwrr = self._fwrr
        if fwrr is not None and srv in fwrr.pos:
            fwrr.set_weight(srv)
        if self.consistent and srv in self._active:
            self._ring = _Ring(self._active, self._ring)
            if self._eligible is not None:
                self._weigh_cumulative()
        self.reposition(srv)

    @property
    def up(self) -> bool:
        return bool(self._active)

    def downtime(self, now: float) -> int:
        """Seconds without a usable server since the start (show stat downtime)."""
        return int(self.down_s if self._active else self.down_s + now - self.last_change)

    def tick(self, now: int) -> None:
        """Once a second: the totals the rates are read from (see PerSecond)."""
        self.rates.tick((self.stot,), now)
        for s in self.servers:
            s.rates.tick((s.stot,), now)

    def pick(self, src: str | None, avoid: ServerState | None = None,
             req=None) -> ServerState | None:
        """Load-balancing choice among usable servers with a free slot (no persistence);
        None when there is none. `req`: the request (http1.Message) the hash-based
        algorithms read."""
        servers = self._active
        if avoid is not None and len(servers) > 1:
            servers = [s for s in servers if s is not avoid]
        if self._limited:
            servers = [s for s in servers if not s.maxconn or s.cur < s.maxconn]
        if not servers:
            return None
        algo = self.algo
        if algo in _HASHED:
            if algo == "source":
                h = None if src is None else _source_hash(src, len(servers))
            elif algo == "random":
                return self._ring.random(self._opts["draws"], avoid, self._eligible)
            else:
                h = None if req is None else self._request_hash(algo, req, len(servers))
            if h is not None:
                if self._avalanche:
                    h = hashes.full_hash(h)
                if self.consistent:
                    return self._ring.nearest(h, avoid, self._eligible)
                table = self._map if avoid is None else _weighted_map(servers)
                return table[h % len(table)]
            # nothing to hash in the request: round robin over the map (or the ring)
            if self.consistent:
                return self._ring.next(avoid)
            return self._map_rr(servers)
        if algo == "leastconn":
            # HAProxy's fwlc tree: lowest (in-flight + 1) / weight; equal keys in the
            # order the servers were (re)queued
            return min(servers, key=lambda s: (s.lc_key, s.lc_seq))
        if algo == "first":
            for s in sorted(servers, key=lambda s: s.id):
                if not s.maxconn or s.cur < s.maxconn:
                    return s
            return None
        if algo == "static-rr":
            return self._map_rr(servers)
        fwrr = self._fwrr
        if len(fwrr.members) == 1:              # a single server: nothing to turn
            return servers[0]
        for _ in range(len(fwrr.members)):
            srv = fwrr.next()
            if srv is None or srv in servers:
                break
        return srv if srv in servers else servers[0]

    def _map_rr(self, servers: list[ServerState]) -> ServerState:
        """The next server of the weighted map in turn (HAProxy's map_get_server_rr:
        static-rr, and hash algorithms with nothing to hash)."""
        table = self._rr_map
        n = len(table)
        for _ in range(n):
            srv = table[self._rr % n]
            self._rr += 1
            if srv in servers:
                return srv
        return servers[0]

    def _request_hash(self, algo: str, req, n_servers: int) -> int | None:
        """The hash `balance uri|url_param|hdr` takes from the request (backend.c
        get_server_uh/ph/hh) before any avalanche, None when it has nothing to hash."""
        opts = self._opts
        if algo == "url_param":
            key = _url_param(req.target.encode("latin-1"), opts["param"].encode("latin-1"))
            if key is None:
                return None
        elif n_servers == 1:            # (uri and hdr do not hash for a single server)
            return 0
        elif algo == "uri":
            key = _uri_key(req.target.encode("latin-1"), opts)
        else:
            value = req.get(opts["header"])
            if value is not None:       # the first element of a list-valued header
                value = value.split(",", 1)[0].strip(" \t")
            if not value:
                return None
            key = value.encode("latin-1")
            if opts.get("domain_only"):
                key = _main_domain(key)
        return self._hash_fn(key)

    async def wait_slot(self, srv: ServerState | None, timeout_s: float | None):
        """Queue until a server (this one, or any for None) has a free slot; the slot
        comes reserved. None after `timeout queue`."""
        fut = asyncio.get_running_loop().create_future()
        queue = srv.queue if srv is not None else self.queue
        queue.append(fut)
        try:
            return await asyncio.wait_for(fut, timeout_s)
        except (TimeoutError, asyncio.TimeoutError):
            return None
        finally:
            if fut in queue:
                queue.remove(fut)

    def release_slot(self, srv: ServerState):
        """A request left `srv`: hand its slot to the oldest waiter for it (or for the
        backend), else free it."""
        if not srv.queue and not self.queue:
            srv.cur -= 1
            if self.leastconn:
                self.reposition(srv)
            return
        for queue in (srv.queue, self.queue):
            while queue:
                fut = queue.popleft()
                if not fut.done():
                    fut.set_result(srv)          # srv.cur unchanged: the slot moves on
                    self.reposition(srv)
                    return
        srv.cur -= 1
        self.reposition(srv)

    def reposition(self, srv: ServerState):
        """A server's load changed (leastconn): requeue it if its key moved."""
        if not self.leastconn:
            return
        inflight = srv.cur
        key = (inflight + 1) * 4096 // srv.eweight if inflight and srv.eweight else 0
        if key != srv.lc_key:
            self._lc_seq += 1
            srv.lc_key, srv.lc_seq = key, self._lc_seq

    # ---- persistence helpers

    def persist_flags(self, ctx) -> tuple[bool, bool]:
        """(force, ignore): the first `force-persist` / `ignore-persist` rule whose
        condition holds decides (HAProxy's process_switching_rules)."""
        for kind, cond in self.model.persist_rules:
            if cond(ctx):
                return kind == "force", kind == "ignore"
        return False, False

    def server_for_stick(self, entry_server_key, entry_server_id) -> ServerState | None:
        srv = None
        if entry_server_key:
            if self.srvkey == "addr":
                for s in self.servers:
                    if s.model.addr == entry_server_key:
                        srv = s
                        break
            else:
                srv = self.by_name.get(entry_server_key)
        if srv is None and entry_server_id:
            srv = self.by_id.get(entry_server_id)
        return srv

    def stick_request(self, ctx, tables: dict, srv, persist: bool, stores: list,
                      force: bool = False):
        """`stick match|on|store-request` rules on a request: the server an entry names
        (unless `srv` is chosen already; it must be usable, or only not in maintenance
        under `option persist`), else `srv`; the (table, key) pairs to store once a
        server is known join `stores` (8 at most, one per table)."""
        btable = self.table
        for rule in self.model.stick_rules:
            if rule.cond is not None and not rule.cond(ctx):
                continue
            table = tables.get(rule.table) if rule.table else btable
            if table is None:
                continue
            if rule.kind in ("match", "on") and srv is None:
                key = rule.expr(ctx)
                if key is not None:
                    entry = table.lookup(key)
                    if entry is not None:
                        s = self.server_for_stick(table.read(entry, "server_key"),
                                                  table.read(entry, "server_id"))
                        if s is not None and (s.usable or s.admin_drain and s.op_up
                                              or persist and not s.admin_maint or force):
                            srv = s
                            table.touch(entry)
            if rule.kind in ("store-request", "on") and len(stores) < 8:
                if all(t is not table for t, _ in stores):
                    key = rule.expr(ctx)
                    if key is not None:
                        stores.append((table, key))
        return srv

    # ---- health checks

    def start_checks(self, timeouts: dict):
        checked = [s for s in self.servers if s.model.check]
        for pos, srv in enumerate(checked):
            delay = srv.model.inter_ms * pos / len(checked) / 1000.0
            self.check_tasks.append(asyncio.get_running_loop().create_task(
                _check_loop(self, srv, delay, timeouts)))
        if any(s.model.agent_check for s in self.servers):
            from . import agent_check
            agents = agent_check.attach(self)
            for pos, srv in enumerate(agents):
                delay = srv.model.agent_inter_ms * pos / len(agents) / 1000.0
                self.check_tasks.append(asyncio.get_running_loop().create_task(
                    agent_check.loop(srv, delay, timeouts)))

    def stop_checks(self):
        for t in self.check_tasks:
            t.cancel()
        self.check_tasks.clear()

    def close_idle(self):
        for s in self.servers:
            s.drop_idle()


class Fwrr:
    """HAProxy's weighted round robin (lb_fwrr.c) for one group of servers: servers wait
    in an "init", a "current" and a "next" tree ordered by their next position in the
    weight window; each pick advances the chosen server by total weight / its weight.
    Reproduces HAProxy's order (weights 3,1,2 give s1 s3 s1 s2 s1 s3) and keeps the
    positions when servers go down and come back."""
    SCALE = 16                      # BE_WEIGHT_SCALE
    EWGHT_MAX = 256 * SCALE         # SRV_EWGHT_MAX
    UWGHT_RANGE = 256

    class _Pos:
        __slots__ = ("npos", "lpos", "rweight", "key", "seq", "tree", "ew")

        def __init__(self, ew):
            self.npos = self.lpos = self.rweight = self.key = self.seq = 0
            self.tree = None
            self.ew = ew

    def __init__(self, servers: list):
        self.members = list(servers)
        self.pos = {s: Fwrr._Pos(s.eweight) for s in servers}
        self.trees = {"init": [], "curr": [], "next": []}
        self.usable: set = set()
        self.next_weight = self.curr_weight = self.curr_pos = 0
        self.seq = 0

    def _insert(self, tree: str, s, key: int):
        p = self.pos[s]
        self.seq += 1
        p.key, p.seq, p.tree = key, self.seq, tree
        self.trees[tree].append(s)

    def _remove(self, s):
        p = self.pos[s]
        if p.tree is not None:
            self.trees[p.tree].remove(s)
            p.tree = None

    def _first(self, tree: str):
        t = self.trees[tree]
        if not t:
            return None
        pos = self.pos
        return min(t, key=lambda s: (pos[s].key, pos[s].seq))

    def _queue_by_weight(self, tree: str, s):
        self._insert(tree, s, self.EWGHT_MAX - self.pos[s].ew)

    def set_usable(self, usable: set):
        for s in self.members:
            now, before = s in usable, s in self.usable
            if now and not before:
                self.next_weight += self.pos[s].ew
                if self.curr_weight:        # back in the running: from where we are
                    self.pos[s].npos = self.curr_pos
                    self._queue(s)
                else:
                    self._queue_by_weight("init", s)
            elif before and not now:
                self.next_weight -= self.pos[s].ew
                self._remove(s)
        self.usable = {s for s in self.members if s in usable}

    def set_weight(self, s):
        """The server's effective weight changed (lb_fwrr.c fwrr_update_server_weight):
        its share of the window follows from its next position on."""
        p = self.pos[s]
        ew = s.eweight
        if ew == p.ew:
            return
        if s in self.usable:
            self.next_weight += ew - p.ew
        p.ew = ew
        if p.tree is None:
            return
        if p.tree == "init" or not ew:
            self._remove(s)
            self._queue_by_weight("init", s)
            return
        prev_next = p.npos
        step = self.next_weight // ew
        p.npos = min(p.lpos + step, prev_next)
        p.rweight = 0
        if p.npos < self.curr_pos + 2:
            p.npos = self.curr_pos + step
        self._remove(s)
        self._queue(s)

    def _queue(self, s):
        p = self.pos[s]
        if p.npos >= 2 * self.curr_weight or p.npos >= self.curr_weight + self.next_weight:
            p.npos -= self.curr_weight
            self._queue_by_weight("next", s)
        else:
            self._insert("curr", s, self.UWGHT_RANGE * p.npos +
                         (self.EWGHT_MAX + p.rweight - p.ew) // self.SCALE)

    def _from_group(self):
        s1 = self._first("curr")
        if s1 is not None and self.pos[s1].npos <= self.curr_pos:
            return s1
        s2 = self._first("init")
        if s2 is not None:
            p = self.pos[s2]
            p.npos = p.rweight = 0
            return s2
        return s1

    def next(self):
        if not self.usable:
            return None
        if not self.curr_weight:
            self.curr_pos = self.curr_weight = self.next_weight
        switched = False
        while True:
            s = self._from_group()
            if s is not None:
                break
            if switched:
                return None
            switched = True
            self.trees["init"], self.trees["next"] = self.trees["next"], self.trees["init"]
            for x in self.trees["init"]:
                self.pos[x].tree = "init"
            self.curr_weight = self.next_weight
            self.curr_pos = self.curr_weight
        p = self.pos[s]
        if not p.npos:
            p.npos = self.curr_pos
        p.lpos = p.npos
        p.npos += self.next_weight // p.ew
        p.rweight += self.next_weight % p.ew
        if p.rweight >= p.ew:
            p.rweight -= p.ew
            p.npos += 1
        self._remove(s)
        self.curr_pos += 1
        self._queue(s)
        return s


def _weighted_map(servers: list[ServerState]) -> list[ServerState]:
    """HAProxy's map of servers by weight (lb_map.c recalc_server_map): each slot goes
    to the server with the best accumulated score, declaration order breaking ties, so
    equal weights give s1, s2, s3, s1, ..."""
    if not servers:
        return []
    tot = sum(s.weight for s in servers)
    if len(servers) == 1:
        return [servers[0]]
    score = {id(s): 0 for s in servers}
    out = []
    for _ in range(tot):
        best, best_v = None, 0
        for s in servers:
            score[id(s)] += s.weight
            v = (score[id(s)] + tot) // tot
            if best is None or v > best_v:
                best, best_v = s, v
        out.append(best)
        score[id(best)] -= tot
    return out


def _source_hash(src: str, n_servers: int) -> int:
    """`balance source` hash: XOR of the address's 32-bit words; no hash at all when a
    single server remains."""
    if n_servers == 1:
        return 0
    packed = ipaddress.ip_address(src).packed
    h = 0
    for i in range(0, len(packed), 4):
        h ^= int.from_bytes(packed[i:i + 4], "big")
    return h


# --------------------------------------------------------------------------- hash keys

_HASHED = frozenset({"source", "uri", "url_param", "hdr", "random"})


def _uri_key(uri: bytes, opts: dict) -> bytes:
    """What `balance uri [whole] [len N] [depth N] [path-only]` hashes: the request
    target as received up to its '?' (unless `whole`), its first `len` bytes, up to the
    slash after `depth` levels (counting the slashes of an absolute URI's scheme too)."""
    if opts.get("path-only"):
        uri = _origin_path(uri)
    if "len" in opts:
        uri = uri[:opts["len"]]
    depth_slash = opts["depth"] + 1 if "depth" in opts else 0
    whole = opts.get("whole", False)
    slashes = 0
    for i, c in enumerate(uri):
        if c == 0x2F:                                   # '/'
            slashes += 1
            if slashes == depth_slash:
                return uri[:i]
        elif c == 0x3F and not whole:                   # '?'
            return uri[:i]
    return uri


def _origin_path(uri: bytes) -> bytes:
    """The path part of a request target (HAProxy's http_get_path): from its first '/'
    after any scheme and authority; empty when it has none."""
    if uri[:1] == b"/":
        return uri
    scheme_end = uri.find(b"://")
    if scheme_end < 0:
        return b""
    slash = uri.find(b"/", scheme_end + 3)
    return b"" if slash < 0 else uri[slash:]


def _url_param(uri: bytes, name: bytes) -> bytes | None:
    """The value of query parameter `name` (up to the next '&'), None when absent
    (backend.c get_server_ph)."""
    q = uri.find(b"?")
    if q < 0:
        return None
    params = uri[q + 1:]
    plen = len(name)
    while len(params) > plen:
        if params[plen:plen + 1] == b"=" and params[:plen] == name:
            return params[plen + 1:].split(b"&", 1)[0]
        amp = params.find(b"&")
        if amp < 0:
            return None
        params = params[amp + 1:]
    return None


def _main_domain(host: bytes) -> bytes:
    """`hdr(...) use_domain_only`: the label before the last dot ("www.example.com" ->
    "example"); the whole value without a dot."""
    last_dot = host.rfind(b".")
    if last_dot < 0:
        return host
    return host[host.rfind(b".", 0, last_dot) + 1:last_dot]


class _Ring:
    """HAProxy's consistent-hash tree (lb_chash.c) over the usable servers: a server of
    weight w holds 16 w points at full_hash(id x 4096 + n); a hash goes to the server of
    the nearest point (the earlier one on a tie), avoiding one server if asked."""
    __slots__ = ("keys", "servers", "last")

    def __init__(self, servers: list[ServerState], old: "_Ring | None" = None):
        points = sorted((hashes.full_hash((s.id * _EWGHT_RANGE + n) & hashes.U32), i, s)
                        for i, s in enumerate(servers) for n in range(s.eweight))
        self.keys = [p[0] for p in points]
        self.servers = [p[2] for p in points]
        self.last = None if old is None else old.last      # round robin position

    def nearest(self, h: int, avoid=None, eligible=None):
        keys = self.keys
        n = len(keys)
        if not n:
            return None
        i = bisect.bisect_left(keys, h)
        if i == n:
            i = 0
        prev = i - 1 if i else n - 1
        if (h - keys[prev]) & hashes.U32 <= (keys[i] - h) & hashes.U32:
            i = prev
        for _ in range(n):                  # the next points, past the server to avoid
            s = self.servers[i]             # (and the full ones, with bounded loads)
            if s is not avoid and (eligible is None or eligible(s)):
                break
            i = (i + 1) % n
        return self.servers[i]

    def next(self, avoid=None):
        """Round robin along the ring (chash_get_next_server): the next point's server
        with a free slot, the avoided one only when no other is."""
        n = len(self.keys)
        if not n:
            return None
        i = -1 if self.last is None or self.last >= n else self.last
        avoided = None
        for _ in range(n):
            i = (i + 1) % n
            s = self.servers[i]
            if s.maxconn and s.cur >= s.maxconn:
                continue
            if s is not avoid:
                self.last = i
                return s
            if avoided is None:
                avoided = i
        if avoided is None:
            return None
        self.last = avoided
        return self.servers[avoided]

    def random(self, draws: int, avoid=None, eligible=None):
        """`balance random(draws)`: the least loaded (in flight / weight) of `draws` servers
        drawn at random points of the ring; None when it is full (the request queues)."""
        best = None
        for _ in range(draws):
            s = self.nearest(random.getrandbits(32), avoid, eligible)
            if s is None:
                break
            if best is not None and best is not s and s.cur * best.eweight > best.cur * s.eweight:
                s = best
            best = s
        if best is not None and best.maxconn and (best.queue or best.cur >= best.maxconn):
            return None
        return best


_EWGHT_RANGE = 256 * 16         # SRV_EWGHT_RANGE: user weights 0-256 x BE_WEIGHT_SCALE


# --------------------------------------------------------------------------- health checks

def _check_request(model) -> bytes | None:
    if not model.options.httpchk:
        return None
    chk = model.http_check
    parts = [f"{chk.method} {chk.uri} {chk.version}\r\n"]
    for name, value in chk.headers:
        parts.append(f"{name.lower()}: {value}\r\n")
    body = chk.body or ""
    if body:
        parts.append(f"content-length: {len(body.encode())}\r\n")
    if chk.version.upper() == "HTTP/1.1":
        parts.append("connection: close\r\n")
    parts.append("\r\n")
    parts.append(body)
    return "".join(parts).encode("latin-1")


def _check_expect_ok(model, status: int) -> bool:
    exp = model.http_check.expect
    if exp is None:
        return 200 <= status < 400
    kind, value = exp
    if kind == "status":
        return any(str(status) == v for v in value.split(","))
    if kind == "rstatus":
        import re
        return re.search(value, str(status)) is not None
    return 200 <= status < 400


async def _check_once(backend: Backend, srv: ServerState, timeouts: dict) -> bool:
    model = backend.model
    inter_s = srv.model.inter_ms / 1000.0
    connect_s = (timeouts.get("connect") or srv.model.inter_ms) / 1000.0
    read_s = (timeouts.get("check") or srv.model.inter_ms) / 1000.0
    host = srv.model.check_addr or srv.host
    port = srv.model.check_port or srv.port
    if model.tcp_checks and model.options.other.get("tcp-check"):
        ok, srv.check_status, srv.check_code, srv.last_chk = await tcp_check.run(
            model.tcp_checks, host, port, min(connect_s, inter_s), read_s)
        return ok
    req = _check_request(model)
    srv.check_code, srv.last_chk = None, ""
    # the check's connection is one in use (HAProxy's need_conn_est counts it)
    srv.max_used = max(srv.max_used, len(srv.all_conns) - len(srv.idle) + 1)
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        try:
            await asyncio.wait_for(loop.sock_connect(sock, (host, port)), min(connect_s, inter_s))
        except (TimeoutError, asyncio.TimeoutError):
            srv.check_status = "L4TOUT"
            return False
        except OSError as e:
            srv.check_status = "L4CON"
            srv.last_chk = os.strerror(e.errno) if e.errno else ""
            return False
        own_addr = not (srv.model.check_port or srv.model.check_addr)
        send_proxy = srv.model.send_proxy or 1
        if srv.model.check_send_proxy or (own_addr and srv.model.send_proxy):
            # (HAProxy names the check connection's own two ends)
            local = sock.getsockname()
            await loop.sock_sendall(sock, outbound.proxy_header(send_proxy, local[0], local[1],
                                                                host, port))
        check_ssl = srv.model.check_ssl
        tls_ctx = _check_tls_ctx(srv) if check_ssl or (check_ssl is None and own_addr) else None
        stream = None
        if tls_ctx is not None:
            try:
                stream = await asyncio.wait_for(asyncio.open_connection(
                    sock=sock, ssl=tls_ctx, server_hostname=""), min(connect_s, inter_s))
            except (TimeoutError, asyncio.TimeoutError):
                srv.check_status = "L6TOUT"
                return False
            except OSError as e:
                srv.check_status = "L6RSP"
                srv.last_chk = str(e)
                return False
        try:
            if req is None:
                srv.check_status = "L6OK" if stream is not None else "L4OK"
                return True

            async def exchange() -> bytes:
                data = b""
                if stream is None:
                    await loop.sock_sendall(sock, req)
                else:
                    stream[1].write(req)
                while b"\n" not in data:
                    chunk = await (loop.sock_recv(sock, 4096) if stream is None
                                   else stream[0].read(4096))
                    if not chunk:
                        break
                    data += chunk
                return data
            try:
                data = await asyncio.wait_for(exchange(), read_s)
            except (TimeoutError, asyncio.TimeoutError, OSError):
                srv.check_status = "L7TOUT"
                return False
        finally:
            if stream is not None:
                stream[1].transport.abort()
        line = data.split(b"\n", 1)[0].split()
        if len(line) < 2 or not line[0].startswith(b"HTTP/") or not line[1].isdigit():
            srv.check_status = "L7RSP"
            return False
        srv.check_code = int(line[1])
        ok = _check_expect_ok(model, srv.check_code)
        srv.check_status = "L7OK" if ok else "L7STS"
        if not ok:                  # the reason phrase, as HAProxy reports it
            srv.last_chk = b" ".join(line[2:]).decode("latin-1")
        return ok
    finally:
        set_linger_rst(sock)        # like HAProxy: a reset once the verdict is known
        sock.close()


def _check_tls_ctx(srv: ServerState):
    """The TLS context of a server's checks (`check-ssl`, or `ssl` inherited), None for
    a server without TLS settings."""
    if srv.tls_ctx is not None:
        return srv.tls_ctx
    tls = srv.model.tls
    return None if tls is None or not srv.model.check_ssl else outbound.client_context(tls)


def apply_check_result(srv: ServerState, ok: bool):
    """HAProxy's health counter: 0..rise+fall-1, UP from `rise`; a server starts at
    `rise` (UP, down at its first failure); going DOWN resets it to 0, going UP sets
    it to the top."""
    rise, fall = srv.model.rise, srv.model.fall
    top = rise + fall - 1
    if ok:
        if srv.health < top:
            srv.health += 1
            if srv.health >= rise:
                srv.health = top        # "OK now", also from an UP server's `rise`
                if srv.agent is None or srv.agent.health:     # (its agent may say DOWN)
                    srv.set_state(True)
    elif srv.health > 0:
        srv.chkfail += 1
        srv.health -= 1
        if srv.health < rise:
            srv.health = 0
            srv.set_state(False)


async def _check_loop(backend: Backend, srv: ServerState, delay: float, timeouts: dict):
    await asyncio.sleep(delay)
    loop = asyncio.get_running_loop()
    while True:
        started = loop.time()
        if srv.admin_maint:
            ok = None
        else:
            srv.checking = True
            try:
                ok = await _check_once(backend, srv, timeouts)
            except Exception:
                srv.check_status = "SOCKERR"
                ok = False
            finally:
                srv.checking = False
            srv.check_duration = int((loop.time() - started) * 1000)
        if ok is not None:
            apply_check_result(srv, ok)
        inter = srv.model.inter_ms
        if not srv.op_up and srv.model.downinter_ms:
            inter = srv.model.downinter_ms
        elif srv.health not in (0, srv.model.rise + srv.model.fall - 1) and srv.model.fastinter_ms:
            inter = srv.model.fastinter_ms
        pause = max(0.0, inter / 1000.0 - (loop.time() - started))
        if type(srv) is ObservedServer:     # (observe may bring its next check forward)
            await srv.pause(pause)
        else:
            await asyncio.sleep(pause)


# --------------------------------------------------------------------------- cookie persistence

_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def encode_cookie_date(unix_s: float) -> str:
    v = (int(unix_s) + 3) >> 2
    return "".join(_B64[(v >> shift) & 63] for shift in (24, 18, 12, 6, 0))


def decode_cookie_date(text: str) -> int | None:
    if len(text) != 5:
        return None
    v = 0
    for ch in text:
        i = _B64.find(ch)
        if i < 0:
            return None
        v = (v << 6) | i
    return v << 2


class CookieDecision:
    """What the request side found, for the response side."""
    __slots__ = ("server", "valid", "first_date", "last_date", "found", "ignored")

    def __init__(self):
        self.ignored = False     # `ignore-persist`: no server from it, no Set-Cookie back
        self.server = None       # ServerState named by a usable cookie
        self.valid = False
        self.first_date = 0
        self.last_date = 0
        self.found = False


def cookie_request(backend: Backend, req: http1.Message, now_s: float) -> CookieDecision:
    """Find the persistence cookie, pick its server if usable, strip it (insert+indirect)
    or unprefix it (prefix mode)."""
    ck = backend.model.cookie
    d = CookieDecision()
    name = ck.name
    headers = req.headers
    for i in range(len(headers)):
        h = headers[i]
        if h[0] != "cookie" or name not in h[1]:
            continue
        pairs = h[1].split(";")
        kept = []
        changed = False
        for part in pairs:
            k, sep, v = part.strip().partition("=")
            if not sep or k != name:
                kept.append(part.strip())
                continue
            d.found = True
            if ck.mode == "prefix":
                srv_val, tilde, rest = v.partition("~")
                if tilde:
                    srv = backend.by_cookie.get(srv_val)
                    if srv is not None and d.server is None:
                        d.server = srv
                    kept.append(f"{k}={rest}")
                    changed = True
                else:
                    kept.append(part.strip())
                continue
            value, _, dates = v.partition("|")
            if ck.mode == "insert" and (ck.maxidle_ms or ck.maxlife_ms):
                last, _, first = dates.partition("|")
                ld = decode_cookie_date(last) if last else None
                fd = decode_cookie_date(first) if first else None
                if ck.maxidle_ms and ld is not None and (
                        now_s - ld > ck.maxidle_ms / 1000 or ld - now_s > 86400):
                    value = ""
                if ck.maxlife_ms and fd is not None and (
                        now_s - fd > ck.maxlife_ms / 1000 or fd - now_s > 86400):
                    value = ""
                d.last_date, d.first_date = ld or 0, fd or 0
            if value and d.server is None:
                d.server = backend.by_cookie.get(value)
            if ck.mode == "insert" and ck.indirect:
                changed = True                 # the pair is removed before forwarding
            else:
                kept.append(part.strip())
        if changed:
            headers[i] = [h[0], "; ".join(kept) if kept else None]
            req.origin = None
    if any(h[1] is None for h in headers):
        req.headers = [h for h in headers if h[1] is not None]
    return d


_CACHEABLE_STATUS = frozenset((200, 203, 204, 206, 300, 301, 404, 405, 410, 414, 501))


def response_cacheable(req: http1.Message, resp: http1.Message) -> bool:
    """HAProxy 2.6.12's idea of a cacheable response (nocache adds `private` only then)."""
    if req.method not in ("GET", "HEAD", "OPTIONS", "TRACE") or resp.status not in _CACHEABLE_STATUS:
        return False
    fresh = False
    for name, value in resp.headers:
        if name == "pragma" and "no-cache" in value.lower():
            return False
        if name == "cache-control":
            for d in value.lower().split(","):
                d = d.strip()
                if d in ("private", "no-cache", "no-store", "max-age=0", "s-maxage=0") or \
                        d.startswith("private=") or d.startswith("no-cache="):
                    return False
                if d.startswith("max-age=") or d.startswith("s-maxage="):
                    fresh = True
        elif name in ("expires", "etag", "last-modified"):
            fresh = True
    return fresh


def cookie_response(backend: Backend, d: CookieDecision, served: ServerState, direct: bool,
                    req: http1.Message, resp: http1.Message, now_s: float) -> None:
    """Set-Cookie handling on the response (insert / rewrite / prefix)."""
    if d.ignored:
        return
    resp.origin = None                  # (its headers may change below)
    ck = backend.model.cookie
    name = ck.name
    prefix = name + "="
    if ck.mode == "insert":
        if not ck.preserve:
            resp.headers = [h for h in resp.headers
                            if not (h[0] == "set-cookie" and h[1].lstrip().startswith(prefix))]
        need = not direct
        if not need and (ck.maxidle_ms or ck.maxlife_ms):
            need = (ck.maxidle_ms and (not d.last_date or d.last_date < now_s)) or \
                   (ck.maxlife_ms and not d.first_date)
        if not need:
            return
        if served.cookie:
            value = served.cookie
            if ck.maxidle_ms or ck.maxlife_ms:
                value += "|" + encode_cookie_date(now_s)
                if ck.maxlife_ms:
                    first = d.first_date if (direct and d.first_date) else now_s
                    value += "|" + encode_cookie_date(first)
            text = f"{name}={value}; path=/"
        else:
            text = f"{name}=; Expires=Thu, 01-Jan-1970 00:00:01 GMT; path=/"
        for dom in ck.domains:
            text += f"; domain={dom}"
        if ck.httponly:
            text += "; HttpOnly"
        if ck.secure:
            text += "; Secure"
        for attr in ck.attrs:
            text += f"; {attr}"
        resp.headers.append(["set-cookie", text])
        if ck.nocache and response_cacheable(req, resp):
            resp.headers.append(["cache-control", "private"])
        return
    if not served.cookie:
        return
    headers = resp.headers
    for i, h in enumerate(headers):
        if h[0] == "set-cookie" and h[1].lstrip().startswith(prefix):
            value = h[1].lstrip()[len(prefix):]
            cval, sep, attrs = value.partition(";")
            if ck.mode == "rewrite":
                headers[i] = [h[0], f"{prefix}{served.cookie}{sep}{attrs}"]
            else:
                headers[i] = [h[0], f"{prefix}{served.cookie}~{cval}{sep}{attrs}"]
