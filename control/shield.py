"""`edgestick shield`: run the XDP shield of a `shield` configuration section.

    edgestick shield -f FILE [-f FILE...] [--name NAME] [--netns NS]
    edgestick shield -f FILE [--name NAME] [--netns NS] --detach [--purge]
    edgestick shield -f FILE [--name NAME] --check

Start: compile bpf/ (control/xdp.py; a program of the same build pinned by an earlier run
is adopted instead), adopt the maps pinned in the section's pin-dir (bans, lists, sources
and counters survive a restart or a kill -9), write the file's thresholds and modes, add
its allow/deny entries, bind the runtime socket and the metrics endpoint, then attach to
every interface (an earlier edgestick program is replaced atomically).
SIGTERM/SIGINT stop the daemon and leave the program attached and the maps pinned;
SIGHUP re-reads the files and applies thresholds, modes and lists without a restart.
`--detach` removes the program with the mode it was attached with; `--purge` also
removes the pins. Exit status: 0 ok, 1 configuration error, 2 usage, 3 kernel/runtime
failure.

The daemon's state object, `ShieldDaemon`, answers the runtime commands (one method per
command, see control/runtime.py) and feeds the metrics collector (control/metrics.py).
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import heapq
import os
import signal
import sys
from concurrent.futures import ThreadPoolExecutor

from edgestick.cfgsyntax import ConfigError
from edgestick.control import config as shield_config
from edgestick.control.runtime import CommandError, RuntimeServer

EXIT_OK, EXIT_CONFIG, EXIT_USAGE, EXIT_RUNTIME = 0, 1, 2, 3
# `set threshold` name -> the xdp.ShieldConfig field it sets
THRESHOLD_FIELDS = {
    "conn_rate": "conn_rate_limit", "pkt_rate": "pkt_rate_limit", "byte_rate": "byte_rate_limit",
    "ban_conn_rate": "ban_conn_rate", "ban_pkt_rate": "ban_pkt_rate", "ban_byte_rate": "ban_byte_rate",
    "flood_guard": "new_sources_limit",
}
# What a reload (SIGHUP) cannot change in a running daemon: it takes a restart.
RESTART_FIELDS = ("name", "interfaces", "pin_dir", "table_size", "stats_socket", "metrics_bind",
                  "mirrors", "mirror_store", "escalations", "proxy_socket", "share_bans")
MAX_BAN_EXPANSION = 256        # `add ban <cidr>` bans each source of a range up to this many
BAN_SWEEP_S = 5.0              # how often expired bans are removed from the map


def log(msg: str) -> None:
    print(f"edgestick shield: {msg}", file=sys.stderr, flush=True)


def xdp_config(cfg: shield_config.ShieldConfig):
    """The program's config (control/xdp.py) for a parsed `shield` section."""
    from edgestick.control import xdp
    limits = {THRESHOLD_FIELDS[m]: v for m, v in cfg.drops.items()}
    limits.update({THRESHOLD_FIELDS["ban_" + m]: b.condition.value for m, b in cfg.bans.items()})
    limits[THRESHOLD_FIELDS["flood_guard"]] = cfg.flood_guard
    return xdp.ShieldConfig(period_ms=cfg.period_ms, mode=cfg.mode, malformed=cfg.malformed,
                            ipv6_prefix=cfg.ipv6_prefix,
                            ban_ttl_ms=cfg.ban_ttl_ms or xdp.ShieldConfig.ban_ttl_ms, **limits)


def _fmt_threshold(value: int | None) -> str:
    return "off" if value is None else str(value)


