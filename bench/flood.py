"""A legitimate client's goodput through the edge while a spoofed flood hits it.

    python -m bench.flood [--seconds S] [--pps N] [--concurrency C] [--targets ...] [--json]
    (root; ~2-3 minutes with the defaults: 4 s phases, 1 Mpps, 16 client connections)

One lab (`edgestick.lab`: attacker, client, edge, backend namespaces around a bridge), one
backend (`edgestick.lab.backend`), three edges measured one after the other in the same run:

  (a) haproxy          HAProxy 2.6, `nbthread 1`, `tcp-request connection track-sc0 src`
                       and `tcp-request connection reject if { sc_conn_rate(0) gt N }`
  (b) edgestick        `edgestick proxy`, the same configuration, no shield
  (c) edgestick+shield the same proxy plus `edgestick shield` on the outside interface
                       (flood guard and per-source drop thresholds)

For each edge, six phases: the legitimate client (`lab.scenarios.legit`, unpaced, from the
client namespace) with keep-alive and with a new connection per request, with no attack,
under a spoofed SYN flood and under a spoofed UDP flood. Each edge's no-attack goodput is
its own base.

The flood is bench/xdp.py's generator (an XDP program replayed through BPF_PROG_RUN in
live-frames mode on the attacker's interface, rewriting the source of one frame per packet
over the lab's 16,384 spoofing addresses 198.18.64.0/18, TCP/UDP checksums kept valid),
paced to --pps in calls of a quarter second's frames, at most 262,144 (a call has a fixed
~25 ms set-up, so the flood comes in ~0.2 s bursts at 1 Mpps). Its receive work runs in NET_RX softirq on the CPU of the
generating thread, which the scheduler places like any other thread.

Three adjustments make the lab behave like an edge host on a real network:
- the switch port forwards the flood at XDP straight to the edge's port (a real switch
  costs the edge nothing; the bridge's skb path would eat more of the two CPUs than the
  edge's own work); the client's traffic still crosses the bridge;
- the client's packets and the flood share the edge interface's one receive ring (256
  frames on veth), as on a NIC, for every target (GRO on the edge interface, no TSO on
  the switch port: otherwise veth hands the client's packets to the backlog queue unless
  an XDP program is attached, and only (c) would share the ring);
- the edge has a route back to the spoofed sources, so it answers them as an edge on the
  internet does (SYN-ACKs, SYN cookies once the queue is full, rate-limited ICMP); the
  answers are dropped on the way out (netfilter OUTPUT). Without a route the kernel would
  drop each spoofed SYN at the route lookup, far cheaper than the real thing.

Reported per phase: offered = frames/s the generator put on the attacker's wire; edge rx
= packets/s the edge interface received and what its ring dropped; for (c) what the XDP
program counted by verdict and reason (the shield's counters); the client's TCP
retransmissions and the SYN cookies the edge sent; where the CPU went: CPU seconds (user
+ system, /proc/<pid>) of the proxy, the shield daemon, the backend, the client (wait4)
and the generating thread, and the machine's softirq / user / system / idle seconds
(/proc/stat). The machine is shared: other work shows as user time no process here owns.

Results: a table on stdout and bench/results/flood.json. Processes, namespaces and XDP
programs are removed in `finally`; the temporary folder of configurations and logs too,
unless a step failed (its path is in the error).
"""
from __future__ import annotations

import argparse
import ctypes
import errno
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from pyroute2 import IPRoute

from bench.xdp import build_generator
from edgestick.control import xdp
from edgestick.control.kernel_headers import ensure_bcc_kernel_source
from edgestick.control.runtime_client import RuntimeApiError, RuntimeClient
from edgestick.lab import traffic
from edgestick.lab.scenarios import in_netns, parse_result, scenario_argv
from edgestick.lab.topology import SPOOF_NET4, Lab

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "flood.json"
HAPROXY = "/usr/sbin/haproxy"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PY = sys.executable

