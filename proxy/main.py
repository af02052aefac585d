"""`edgestick proxy -f FILE [-f FILE ...] [-c] [-L peername] [--metrics [ADDR:]PORT] [-sf PID ...]
[--runtime auto|pypy|cpython]`

Runs a HAProxy 2.6 configuration: builds the stick tables, backends and frontends
(`mode http`: proxy/frontend.py, `mode tcp`: proxy/tcp_mode.py),
serves the runtime API on each `stats socket`, and (with --metrics) Prometheus on a
loopback address. SIGTERM/SIGINT: stop accepting, let in-flight requests finish within
a grace period, exit. SIGUSR2 or the runtime command `reload`: re-read the
configuration; tables whose declaration did not change keep their contents.

Reload by a new process, as HAProxy's `-sf`: `edgestick proxy -f FILE -L NAME -sf OLDPID`
binds next to the old process (SO_REUSEPORT, new connections steered to the newest
listener), then sends it SIGUSR1 (soft stop): the old process stops accepting, teaches
its replicated tables to the new one over the local peer address (proxy/peers.py
hand_over), lets its in-flight requests finish and exits.

The interpreter is PyPy when the installation has it, else CPython with uvloop
(proxy/runtime.py; bench/proxy.py measures both).
"""
from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time

from edgestick.cfgsyntax import ConfigError

from . import config as config_mod
from . import runtime
from . import server_health
from . import backend as backend_mod
from . import sample
from . import vars as var_mod
from . import request_body
from .backend import Backend
from .frontend import Frontend
from .stats import proxy_ids
from .tcp_mode import TcpFrontend, TcpServerConn
from . import server_cli, server_state

GRACE_S = 5.0
DRAIN_S = 0.2      # soft stop: accept what is already queued before closing the listeners
SO_ATTACH_REUSEPORT_CBPF = 51


def load_config(paths: list[str], local_peer: str | None):
    """config.load_config, then the proxies and servers that sample fetches name
    (nbsrv(be), srv_is_up(be/srv)...) checked against it, as HAProxy resolves them."""
    sample.RUNNING.checking = []
    try:
        cfg, warnings = config_mod.load_config(paths, local_peer)
    except BaseException:
        sample.RUNNING.checking = None
        raise
    sample.check_proxy_refs(cfg)
    return cfg, warnings


def _log(msg: str):
    sys.stderr.write(f"[edgestick proxy] {msg}\n")
    sys.stderr.flush()