class ShieldDaemon:
    """A running shield: the xdp.Shield on its pins plus what the file said."""

    def __init__(self, cfg: shield_config.ShieldConfig, netns: str | None = None, loader=None):
        self.cfg, self.netns = cfg, netns
        self.loader = loader                # re-reads the files on SIGHUP (None: no reload)
        self.xdp = None                     # xdp.Shield once built
        self.attached: dict[str, str] = {}  # interface -> mode the kernel reports

    # -- life cycle --

    def build(self) -> None:
        """Compile and adopt the pins, then apply the file's config and lists."""
        from edgestick.control import xdp
        cfg = self.cfg
        # the pinned config stays until _set_config compares the IPv6 grouping
        self.xdp = xdp.Shield.build(cfg.pin_dir, None, sources_max=cfg.table_size)
        self._set_config(cfg)
        pinned = self.xdp.capacity()["sources"]
        if pinned != cfg.table_size:
            log(f"the pinned source table holds {pinned} entries, the file asks {cfg.table_size}: "
                "kept (run --detach --purge to resize)")
        self._apply_lists(cfg)

    def _set_config(self, cfg: shield_config.ShieldConfig) -> None:
        """Write the program's config; a new IPv6 prefix regroups the IPv6 state first."""
        for note in self.xdp.regroup_ipv6(xdp_config(cfg), MAX_BAN_EXPANSION):
            log(f"ipv6-prefix {cfg.ipv6_prefix}: {note}")

    def _apply_lists(self, cfg: shield_config.ShieldConfig) -> None:
        """Add the file's allow/deny entries; one the other list holds from an earlier run
        (or from the socket) moves, so the file's placement is what the program applies."""
        for kind, other in (("allow", "deny"), ("deny", "allow")):
            for net in getattr(cfg, kind):
                if self.xdp.list_del(other, str(net)):
                    log(f"{net}: moved from the {other} list to the {kind} list, as the file says")
                self.xdp.list_add(kind, str(net))

    def reload(self) -> None:
        """SIGHUP: re-read the files and apply, without a restart, what the program reads
        at run time: thresholds, modes, the table's period/expire/IPv6 prefix, and the
        lists (entries the previous file had and the new one dropped are removed; those
        added through the socket stay). What needs a restart is reported and kept. A
        file with an error changes nothing."""
        try:
            new = self.loader()
        except ConfigError as e:
            log(f"reload refused, the previous rules stay: {e}")
            return
        restart = [f for f in RESTART_FIELDS if getattr(new, f, None) != getattr(self.cfg, f, None)]
        if restart:
            log(f"reload: {', '.join(restart)} changed: applied at the next start")
            new = dataclasses.replace(new, **{f: getattr(self.cfg, f) for f in restart})
        for kind in ("allow", "deny"):
            for net in set(getattr(self.cfg, kind)) - set(getattr(new, kind)):
                self.xdp.list_del(kind, str(net))
        self._apply_lists(new)
        self._set_config(new)
        self.cfg = new
        log(f"reloaded shield '{new.name}'")

    def check_interfaces(self) -> None:
        """Before anything changes: every interface exists, and any XDP program on it is
        this shield's own (it uses the maps pinned in pin-dir), which the new program
        replaces in place. Another program is never replaced silently."""
        from edgestick.control import xdp
        ours = pinned_config_map_id(self.cfg.pin_dir)
        for iface in self.cfg.interfaces:
            mode, prog_id = xdp.xdp_attached(iface.name, self.netns)
            if mode is None:
                continue
            if ours is None or ours not in xdp.prog_info(prog_id)[1]:
                raise RuntimeError(f"{iface.name} already has XDP program {prog_id}, not this shield's: "
                                   "detach it first")
            if iface.mode != "auto" and mode != iface.mode:
                raise RuntimeError(f"{iface.name}: this shield's program is attached {mode}, the file "
                                   f"says {iface.mode}: run 'edgestick shield --detach' first")
            self.attached[iface.name] = mode

    def attach(self) -> None:
        """Attach, or replace atomically in the mode already in use (no gap)."""
        for iface in self.cfg.interfaces:
            mode = self.attached.get(iface.name) or iface.mode
            self.attached[iface.name] = self.xdp.attach(iface.name, mode, self.netns)
            log(f"{iface.name}: attached ({self.attached[iface.name]}), program {self.xdp.prog_id}")

    def sweep_bans(self) -> None:
        self.xdp.bans()                     # removes expired entries on the way

    def close(self) -> None:
        if self.xdp is not None:
            self.xdp.close()                # program and pins stay

    # -- helpers --

    def _ban_sources(self, net) -> list[str]:
        """The per-source keys a ban of `net` covers: an IPv4 address, an IPv6 prefix of
        the table's granularity, or each of those in a range of up to 256."""
        prefix = self.xdp.get_config().ipv6_prefix
        if net.version == 4:
            step = 32
        else:
            if net.prefixlen == 128:
                return [str(net.network_address)]
            if net.prefixlen > prefix:
                raise CommandError(f"IPv6 sources are grouped per /{prefix}: ban an address, "
                                   f"a /{prefix} or a wider range")
            step = prefix
        count = 1 << (step - net.prefixlen)
        if count > MAX_BAN_EXPANSION:
            raise CommandError(f"'{net}' covers {count} sources (at most {MAX_BAN_EXPANSION}): "
                               "use 'add deny' for a range")
        if net.version == 4:
            return [str(a) for a in (net if count > 1 else [net.network_address])]
        return [str(s) for s in net.subnets(new_prefix=step)]

    # -- runtime commands (control/runtime.py calls them by name) --

    def show_shield(self) -> str:
        from edgestick.control import xdp as xdpmod
        x, cfg = self.xdp, self.xdp.get_config()
        used = {"sources": x.source_count(), "bans": len(x.bans()),
                "allow": len(x.list_show("allow")), "deny": len(x.list_show("deny"))}
        cap = x.capacity()
        lines = [f"shield: {self.cfg.name}", f"mode: {cfg.mode}", f"malformed: {cfg.malformed}",
                 f"prog_id: {x.prog_id}", f"pin_dir: {self.cfg.pin_dir}"]
        for name, mode, prog_id in self.attachments():
            lines.append(f"interface: {name} attach={mode} prog_id={prog_id}")
        for name in ("sources", "bans", "allow", "deny"):
            lines.append(f"map: {name} used={used[name]} size={cap[name]}")
        counters = x.counters()
        for verdict in xdpmod.VERDICTS:
            for reason in xdpmod.REASONS:
                c = counters.get((verdict, reason))
                if c:
                    lines.append(f"counter: {verdict} reason={reason} packets={c.packets} bytes={c.bytes}")
        return "".join(f"{line}\n" for line in lines)

    def _fresh_entries(self):
        """(key bytes, value bytes) of every source seen within the table's expire. The
        map is read in batches (control/bridge.py's scanner: 64k entries a syscall, ~7x
        faster than a lookup per key); nothing is decoded here."""
        from edgestick.control import xdp
        from edgestick.control.bridge import BATCH, SourceScanner
        horizon = xdp.kernel_now_ns() - self.cfg.table_expire_ms * 1_000_000   # the program's clock
        scanner = SourceScanner(self.xdp)
        ks, vs = scanner.ksize, scanner.vsize
        seen_at = xdp.EsSource.last_seen_ns.offset
        for keys, values, count in scanner.scan(self.xdp.maps["sources"].max_entries + BATCH):
            kraw, vraw = keys.raw, values.raw
            for i in range(count):
                v = vraw[i * vs:(i + 1) * vs]
                if int.from_bytes(v[seen_at:seen_at + 8], "little") >= horizon:
                    yield kraw[i * ks:(i + 1) * ks], v

    def show_sources(self, top: int, by: str) -> str:
        from edgestick.control import xdp
        cfg = self.xdp.get_config()
        period, tick, now = cfg.period_ms, xdp.now_tick_ms(), xdp.kernel_now_ns()
        field = {"conn_rate": "conn", "pkt_rate": "pkt", "byte_rate": "bytes"}.get(by)
        at = getattr(xdp.EsSource, field or "drops").offset

        def value(raw: bytes) -> int:
            if field is None:
                return int.from_bytes(raw[at:at + 8], "little")
            return xdp.read_freq(xdp.EsFreq.from_buffer_copy(raw, at), period, tick)

        tracked = 0
        ranked = []
        for key, raw in self._fresh_entries():
            tracked += 1
            ranked.append((value(raw), key, raw))
        # Only the top n are decoded and printed; ties in address-key order.
        best = heapq.nsmallest(top, ranked, key=lambda t: (-t[0], t[1]))
        lines = [f"# sources: tracked={tracked} by={by} top={top} period={period}\n"]
        for _, key, raw in best:
            src = xdp.EsSource.from_buffer_copy(raw)
            rates = [xdp.read_freq(f, period, tick) for f in (src.conn, src.pkt, src.bytes)]
            lines.append(f"key={xdp.source_str(xdp.EsAddr.from_buffer_copy(key), cfg.ipv6_prefix)} "
                         f"conn_rate({period})={rates[0]} pkt_rate({period})={rates[1]} "
                         f"byte_rate({period})={rates[2]} drops={src.drops} "
                         f"seen={max(0, now - src.last_seen_ns) // 1_000_000}\n")
        return "".join(lines)

    def show_bans(self) -> str:
        bans = sorted(self.xdp.bans(), key=lambda b: b.source)
        lines = [f"# bans: active={len(bans)}\n"]
        for b in bans:
            exp = "-" if b.remaining_ms is None else str(b.remaining_ms)
            lines.append(f"key={b.source} exp={exp} reason={b.why}\n")
        return "".join(lines)

    def show_rules(self) -> str:
        cfg = self.xdp.get_config()
        lines = [f"mode: {cfg.mode}", f"malformed: {cfg.malformed}", f"period: {cfg.period_ms}",
                 f"ipv6-prefix: {cfg.ipv6_prefix}", f"ban-ttl: {cfg.ban_ttl_ms}"]
        for name, field in THRESHOLD_FIELDS.items():
            lines.append(f"threshold {name}: {_fmt_threshold(getattr(cfg, field))}")
        for kind in ("allow", "deny"):
            lines += [f"{kind}: {cidr}" for cidr in self.xdp.list_show(kind)]
        return "".join(f"{line}\n" for line in lines)

    def add_ban(self, network, ttl_ms: int | None) -> str:
        sources = self._ban_sources(network)       # validated before anything changes
        for source in sources:
            self.xdp.add_ban(source, ttl_ms)
        return ""

    def del_ban(self, network) -> str:
        removed = sum(self.xdp.del_ban(s) for s in self._ban_sources(network))
        if not removed:
            raise CommandError(f"'{network}' is not banned")
        return ""

    def _list_change(self, kind: str, add: bool, network) -> str:
        if add:
            other = "deny" if kind == "allow" else "allow"
            if str(network) in self.xdp.list_show(other):
                raise CommandError(f"'{network}' is in the {other} list: delete it there first")
            self.xdp.list_add(kind, str(network))
        elif not self.xdp.list_del(kind, str(network)):
            raise CommandError(f"'{network}' is not in the {kind} list")
        return ""

    def add_allow(self, network) -> str:
        return self._list_change("allow", True, network)

    def del_allow(self, network) -> str:
        return self._list_change("allow", False, network)

    def add_deny(self, network) -> str:
        return self._list_change("deny", True, network)

    def del_deny(self, network) -> str:
        return self._list_change("deny", False, network)

    def set_threshold(self, name: str, value: int | None) -> str:
        cfg = self.xdp.get_config()
        metric = name.removeprefix("ban_")
        if metric in shield_config.METRICS:
            drop = value if name == metric else getattr(cfg, THRESHOLD_FIELDS[metric])
            ban = value if name != metric else getattr(cfg, THRESHOLD_FIELDS["ban_" + metric])
            if drop is not None and ban is not None and ban <= drop:
                raise CommandError(f"ban threshold {ban} on '{metric}' must be above the drop threshold {drop}")
        self.xdp.update_config(**{THRESHOLD_FIELDS[name]: value})
        return ""

    def set_mode(self, mode: str) -> str:
        self.xdp.update_config(mode=mode)
        return ""

    # -- metrics (control/metrics.py) --

    def counters(self) -> dict[tuple[str, str], tuple[int, int]]:
        return {k: (c.packets, c.bytes) for k, c in self.xdp.counters().items()}

    def bans_active(self) -> int:
        return len(self.xdp.bans())

    def sources_tracked(self) -> int:
        return sum(1 for _ in self._fresh_entries())

    def capacities(self) -> dict[str, int]:
        cap = self.xdp.capacity()
        return {name: cap[name] for name in ("sources", "bans", "allow", "deny")}

    def attachments(self) -> list[tuple[str, str, int]]:
        """(interface, mode, program id) as the kernel reports them now."""
        from edgestick.control import xdp
        out = []
        for iface in self.cfg.interfaces:
            try:
                mode, prog_id = xdp.xdp_attached(iface.name, self.netns)
            except Exception:                  # interface gone, netlink error: report "none"
                mode, prog_id = None, 0
            out.append((iface.name, mode or "none", prog_id))
        return out


