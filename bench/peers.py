"""Peers replication throughput and lag: edgestick -> edgestick, edgestick -> HAProxy 2.6,
HAProxy -> edgestick, on loopback, in one run.

    .venv/bin/python bench/peers.py [N]

Reload hand-over: the old process of a reload (a Peers holding N entries) teaches the new
one (same local peer name and address, both listening with SO_REUSEPORT) over the local
peer, as `edgestick proxy -sf` does; timed from the hand-over call to the confirmation.

Throughput: N distinct entries written on one node (edgestick: track+release of one
request each; HAProxy: `set table` commands pipelined on one interactive CLI session),
timed until the other node holds all of them. Lag: one write, then the time until the
other node shows it (edgestick polled every loop turn, HAProxy through its CLI, which
adds its own round trip), p50/p99 over the samples. Both edgestick nodes share one event
loop (one core) in this process.
"""
from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

from edgestick.proxy.peers import Peers
from edgestick.proxy.stick_table import StickTable, parse_table_args

DECL = "type ip size 2m expire 10m peers p store http_req_cnt,http_req_rate(10s),conn_cur"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def table() -> StickTable:
    return StickTable("t", parse_table_args(DECL.split())[0])


async def until(pred, timeout=60.0, step=0.0):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError
        await asyncio.sleep(step)


def write(t: StickTable, ip: int) -> None:
    t.release(t.track(ip, http_req=True))


def pct(samples, p):
    s = sorted(samples)
    return s[min(len(s) - 1, int(len(s) * p / 100))]


async def edgestick_pair(n: int) -> None:
    pa, pb = free_port(), free_port()
    names = [("a", "127.0.0.1", pa), ("b", "127.0.0.1", pb)]
    ta, tb = table(), table()
    na, nb = Peers("p", "a", names, [ta]), Peers("p", "b", names, [tb])
    await na.start()
    await nb.start()
    try:
        await until(lambda: any(p.session for p in na.peers) and any(p.session for p in nb.peers))
        t0 = time.perf_counter()
        for i in range(n):
            write(ta, 0xC6120000 + i)
            if i % 500 == 0:
                await asyncio.sleep(0)
        await until(lambda: len(tb) >= n)
        dt = time.perf_counter() - t0
        print(f"edgestick -> edgestick: {n} entries in {dt:.2f} s = {n / dt:,.0f} updates/s")
        lags = []
        for i in range(200):
            ip = 0xC6130000 + i
            t0 = time.perf_counter()
            write(ta, ip)
            await until(lambda: tb.lookup(ip) is not None)
            lags.append((time.perf_counter() - t0) * 1000)
        print(f"edgestick -> edgestick lag: p50 {pct(lags, 50):.2f} ms, p99 {pct(lags, 99):.2f} ms")
    finally:
        await na.stop()
        await nb.stop()


async def reload_handover(n: int) -> None:
    port = free_port()
    names = [("a", "127.0.0.1", port)]
    told, tnew = table(), table()
    old = Peers("p", "a", names, [told])
    await old.start()
    for i in range(n):
        write(told, 0xC6140000 + i)
    new = Peers("p", "a", names, [tnew], expect_local=True)
    await new.start()
    try:
        t0 = time.perf_counter()
        confirmed = await old.hand_over(timeout=60)
        dt = time.perf_counter() - t0
        assert confirmed and len(tnew) == n, (confirmed, len(tnew))
        print(f"reload hand-over (old -> new over the local peer): {n} entries in {dt:.2f} s "
              f"= {n / dt:,.0f} entries/s")
    finally:
        await old.stop()
        await new.stop()