class ProxyProcess:
    """Everything one `edgestick proxy` process runs."""

    def __init__(self, paths: list[str], local_peer: str | None = None,
                 metrics_addr: tuple[str, int] | None = None, takes_over: bool = False):
        self.paths = paths
        self.takes_over = takes_over        # -sf: an old process hands its tables over
        self.local_peer = local_peer
        self.metrics_addr = metrics_addr
        self.cfg = None
        self.tables: dict = {}
        self.table_decls: dict = {}
        self.backends: dict[str, Backend] = {}
        self.frontends: list[Frontend] = []
        self.old_frontends: list[Frontend] = []
        self.sweeper = None
        self.peers = None
        self.counts_bytes = False      # some table stores bytes_* (see Stream.table_bytes)
        self.stopping = False
        self.cur_conns = 0
        self.maxconn = 0
        self.metrics = None
        self.metrics_server = None
        self.runtime = None
        self.start_time = time.time()
        self.reloads = 0
        self.stopped = None

    def log(self, msg: str):
        _log(msg)

    # ---- building from a configuration

    def _build_tables(self, cfg):
        """Tables in declaration order; a table whose declaration is unchanged across a
        reload is kept as is (contents included)."""
        from .stick_table import StickTable
        decls = {}
        for p in cfg.proxies:
            if p.stick_table_words is not None:
                decls[p.name] = (tuple(p.stick_table_words.words[1:]), False)
        for sec in cfg.peers.values():
            for t in sec.tables:
                decls[f"{sec.name}/{t.words[1]}"] = (tuple(t.words[2:]), True)
        stick_tables = {r.table or p.name for p in cfg.proxies for r in p.stick_rules}
        tables = {}
        for name, decl in decls.items():
            old = self.tables.get(name)
            if old is not None and self.table_decls.get(name) == decl:
                tables[name] = old
                continue
            t = StickTable.from_words(name, decl[0], decl[1])
            if name in stick_tables:
                t.ensure_data_types("server_id", "server_key")
            tables[name] = t
        return tables, decls

    def _build(self, cfg):
        tables, decls = self._build_tables(cfg)
        self.counts_bytes = any(t.stores(n) for t in tables.values() for n in (
            "bytes_in_cnt", "bytes_in_rate", "bytes_out_cnt", "bytes_out_rate"))
        backends = {}
        for name, model in cfg.backends.items():
            backends[name] = Backend(model, tables.get(name))
        ids = proxy_ids(cfg)
        for b in backends.values():
            b.iid = ids[b.name]
        server_health.link(backends)
        frontends = []
        for b in backends.values():
            if b.model.mode == "tcp":
                b.conn_class = TcpServerConn
        for name, model in cfg.frontends.items():
            if model.disabled:
                continue
            fe = (TcpFrontend if model.mode == "tcp" else Frontend)(self, model, tables.get(name))
            fe.iid = ids[name]
            fe.after_rules = bool(model.http_after_response) or any(
                b.model.http_after_response for b in backends.values())
            if model.kind == "listen":
                fe.own_backend = backends.get(name)
            fe.stream_timeouts = any(r.action == "set-timeout" for p in cfg.proxies
                                     for r in p.http_request)
            if cfg.request_body:
                request_body.attach(fe)
            frontends.append(fe)
        server_health.observe_frontends(frontends, backends)
        return tables, decls, backends, frontends

    async def start(self):
        cfg, warnings = load_config(self.paths, self.local_peer)
        for w in warnings:
            _log(f"[WARNING] {w}")
        self.cfg = cfg
        self.maxconn = cfg.global_.maxconn or 0
        self.tables, self.table_decls, self.backends, self.frontends = self._build(cfg)
        server_state.apply(cfg, self.backends)
        sample.RUNNING.publish(self.backends, self.frontends)
        from . import metrics
        self.metrics = metrics.Metrics(self)
        # the runtime API and metrics are up before traffic is accepted
        await self._start_runtime(cfg)
        await self._start_peers(cfg)
        if self.metrics_addr is None:
            self.metrics_addr = cfg.global_.metrics_bind
        if self.metrics_addr is not None:
            self.metrics_server = await self.metrics.serve(*self.metrics_addr)
        for fe in self.frontends:
            await fe.start()
        for b in self.backends.values():
            b.start_checks(b.model.timeouts)
        self.sweeper = asyncio.get_running_loop().create_task(self._sweep())
        self.reaper = asyncio.get_running_loop().create_task(backend_mod.reaper())

    async def _start_runtime(self, cfg):
        try:
            from . import runtime_api
        except ImportError:                 # not built yet
            if cfg.global_.stats_sockets:
                _log("[WARNING] runtime API not available: stats sockets not served")
            return
        from . import stats
        self.runtime = runtime_api.RuntimeAPI(lambda: list(self.tables.values()), self)
        stats.register_commands(self, self.runtime.commands)
        server_cli.register_commands(self, self.runtime.commands)
        var_mod.register_commands(self, self.runtime.commands)
        await self._listen_runtime(cfg)

    async def _start_peers(self, cfg, reload: bool = False):
        """Replication of the tables declared with `peers` (proxy/peers.py)."""
        if not cfg.peers:
            return
        from . import peers
        commands = self.runtime.commands if (self.runtime is not None and not reload) else None
        sections = await peers.start_peers(cfg, self.tables, self.local_peer, commands,
                                           expect_local=self.takes_over and not reload)
        if reload and self.peers is not None:
            self.peers[:] = sections        # `show peers` keeps reading the same list
        else:
            self.peers = sections

    async def _stop_peers(self):
        if self.peers:
            from . import peers
            await peers.stop_peers(list(self.peers))

    async def _listen_runtime(self, cfg):
        g = cfg.global_
        for s in g.stats_sockets:
            await self.runtime.listen(s.path, s.mode, s.level, g.stats_timeout_ms, s.uid, s.gid)

    async def _sweep(self):
        """Expired entries leave the tables once a second (lookups already ignore them)."""
        while True:
            await asyncio.sleep(1.0)
            for t in list(self.tables.values()):
                t.sweep()
            for fe in self.frontends:
                fe.stats.tick()

    async def reload(self) -> str:
        """Re-read the configuration; on error keep running the old one."""
        try:
            cfg, warnings = load_config(self.paths, self.local_peer)
            tables, decls, backends, frontends = self._build(cfg)
        except (ConfigError, OSError) as e:
            _log(f"reload failed, keeping the running configuration: {e}")
            return f"Reload failed: {e}\n"
        for w in warnings:
            _log(f"[WARNING] {w}")
        for b in self.backends.values():
            b.stop_checks()
        # keep per-server state (UP/DOWN, MAINT) for servers that still exist
        for name, b in backends.items():
            old = self.backends.get(name)
            if old is None:
                continue
            for s in b.servers:
                o = old.by_name.get(s.name)
                if o is not None and o.host == s.host and o.port == s.port:
                    s.op_up, s.health, s.admin_maint = o.op_up, o.health, o.admin_maint
            b.recalc()
        server_state.apply(cfg, backends)       # (the state file, as a new HAProxy reads it)
        # listeners on unchanged addresses are handed over as they are; new ones open
        # before the old ones close
        inherited = {lst.key: lst for fe in self.frontends for lst in fe.listeners}
        old_keys = set(inherited)
        try:
            for fe in frontends:
                await fe.start(inherited)
        except OSError as e:
            for fe in frontends:                # undo: close what was opened ...
                for lst in fe.listeners:
                    if lst.key not in old_keys:
                        lst.server.close()
            for fe in self.frontends:           # ... and give the old ones back
                for lst in fe.listeners:
                    lst.fe = fe
            for b in self.backends.values():
                b.start_checks(b.model.timeouts)
            _log(f"reload failed, keeping the running configuration: {e}")
            return f"Reload failed: {e}\n"
        for lst in inherited.values():          # addresses the new configuration dropped
            lst.server.close()
        for fe in self.frontends:
            fe.listeners = []
        for b in self.backends.values():
            b.close_idle()
        self.old_frontends = [fe for fe in self.old_frontends if fe.conns] + self.frontends
        self.cfg = cfg
        self.maxconn = cfg.global_.maxconn or 0
        self.tables, self.table_decls, self.backends, self.frontends = tables, decls, backends, frontends
        sample.RUNNING.publish(backends, frontends)
        await self._stop_peers()
        try:
            await self._start_peers(cfg, reload=True)
        except OSError as e:
            _log(f"[WARNING] peers not restarted after reload: {e}")
        for b in backends.values():
            b.start_checks(b.model.timeouts)
        self.reloads += 1
        _log("configuration reloaded")
        return "Success=1\n--\n"

    async def stop(self, grace_s: float = GRACE_S, hand_over: bool = False):
        """Stop accepting; in-flight requests get `grace_s` to finish. `hand_over` (soft
        stop of a reload): a new process listens beside this one; the connections already
        queued here are accepted first, and the replicated tables are taught to it."""
        if self.stopping:
            return
        self.stopping = True
        all_fe = self.frontends + self.old_frontends
        if hand_over:
            await asyncio.sleep(DRAIN_S)
        for fe in all_fe:
            fe.stop_listening()
        for b in self.backends.values():
            b.stop_checks()
        if hand_over and self.peers:
            from . import peers
            await peers.hand_over(list(self.peers))
        if self.metrics_server is not None:
            self.metrics_server.close()
        for fe in all_fe:
            await fe.close_idle()
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and any(fe.conns for fe in all_fe):
            await asyncio.sleep(0.05)
        for fe in all_fe:
            for c in list(fe.conns):
                c.close()
        for b in self.backends.values():
            b.close_idle()
        await self._stop_peers()
        if self.runtime is not None:
            await self.runtime.close()
        if self.sweeper is not None:
            self.sweeper.cancel()
            self.reaper.cancel()