# --- the commands -----------------------------------------------------------------------

async def _serve(daemon: ShieldDaemon) -> None:
    cfg = daemon.cfg
    stop, wake, hup = asyncio.Event(), asyncio.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(event: asyncio.Event) -> None:
        event.set()
        wake.set()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, stop)
    if daemon.loader is not None:
        loop.add_signal_handler(signal.SIGHUP, on_signal, hup)
    # One worker for everything touching the shield: commands, attach, the ban sweep.
    # pyroute2's sync API runs its own event loop, so netlink calls cannot run on this one.
    worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shield")
    runtime = None
    metrics_server = None
    bridge = bridge_task = None
    try:
        if cfg.mirrors or cfg.escalations or cfg.share_bans:   # control/bridge.py
            from edgestick.control.bridge import Bridge
            bridge = Bridge(cfg, daemon.xdp)
        if cfg.stats_socket is not None:
            sock = cfg.stats_socket
            runtime = RuntimeServer(daemon, sock.path, sock.mode, sock.level, executor=worker)
            await runtime.start()
        if cfg.metrics_bind is not None:
            from edgestick.control import metrics
            metrics_server, _ = metrics.serve(daemon, *cfg.metrics_bind)
        await loop.run_in_executor(worker, daemon.attach)
        log(f"shield '{cfg.name}' running: program {daemon.xdp.prog_id}, "
            f"socket {cfg.stats_socket.path if cfg.stats_socket else '-'}, "
            f"metrics {'%s:%d' % cfg.metrics_bind if cfg.metrics_bind else '-'}")
        if bridge is not None:                 # its cycles run in their own thread
            bridge_task = asyncio.create_task(bridge.run(stop))
        while not stop.is_set():
            try:
                await asyncio.wait_for(wake.wait(), BAN_SWEEP_S)
                task = daemon.reload if hup.is_set() and not stop.is_set() else None
            except asyncio.TimeoutError:
                task = daemon.sweep_bans
            wake.clear()
            hup.clear()
            if task is not None:
                try:                           # housekeeping must not end protection
                    await loop.run_in_executor(worker, task)
                except Exception as e:
                    log(f"{task.__name__} failed: {type(e).__name__}: {e}")
    finally:
        if bridge_task is not None:
            bridge_task.cancel()
            await asyncio.gather(bridge_task, return_exceptions=True)
        if metrics_server is not None:
            metrics_server.shutdown()
            metrics_server.server_close()
        if runtime is not None:
            await runtime.close()
        worker.shutdown(wait=True)
    log("stopped; the program stays attached and the maps pinned")