class HaproxyCli:
    def __init__(self, path):
        self.path = path

    def once(self, cmd: str) -> str:
        s = socket.socket(socket.AF_UNIX)
        with s:
            s.connect(self.path)
            s.sendall(cmd.encode() + b"\n")
            s.shutdown(socket.SHUT_WR)
            out = b""
            while True:
                d = s.recv(65536)
                if not d:
                    return out.decode()
                out += d

    def used(self) -> int:
        head = self.once("show table t").split("\n", 1)[0]
        return int(head.rsplit("used:", 1)[1])

    def pipeline(self, cmds: list[str]) -> None:
        """Many commands on one interactive session."""
        s = socket.socket(socket.AF_UNIX)
        with s:
            s.connect(self.path)
            s.sendall(b"prompt\n")
            s.recv(100)
            for i in range(0, len(cmds), 50):       # bounded bursts: the CLI buffer is 16k
                chunk = cmds[i:i + 50]
                s.sendall("".join(c + "\n" for c in chunk).encode())
                got = 0
                while got < len(chunk):
                    got += s.recv(1 << 16).count(b"> ")
            s.sendall(b"quit\n")


async def with_haproxy(n: int, haproxy: str) -> None:
    d = tempfile.mkdtemp(prefix="peers-bench-")
    hport, eport = free_port(), free_port()
    sock = os.path.join(d, "h.sock")
    cfg = os.path.join(d, "h.cfg")
    with open(cfg, "w") as f:
        f.write(f"global\n    stats socket {sock} level admin\n"
                f"peers p\n    peer h 127.0.0.1:{hport}\n    peer e 127.0.0.1:{eport}\n"
                f"backend t\n    stick-table {DECL}\n")
    proc = subprocess.Popen([haproxy, "-db", "-f", cfg, "-L", "h"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cli = HaproxyCli(sock)
    te = table()
    node = Peers("p", "e", [("h", "127.0.0.1", hport), ("e", "127.0.0.1", eport)], [te])
    try:
        await until(lambda: os.path.exists(sock), timeout=10, step=0.01)
        await node.start()
        await until(lambda: any(p.session for p in node.peers), timeout=10, step=0.01)
        await asyncio.sleep(0.2)
        t0 = time.perf_counter()
        for i in range(n):
            write(te, 0xC6140000 + i)
            if i % 500 == 0:
                await asyncio.sleep(0)
        await until(lambda: cli.used() >= n, step=0.01)
        dt = time.perf_counter() - t0
        print(f"edgestick -> HAProxy:   {n} entries in {dt:.2f} s = {n / dt:,.0f} updates/s")
        lags = []
        for i in range(100):
            ip = f"198.21.0.{i}"
            t0 = time.perf_counter()
            write(te, ip)
            await until(lambda: "key=" in cli.once(f"show table t key {ip}"), step=0)
            lags.append((time.perf_counter() - t0) * 1000)
        print(f"edgestick -> HAProxy lag (incl. one CLI round trip): p50 {pct(lags, 50):.2f} ms, "
              f"p99 {pct(lags, 99):.2f} ms")
        base = len(te)
        cmds = [f"set table t key 198.22.{i // 256}.{i % 256} data.http_req_cnt 1"
                for i in range(n)]
        t0 = time.perf_counter()
        await asyncio.get_running_loop().run_in_executor(None, cli.pipeline, cmds)
        await until(lambda: len(te) >= base + n)
        dt = time.perf_counter() - t0
        print(f"HAProxy -> edgestick:   {n} entries in {dt:.2f} s = {n / dt:,.0f} updates/s "
              "(HAProxy CLI-bound)")
        lags = []
        for i in range(100):
            ip = f"198.23.0.{i}"
            t0 = time.perf_counter()
            await asyncio.get_running_loop().run_in_executor(
                None, cli.once, f"set table t key {ip} data.http_req_cnt 1")
            await until(lambda: te.lookup(ip) is not None)
            lags.append((time.perf_counter() - t0) * 1000)
        print(f"HAProxy -> edgestick lag (incl. the CLI command): p50 {pct(lags, 50):.2f} ms, "
              f"p99 {pct(lags, 99):.2f} ms")
    finally:
        await node.stop()
        proc.terminate()
        proc.wait(5)
        shutil.rmtree(d, ignore_errors=True)


async def main(argv) -> int:
    n = int(argv[0]) if argv else 20000
    await edgestick_pair(n)
    await reload_handover(n)
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if os.path.exists(haproxy):
        await with_haproxy(n, haproxy)
    else:
        print("haproxy not installed: edgestick <-> HAProxy skipped")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