EDGE_ADDR = Lab.addr4("edge")
BACKEND_BIND = "198.19.0.2:8080"
SPOOF_GATEWAY = "198.18.0.254"       # the edge's route back to the spoofed sources
SPOOF_BITS = 14                      # 2^14 sources: the whole of SPOOF_NET4 (a /18)
# The generator writes 198.18.64.0 + n; that base must be the lab's spoofing range.
assert str(SPOOF_NET4.network_address) == "198.18.64.0" and SPOOF_NET4.prefixlen == 32 - SPOOF_BITS
BATCH = 262144                       # frames per BPF_PROG_RUN call at most (a call costs ~25 ms + the frames)
# frames per flush inside one call (kernel default 64): smaller bursts overflow the edge's
# 256-slot veth ring less often (measured: 25k instead of 186k ring drops in a phase)
KERNEL_BATCH = 16
CONN_RATE_LIMIT = 50_000             # above what the one benchmark client opens per second

PROXY_CFG = """\
global
    nbthread 1
    maxconn 4000

defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    timeout http-keep-alive 30s

frontend http_front
    bind {addr}:80 backlog 1024
    stick-table type ip size 100k expire 30s store conn_rate(1s)
    tcp-request connection track-sc0 src
    tcp-request connection reject if {{ sc_conn_rate(0) gt {limit} }}
    default_backend app

backend app
    server s1 {backend}
"""

# The flood guard admits at most 100 new sources per CPU per second while sources keep
# appearing faster than that: a spread flood is dropped without creating state, the
# client (tracked before the flood) is judged by its own rates. The per-source limits sit
# above what one benchmark client sends (a few thousand requests/s), so they catch the
# few spoofed sources the guard admitted only when those send more than a real client.
SHIELD_CFG = """\
shield bench
    interface {ifname}
    table type ip size 64k expire 60s store conn_rate(1s),pkt_rate(1s),byte_rate(1s)
    drop if {{ conn_rate gt {limit} }}
    drop if {{ pkt_rate gt 100000 }}
    flood-guard 100
    pin-dir {pin_dir}
    stats socket {sock} mode 600 level admin
"""

SWITCH_PORT = r"""
#include <uapi/linux/bpf.h>
int forward(struct xdp_md *ctx) { return bpf_redirect(EDGE_PORT, 0); }
"""

TARGETS = ("haproxy", "edgestick", "edgestick+shield")
MODES = (("keep-alive", False), ("new-conn", True))
FLOODS = ("none", "syn", "udp")


# ---- /proc readings -------------------------------------------------------------------

def _stat_cpu(path: str) -> float:
    fields = Path(path).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def tree_cpu(pid: int) -> float:
    """utime + stime of a process and its live descendants, seconds."""
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            total += _stat_cpu(f"/proc/{p}/stat")
            for task in os.listdir(f"/proc/{p}/task"):
                kids = Path(f"/proc/{p}/task/{task}/children").read_text().split()
                todo += [int(k) for k in kids]
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total


def thread_cpu(tid: int) -> float:
    try:
        return _stat_cpu(f"/proc/self/task/{tid}/stat")
    except FileNotFoundError:
        return 0.0


STAT_COLUMNS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


def machine_cpu() -> dict[str, float]:
    """The all-CPU line of /proc/stat, seconds per column."""
    with open("/proc/stat") as f:
        fields = f.readline().split()[1:1 + len(STAT_COLUMNS)]
    return {k: int(v) / CLK_TCK for k, v in zip(STAT_COLUMNS, fields)}


def if_counters(ns: str, ifname: str) -> dict[str, int]:
    with IPRoute(netns=ns, flags=0) as ipr:
        link = ipr.link("get", index=ipr.link_lookup(ifname=ifname)[0])[0]
        s = link.get("IFLA_STATS64")
        return {k: s[k] for k in ("rx_packets", "rx_dropped", "tx_packets", "tx_dropped")}


NETSTAT_KEYS = {"client": ("Tcp:RetransSegs", "TcpExt:TCPSynRetrans"),
                "edge": ("TcpExt:SyncookiesSent", "TcpExt:ListenDrops", "TcpExt:TCPReqQFullDoCookies",
                         "Tcp:RetransSegs")}