def _forget_signal_wakeup() -> None:
    """In a forked child (pyroute2 forks to enter a network namespace, then stops the
    child with SIGTERM): without this, the child's signals are written to the wakeup fd
    it shares with the daemon's event loop, and the daemon stops as if signalled."""
    try:
        signal.set_wakeup_fd(-1)
    except ValueError:
        pass


def run(cfg: shield_config.ShieldConfig, netns: str | None, loader=None) -> int:
    import logging

    from pyroute2.netlink.exceptions import NetlinkError
    # The bridge (mirror/escalation) reports through logging; same stream and prefix.
    logging.basicConfig(level=logging.INFO, format="edgestick shield: %(message)s", stream=sys.stderr)
    os.register_at_fork(after_in_child=_forget_signal_wakeup)
    daemon = ShieldDaemon(cfg, netns, loader)
    try:
        daemon.check_interfaces()
        if cfg.stats_socket is not None:     # before compiling: a live daemon keeps its socket
            RuntimeServer.check_free(cfg.stats_socket.path)
        daemon.build()
        asyncio.run(_serve(daemon))
    except (ValueError, RuntimeError, OSError, NetlinkError) as e:
        log(str(e))
        return EXIT_RUNTIME
    finally:
        daemon.close()
    return EXIT_OK