def steer_to_newest(frontends) -> None:
    """Send every new connection to this process's listeners rather than to those of the
    old process sharing the ports (SO_REUSEPORT): a classic BPF program on the port's
    reuseport group picks socket 1, the newest of the two; with one socket left (the old
    one closed) the index is out of range and the kernel falls back to its hash."""
    import ctypes
    import socket
    import struct
    insn = (ctypes.c_uint8 * 8)(*struct.pack("=HBBI", 0x06, 0, 0, 1))    # BPF_RET|BPF_K 1
    prog = struct.pack("=H6xQ", 1, ctypes.addressof(insn))
    for fe in frontends:
        for lst in fe.listeners:
            for sock in getattr(lst.server, "sockets", None) or ():
                if sock.family not in (socket.AF_INET, socket.AF_INET6):
                    continue
                # (on the loop's own socket object: a second Python socket on a dup of
                # the descriptor may switch the shared file to blocking mode, as PyPy does)
                try:
                    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, prog)
                except OSError as e:
                    _log(f"[WARNING] cannot steer new connections to the new process: {e}")


def _parse_metrics(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return (host.strip("[]") or "127.0.0.1"), int(port)


async def _run(args) -> int:
    import logging
    # peers (proxy/peers.py) report sessions, hand-overs and errors through logging
    logging.basicConfig(level=logging.INFO, format="[edgestick proxy] %(message)s", stream=sys.stderr)
    proc = ProxyProcess(args.file, args.local_peer,
                        _parse_metrics(args.metrics) if args.metrics else None,
                        takes_over=bool(args.soft_finish))
    try:
        await proc.start()
    except ConfigError as e:
        _log(f"[ALERT] {e}")
        return 1
    except OSError as e:
        _log(f"[ALERT] cannot start: {e}")
        return 1
    loop = asyncio.get_running_loop()
    done = asyncio.Event()

    def on_stop(hand_over: bool = False):
        async def go():
            hard = proc.cfg.global_.hard_stop_after_ms if proc.cfg is not None else None
            await proc.stop(hard / 1000.0 if hard else GRACE_S, hand_over=hand_over)
            done.set()
        loop.create_task(go())

    def on_reload():
        loop.create_task(proc.reload())

    loop.add_signal_handler(signal.SIGTERM, on_stop)
    loop.add_signal_handler(signal.SIGINT, on_stop)
    loop.add_signal_handler(signal.SIGUSR2, on_reload)
    loop.add_signal_handler(signal.SIGUSR1, on_stop, True)     # soft stop (a reload's -sf)
    if args.soft_finish:
        steer_to_newest(proc.frontends)
    _log(f"started, pid {os.getpid()}")
    if args.soft_finish:
        for pid in args.soft_finish:
            try:
                os.kill(pid, signal.SIGUSR1)
            except ProcessLookupError:
                _log(f"[WARNING] -sf: no process {pid}")
    await done.wait()
    return 0


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="edgestick proxy",
                                 description="Run a HAProxy 2.6 configuration (mode http, mode tcp).")
    ap.add_argument("-f", dest="file", action="append", required=True,
                    help="configuration file or directory (repeatable)")
    ap.add_argument("-c", dest="check", action="store_true",
                    help="check the configuration and exit (0 valid, 1 invalid)")
    ap.add_argument("-L", dest="local_peer", help="local peer name (peers sections)")
    ap.add_argument("-sf", dest="soft_finish", metavar="PID", type=int, nargs="+",
                    help="reload: take over from these processes (soft stop, tables handed over)")
    ap.add_argument("--metrics", metavar="[ADDR:]PORT",
                    help="serve Prometheus /metrics there (loopback when ADDR is omitted)")
    ap.add_argument("--runtime", choices=runtime.RUNTIMES, default="auto",
                    help="interpreter of the proxy: pypy (faster), cpython (with uvloop), "
                         "auto (pypy when installed; the default)")
    args = ap.parse_args(argv)
    if not args.check:
        # (a configuration check stays where it is: the same parser, a quicker start)
        problem = runtime.choose(args.runtime, argv)
        if problem is not None:
            print(f"[ALERT] {problem}", file=sys.stderr)
            return 1
    if args.check:
        try:
            _, warnings = load_config(args.file, args.local_peer)
        except ConfigError as e:
            print(f"[ALERT] {e}", file=sys.stderr)
            print("Fatal errors found in configuration.", file=sys.stderr)
            return 1
        except OSError as e:
            print(f"[ALERT] {e}", file=sys.stderr)
            return 1
        for w in warnings:
            print(f"[WARNING] {w}", file=sys.stderr)
        print("Configuration file is valid")
        return 0
    return runtime.run(_run(args))