def netstat(lab: Lab, host: str) -> dict[str, int]:
    """The TCP counters of NETSTAT_KEYS[host] in that namespace (/proc/net/snmp, netstat)."""
    text = lab.run(host, ["cat", "/proc/net/snmp", "/proc/net/netstat"]).stdout.splitlines()
    values = {}
    for names, nums in zip(text[::2], text[1::2]):
        proto = names.split(":")[0]
        values.update({f"{proto}:{k}": int(v) for k, v in zip(names.split()[1:], nums.split()[1:])
                       if v.lstrip("-").isdigit()})
    return {k: values.get(k, 0) for k in NETSTAT_KEYS[host]}


def shield_counters(sock: str) -> dict[str, int]:
    """'verdict/reason' -> packets, from the shield's `show shield`."""
    out: dict[str, int] = {}
    try:
        text = RuntimeClient(sock, timeout=3).command("show shield")
    except RuntimeApiError:
        return out
    for line in text.splitlines():
        if line.startswith("counter: "):
            words = line.split()
            kv = dict(w.split("=", 1) for w in words[2:])
            out[f"{words[1]}/{kv.get('reason', '-')}"] = int(kv["packets"])
    return out


# ---- the flood: bench/xdp.py's generator on the attacker's interface --------------------

_libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNET = 0x40000000


def _enter_netns(name: str) -> None:
    """setns() for the calling thread only."""
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {name}")
    finally:
        os.close(fd)


class Flood:
    """Spoofed SYN or UDP frames at a paced rate from the attacker namespace, bounded by
    a count and a deadline, in a thread (so its CPU time is readable per thread)."""

    L4_CSUM_AT = {"syn": 16, "udp": 6}

    def __init__(self, lab: Lab):
        self.lab = lab
        self.attacker_ns = lab.ns("attacker")
        src_mac, dst_mac = lab.mac("attacker"), lab.mac("edge")
        self.frames, self.programs = {}, {}
        for kind in FLOODS[1:]:
            # one frame per kind, source = the generator's base address 198.18.64.0
            self.frames[kind] = traffic.build_frames(kind, [str(SPOOF_NET4.network_address)], EDGE_ADDR,
                                                     src_mac, dst_mac, dport=80, seed=7)[0]
            self.programs[kind] = build_generator(False, SPOOF_BITS, "XDP_TX", self.L4_CSUM_AT[kind])
        with IPRoute(netns=self.attacker_ns, flags=0) as ipr:
            self.ifindex = ipr.link_lookup(ifname=lab.ifname("attacker"))[0]
        # The switch port forwards the frames at XDP straight to the edge's port (a real
        # switch costs the edge host nothing; the bridge's skb path would cost the shared
        # CPUs more than the edge's own work). XDP_TX into a veth needs an XDP program on
        # the receiving end anyway. The edge's outside interface receives redirected
        # frames only with NAPI on: GRO (any target) or an XDP program (the shield).
        from bcc import BPF
        with IPRoute(netns=lab.ns("switch"), flags=0) as ipr:
            edge_port = ipr.link_lookup(ifname="p-edge")[0]
        self.switch = BPF(text=SWITCH_PORT, cflags=[f"-DEDGE_PORT={edge_port}"])
        self._switch_port_xdp(self.switch.load_func("forward", BPF.XDP).fd)
        lab.run("edge", ["ethtool", "-K", lab.edge_if, "gro", "on"])
        # The client's packets must share that receive ring with the flood, as on a real
        # NIC, whatever the target: veth queues a forwarded skb on the ring only when XDP
        # is attached or the sender does no TSO; otherwise they would take the backlog
        # queue when no XDP program is on the edge, and only (c) would share the ring.
        lab.run("switch", ["ethtool", "-K", "p-edge", "tso", "off"])

    def _switch_port_xdp(self, fd: int) -> None:
        with IPRoute(netns=self.lab.ns("switch"), flags=0) as ipr:
            idx = ipr.link_lookup(ifname="p-attacker")[0]
            ipr.link("set", index=idx, xdp={"attrs": [("IFLA_XDP_FD", fd),
                                                      ("IFLA_XDP_FLAGS", xdp.XDP_FLAGS_DRV_MODE)]})

    def start(self, kind: str, pps: float, seconds: float, threads: int = 1) -> None:
        """Flood in `threads` threads, each paced to pps/threads: each BPF_PROG_RUN call
        has a fixed set-up cost (~25 ms here, sleeping, not CPU), which another thread's
        call overlaps, and the frames' softirq work lands where each thread runs."""
        self.stop_flag = threading.Event()
        self.error = None
        self.threads = [_GenThread(self, kind, pps / threads, seconds) for _ in range(threads)]
        for t in self.threads:
            t.start()
        for t in self.threads:
            t.ready.wait(5)

    @property
    def sent(self) -> int:
        return sum(t.sent for t in getattr(self, "threads", ()))

    def cpu(self) -> float:
        return sum(thread_cpu(t.tid) for t in getattr(self, "threads", ()) if t.tid)

    def stop(self) -> None:
        threads = getattr(self, "threads", [])
        if not threads:
            return
        self.stop_flag.set()
        for t in threads:
            t.join(10)
        errors = [t.error for t in threads if t.error is not None]
        if errors:
            raise RuntimeError(f"flood generator failed: {errors[0]}")