def pinned_config_map_id(pin_dir: str) -> int | None:
    """Id of the shield's pinned config map, or None when nothing is pinned there. The
    program that uses this map is this shield's, whichever build of it is attached."""
    from edgestick.control import xdp
    path = os.path.join(pin_dir, "config")
    if not os.path.exists(path):
        return None
    m = xdp.BpfMap(path, *xdp.MAPS["config"])
    try:
        return m.id
    finally:
        m.close()


def detach(cfg: shield_config.ShieldConfig, netns: str | None, purge: bool) -> int:
    """Detach from every listed interface with the mode it was attached with. With the
    shield's pins, only a program using its maps; without (lost pins), only an edgestick
    program: another tool's XDP program is never removed."""
    from pyroute2.netlink.exceptions import NetlinkError

    from edgestick.control import xdp
    ours = pinned_config_map_id(cfg.pin_dir)
    status = EXIT_OK
    for iface in cfg.interfaces:
        try:
            mode, prog_id = xdp.xdp_attached(iface.name, netns)
            if mode is None:
                log(f"{iface.name}: nothing attached")
                continue
            name, maps = xdp.prog_info(prog_id)
            if ours is not None and ours not in maps:
                log(f"{iface.name}: program {prog_id} is not this shield's (it does not use "
                    f"{cfg.pin_dir}): left alone")
                status = EXIT_RUNTIME
                continue
            if ours is None and name != xdp.PROG_FUNC[:15]:
                log(f"{iface.name}: program {prog_id} ('{name}') is not an edgestick program: left alone")
                status = EXIT_RUNTIME
                continue
            if iface.mode != "auto" and mode != iface.mode:
                log(f"{iface.name}: attached {mode}, the file says {iface.mode}: detaching as {mode}")
            xdp.xdp_detach(iface.name, netns)
            log(f"{iface.name}: detached ({mode})")
        except (ValueError, OSError, NetlinkError) as e:
            log(f"{iface.name}: {e}")
            status = EXIT_RUNTIME
    if purge and status == EXIT_OK:
        import shutil
        shutil.rmtree(cfg.pin_dir, ignore_errors=True)
        log(f"removed {cfg.pin_dir}")
    return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="edgestick shield",
                                     description="Run, or detach, the XDP shield of a configuration.")
    parser.add_argument("-f", dest="files", action="append", required=True, metavar="FILE",
                        help="configuration file (repeatable, read in order)")
    parser.add_argument("--name", help="the shield section to use when the files hold several")
    parser.add_argument("--netns", help="network namespace of the interfaces (default: this one)")
    parser.add_argument("--detach", action="store_true", help="detach the program and exit")
    parser.add_argument("--purge", action="store_true", help="with --detach: also remove the pinned maps")
    parser.add_argument("--check", action="store_true", help="validate the configuration and exit")
    try:
        args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    except SystemExit as e:
        return EXIT_USAGE if e.code else EXIT_OK
    if args.purge and not args.detach:
        log("--purge only goes with --detach")
        return EXIT_USAGE
    try:
        cfg = shield_config.load(args.files, args.name)
    except ConfigError as e:
        print(str(e), file=sys.stderr, flush=True)
        return EXIT_CONFIG
    if args.check:
        print(f"Configuration file is valid (shield '{cfg.name}')")
        return EXIT_OK
    if args.netns and not os.path.exists(f"/run/netns/{args.netns}"):
        log(f"no network namespace '{args.netns}'")
        return EXIT_RUNTIME
    if args.detach:
        return detach(cfg, args.netns, args.purge)
    return run(cfg, args.netns, lambda: shield_config.load(args.files, args.name))