class _GenThread(threading.Thread):
    def __init__(self, flood: Flood, kind: str, pps: float, seconds: float):
        super().__init__(daemon=True)
        self.flood, self.kind, self.pps, self.seconds = flood, kind, pps, seconds
        self.sent, self.tid, self.error = 0, 0, None
        self.ready = threading.Event()

    def run(self) -> None:
        f = self.flood
        try:
            self.tid = threading.get_native_id()
            _enter_netns(f.attacker_ns)                # this thread only, until it ends
            _, gen_fn, _, _ = f.programs[self.kind]
            frame = f.frames[self.kind]
            ctx = xdp.XdpMd(data=0, data_end=len(frame), ingress_ifindex=f.ifindex)
            batch = max(4096, min(BATCH, int(self.pps / 4)))   # at most 1/4 s of frames a call
            limit = int(self.pps * self.seconds * 1.1) + batch   # bounded by count and by time
            t0 = time.monotonic()
            deadline = t0 + self.seconds
            self.ready.set()
            while self.sent < limit and not f.stop_flag.is_set():
                now = time.monotonic()
                if now >= deadline:
                    break
                ahead = t0 + self.sent / self.pps - now
                if ahead > 0:
                    time.sleep(min(ahead, deadline - now))
                    continue
                try:
                    xdp.prog_test_run(gen_fn.fd, frame, repeat=batch, batch_size=KERNEL_BATCH,
                                      flags=xdp.BPF_F_TEST_XDP_LIVE_FRAMES, ctx=ctx)
                except OSError as e:
                    if e.errno != errno.EINTR:  # a signal cut the run short: pace as if
                        raise                   # it ran, the wire counters tell the truth
                self.sent += batch
        except BaseException as e:                     # reported by Flood.stop()
            self.error = e
        finally:
            self.ready.set()


# ---- the edges ----------------------------------------------------------------------------

class Edge:
    """One target: its processes in the edge namespace, started and stopped."""

    def __init__(self, lab: Lab, target: str, workdir: Path):
        self.lab, self.target, self.workdir = lab, target, workdir
        self.procs: dict[str, subprocess.Popen] = {}
        self.shield_sock = str(workdir / "shield.sock")
        self.shield_cfg = workdir / "shield.cfg"

    def start(self) -> None:
        cfg = self.workdir / f"{self.target}.cfg"
        cfg.write_text(PROXY_CFG.format(addr=EDGE_ADDR, limit=CONN_RATE_LIMIT, backend=BACKEND_BIND))
        if self.target == "haproxy":
            argv = [HAPROXY, "-db", "-f", str(cfg)]
        else:
            argv = [PY, "-m", "edgestick", "proxy", "-f", str(cfg)]
        self.procs["proxy"] = self._popen(argv, f"{self.target}.log")
        if self.target == "edgestick+shield":
            self.shield_cfg.write_text(SHIELD_CFG.format(
                ifname=self.lab.edge_if, limit=CONN_RATE_LIMIT,
                pin_dir=self.lab.pin_dir / "shield", sock=self.shield_sock))
            self.procs["shield"] = self._popen(
                [PY, "-m", "edgestick", "shield", "-f", str(self.shield_cfg)], "shield.log")
            self._wait(lambda: "interface: " in _show_shield(self.shield_sock), "the shield to attach")
        self._wait(self._answers, f"{self.target} to listen on {EDGE_ADDR}:80")

    def _popen(self, argv: list[str], log: str) -> subprocess.Popen:
        with open(self.workdir / log, "wb") as out:
            return self.lab.popen("edge", argv, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)

    def _answers(self) -> bool:
        """One request from the client namespace gets a 200."""
        with in_netns(self.lab.ns("client")):
            try:
                s = socket.create_connection((EDGE_ADDR, 80), 0.5)
            except OSError:
                return False
        with s:
            s.settimeout(2)
            try:
                s.sendall(b"GET / HTTP/1.0\r\n\r\n")
                return s.recv(100).startswith(b"HTTP/1.1 200")
            except OSError:
                return False

    def _wait(self, ready, what: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, p in self.procs.items():
                if p.poll() is not None:
                    raise RuntimeError(f"{self.target}: {name} exited ({p.returncode}); "
                                       f"see {self.workdir}")
            if ready():
                return
            time.sleep(0.2)
        raise TimeoutError(f"waited {timeout:.0f}s for {what}")

    def pids(self) -> dict[str, int]:
        return {name: p.pid for name, p in self.procs.items()}

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.terminate()
        for p in self.procs.values():
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if "shield" in self.procs:              # SIGTERM leaves XDP attached on purpose
            self.lab.run("edge", [PY, "-m", "edgestick", "shield", "-f", str(self.shield_cfg),
                                  "--detach", "--purge"], check=False, cwd=ROOT)
        self.procs.clear()


def _show_shield(sock: str) -> str:
    try:
        return RuntimeClient(sock, timeout=2).command("show shield")
    except (RuntimeApiError, ValueError):
        return ""


# ---- one phase -------------------------------------------------------------------------

def run_client(lab: Lab, keepalive_new: bool, seconds: float, concurrency: int) -> tuple[dict, float]:
    """The legitimate client for `seconds`; (its result, its CPU seconds from wait4)."""
    argv = scenario_argv("legit", f"{EDGE_ADDR}:80", count=10_000_000, duration=seconds,
                         rate=0, concurrency=concurrency, new_connections=keepalive_new)
    with tempfile.TemporaryFile() as err:
        proc = lab.popen("client", argv, stdout=subprocess.PIPE, stderr=err, cwd=ROOT)
        out = proc.stdout.read().decode()
        _, status, usage = os.wait4(proc.pid, 0)      # wait4: the client's own CPU time
        proc.returncode = os.waitstatus_to_exitcode(status)
        try:
            result = parse_result(out).to_dict()
        except ValueError:
            err.seek(0)
            raise RuntimeError(f"client failed ({proc.returncode}): {err.read().decode()[-2000:]}")
    return result, usage.ru_utime + usage.ru_stime


def phase(lab: Lab, edge: Edge, flood: Flood, backend_pid: int, kind: str, new_conn: bool,
          args) -> dict:
    flooding = kind != "none"
    pids = edge.pids()

    def snapshot() -> dict:
        return {"t": time.monotonic(), "cpu": machine_cpu(),
                "procs": {n: tree_cpu(p) for n, p in pids.items()}, "backend": tree_cpu(backend_pid),
                "gen": flood.cpu() if flooding else 0.0, "sent": flood.sent if flooding else 0,
                "edge_if": if_counters(lab.ns("edge"), lab.edge_if),
                "attacker_if": if_counters(lab.ns("attacker"), lab.ifname("attacker")),
                "xdp": shield_counters(edge.shield_sock) if "shield" in pids else {},
                "tcp": {h: netstat(lab, h) for h in NETSTAT_KEYS}}

    if flooding:       # bounded at the client's time + its worst case; stopped when it ends
        flood.start(kind, args.pps, args.seconds + 5, args.gen_threads)
        time.sleep(0.5)                            # the flood at its rate (guard engaged)
    try:
        before = snapshot()
        client, client_cpu = run_client(lab, new_conn, args.seconds, args.concurrency)
        after = snapshot()
    finally:
        if flooding:
            flood.stop()
    time.sleep(0.5)                                # the edge's queues drain between phases

    wall = after["t"] - before["t"]
    delta = lambda key, k: after[key][k] - before[key][k]  # noqa: E731
    procs = {n: round(delta("procs", n), 2) for n in pids}
    procs.update(backend=round(after["backend"] - before["backend"], 2), client=round(client_cpu, 2),
                 generator=round(after["gen"] - before["gen"], 2))
    ok, seconds = client.get("ok", 0), client["seconds"]
    return {
        "target": edge.target, "mode": "new-conn" if new_conn else "keep-alive", "flood": kind,
        "seconds": round(seconds, 2), "ok": ok, "sent": client["sent"],
        "goodput": round(ok / seconds, 1) if seconds else 0.0,
        "success_rate": client.get("success_rate", 0.0), "errors": client.get("errors", {}),
        "p50_ms": client["latency_ms"].get("p50"), "p99_ms": client["latency_ms"].get("p99"),
        "max_ms": client["latency_ms"].get("max"),
        # what the generator put on the attacker's wire (sent + refused by a full ring)
        "offered_pps": round((delta("attacker_if", "tx_packets") + delta("attacker_if", "tx_dropped")) / wall),
        "generator_pps": round((after["sent"] - before["sent"]) / wall),
        "edge_rx_pps": round(delta("edge_if", "rx_packets") / wall),
        "edge_rx_dropped": delta("edge_if", "rx_dropped"),
        "xdp_counted": {k: v - before["xdp"].get(k, 0) for k, v in after["xdp"].items()
                        if v != before["xdp"].get(k, 0)},
        "tcp": {h: {k: v - before["tcp"][h][k] for k, v in after["tcp"][h].items()} for h in NETSTAT_KEYS},
        "cpu_s": {k: round(delta("cpu", k), 2) for k in ("user", "system", "softirq", "idle")},
        "proc_cpu_s": procs, "wall_s": round(wall, 2),
    }


# ---- the whole run -----------------------------------------------------------------------

def bench(args) -> dict:
    ensure_bcc_kernel_source()
    lab = Lab.create()
    workdir = Path(tempfile.mkdtemp(prefix=f"edgestick-flood-{lab.prefix}-"))
    edge = flood = None
    rows: list[dict] = []
    try:
        with open(workdir / "backend.log", "wb") as log:
            backend = lab.popen("backend", [PY, "-m", "edgestick.lab.backend", "--bind", BACKEND_BIND],
                                stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        # The client opens thousands of connections a second and closes first: let it
        # reuse its TIME_WAIT ports, as the edge towards the backend (per namespace).
        for host in ("client", "edge"):
            lab.run(host, ["sysctl", "-q", "-w", "net.ipv4.tcp_tw_reuse=1",
                           "net.ipv4.ip_local_port_range=1024 65000"])
        # An edge on the internet has a route back to every source, so it answers spoofed
        # SYNs (SYN-ACKs, cookies once the SYN queue is full) and UDP (ICMP, rate-limited).
        # The lab's edge has none and would drop each spoofed SYN at the route lookup, far
        # cheaper than the real thing. So: a route to the spoofing range through a gateway
        # on the outside LAN, and the answers dropped on the way out (netfilter OUTPUT)
        # once the edge has done the work of making them.
        lab.run("edge", ["ip", "route", "add", str(SPOOF_NET4), "via", SPOOF_GATEWAY])
        lab.run("edge", ["ip", "neigh", "add", SPOOF_GATEWAY, "lladdr", "02:00:00:00:00:fe",
                         "dev", lab.edge_if, "nud", "permanent"])
        lab.run("edge", ["iptables", "-A", "OUTPUT", "-d", str(SPOOF_NET4), "-j", "DROP"])
        flood = Flood(lab)
        for target in args.targets:
            edge = Edge(lab, target, workdir)
            edge.start()
            try:
                for kind in FLOODS:
                    for _, new_conn in MODES:
                        row = phase(lab, edge, flood, backend.pid, kind, new_conn, args)
                        rows.append(row)
                        print(_row_line(row), file=sys.stderr, flush=True)
            finally:
                edge.stop()
                edge = None
    finally:
        if flood is not None:
            flood.stop()
        if edge is not None:
            edge.stop()
        lab.destroy()
    shutil.rmtree(workdir, ignore_errors=True)      # kept (its logs) only when a step failed
    summary = summarize(rows)
    return {"params": {"seconds": args.seconds, "pps": args.pps, "concurrency": args.concurrency,
                       "spoofed_sources": 1 << SPOOF_BITS, "conn_rate_limit": CONN_RATE_LIMIT,
                       "cpus": os.cpu_count(), "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
            "phases": rows, "summary": summary}


def summarize(rows: list[dict]) -> list[dict]:
    """Per target and mode: goodput without/with each flood, ratios to its own base and
    (c)/(a)."""
    out = []
    get = {(r["target"], r["mode"], r["flood"]): r for r in rows}
    for target in dict.fromkeys(r["target"] for r in rows):
        for mode, _ in MODES:
            base = get.get((target, mode, "none"))
            if base is None:
                continue
            s = {"target": target, "mode": mode, "base": base["goodput"], "base_p99": base["p99_ms"]}
            for kind in FLOODS[1:]:
                r = get.get((target, mode, kind))
                if r is None:
                    continue
                s[kind] = r["goodput"]
                s[f"{kind}_p99"] = r["p99_ms"]
                s[f"{kind}_vs_base"] = round(r["goodput"] / base["goodput"], 2) if base["goodput"] else None
                a = get.get(("haproxy", mode, kind))
                if a is not None:
                    s[f"{kind}_vs_haproxy"] = round(r["goodput"] / a["goodput"], 2) if a["goodput"] else None
            out.append(s)
    return out


def _row_line(r: dict) -> str:
    procs = " ".join(f"{k}={v}" for k, v in r["proc_cpu_s"].items())
    xdp_c = " ".join(f"{k}={v}" for k, v in r["xdp_counted"].items()) or "-"
    return (f"{r['target']:<17} {r['mode']:<10} {r['flood']:<5} goodput {r['goodput']:>8.0f}/s "
            f"p99 {r['p99_ms']} ms  offered {r['offered_pps']:>9,} pps  edge rx {r['edge_rx_pps']:>9,} pps"
            f"  cpu {r['cpu_s']}  procs {procs}  xdp {xdp_c}  errors {r['errors'] or '-'}")


def print_table(res: dict) -> None:
    p = res["params"]
    print(f"bench.flood: {p['seconds']}s per phase, flood {p['pps']:,.0f} pps asked from "
          f"{p['spoofed_sources']:,} spoofed sources, client concurrency {p['concurrency']}, "
          f"{p['cpus']} CPUs, {p['date']}")
    print("\ngoodput = successful requests/s of the legitimate client; p99 in ms; "
          "ratios: under flood / no attack, and (x)/(a) under the same flood")
    hdr = (f"{'target':<17}{'conn':<11}{'no attack':>10}{'p99':>7}{'SYN':>9}{'p99':>7}{'/base':>6}"
           f"{'/(a)':>6}{'UDP':>9}{'p99':>7}{'/base':>6}{'/(a)':>6}")
    print(hdr)
    print("-" * len(hdr))
    fmt = lambda v, w, d=0: f"{v:>{w}.{d}f}" if isinstance(v, (int, float)) else f"{'-':>{w}}"  # noqa: E731
    for s in res["summary"]:
        print(f"{s['target']:<17}{s['mode']:<11}{fmt(s['base'], 10)}{fmt(s['base_p99'], 7, 1)}"
              f"{fmt(s.get('syn'), 9)}{fmt(s.get('syn_p99'), 7, 1)}{fmt(s.get('syn_vs_base'), 6, 2)}"
              f"{fmt(s.get('syn_vs_haproxy'), 6, 2)}"
              f"{fmt(s.get('udp'), 9)}{fmt(s.get('udp_p99'), 7, 1)}{fmt(s.get('udp_vs_base'), 6, 2)}"
              f"{fmt(s.get('udp_vs_haproxy'), 6, 2)}")
    print("\nper phase: offered = flood frames/s put on the attacker's wire; edge rx = packets/s "
          "the edge's outside interface received, ring drop = packets its receive ring dropped "
          "(flood and client alike); retx = the client's TCP retransmissions, cookies = SYN "
          "cookies the edge sent; CPU seconds over the phase: the machine's (/proc/stat, all "
          "CPUs) and each process's (/proc/<pid>: user + system; gen = the generating thread, "
          "which also runs the flood's softirq work); XDP counted = the shield's counters")
    hdr = (f"{'target':<17}{'conn':<11}{'flood':<6}{'offered':>10}{'edge rx':>10}{'ring drop':>10}"
           f"{'retx':>6}{'cookies':>11}{'softirq':>8}{'user':>6}{'sys':>6}{'idle':>6}  {'proxy':>6}"
           f"{'shield':>7}{'backend':>8}{'client':>7}{'gen':>6}  XDP counted")
    print(hdr)
    print("-" * len(hdr))
    for r in res["phases"]:
        c, pc = r["cpu_s"], r["proc_cpu_s"]
        print(f"{r['target']:<17}{r['mode']:<11}{r['flood']:<6}{r['offered_pps']:>10,}{r['edge_rx_pps']:>10,}"
              f"{r['edge_rx_dropped']:>10,}{r['tcp']['client']['Tcp:RetransSegs']:>6}"
              f"{r['tcp']['edge']['TcpExt:SyncookiesSent']:>11,}"
              f"{c['softirq']:>8.2f}{c['user']:>6.2f}{c['system']:>6.2f}{c['idle']:>6.2f}  "
              f"{pc.get('proxy', 0):>6.2f}{fmt(pc.get('shield'), 7, 2)}{pc['backend']:>8.2f}"
              f"{pc['client']:>7.2f}{pc['generator']:>6.2f}  "
              + (" ".join(f"{k}={v:,}" for k, v in r["xdp_counted"].items()) or "-"))
    targets = {s["target"] for s in res["summary"]}
    if {"haproxy", "edgestick+shield"} <= targets:
        print("\ntargets (issue 5): (c) >= 3x (a) under the flood, and >= 0.5x its own no-attack goodput")
        for s in res["summary"]:
            if s["target"] != "edgestick+shield":
                continue
            for kind in FLOODS[1:]:
                va, vb = s.get(f"{kind}_vs_haproxy"), s.get(f"{kind}_vs_base")
                print(f"  {s['mode']:<10} {kind.upper()}: (c)/(a) = {va}  {'met' if va and va >= 3 else 'NOT met'}; "
                      f"(c) under flood / no attack = {vb}  {'met' if vb and vb >= 0.5 else 'NOT met'}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.flood", description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=4.0, help="client time per phase")
    ap.add_argument("--pps", type=float, default=1_000_000, help="flood rate asked of the generator")
    ap.add_argument("--gen-threads", type=int, default=1, help="flood generator threads")
    ap.add_argument("--concurrency", type=int, default=16, help="client connections in parallel")
    ap.add_argument("--targets", default=",".join(TARGETS),
                    help=f"comma-separated subset of {','.join(TARGETS)}")
    ap.add_argument("--json", action="store_true", help="print the JSON instead of the table")
    ap.add_argument("--out", default=str(RESULTS), help="JSON file written (default %(default)s)")
    args = ap.parse_args(argv)
    args.targets = [t for t in args.targets.split(",") if t]
    unknown = set(args.targets) - set(TARGETS)
    if unknown:
        ap.error(f"unknown target(s) {', '.join(sorted(unknown))}; targets: {', '.join(TARGETS)}")
    if os.geteuid() != 0:
        print("bench.flood: needs root (namespaces, XDP)", file=sys.stderr)
        return 2
    if not os.access(HAPROXY, os.X_OK) and "haproxy" in args.targets:
        print(f"bench.flood: no {HAPROXY}", file=sys.stderr)
        return 2
    res = bench(args)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1) + "\n")
    if args.json:
        print(json.dumps(res, indent=1))
    else:
        print_table(res)
        print(f"\nwritten: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
