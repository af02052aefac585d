"""edgestick proxy vs HAProxy 2.6 on seed configuration 3, measured in the same run.

    python -m bench.proxy [--duration S] [--connections N] [--floor] [--heads same|varied] [--load F]
                          [--runtime auto|pypy|cpython] [--warmup S]
    python -m bench.proxy --in-process [--heads same|varied]     (.venv-pypy/bin/python: on PyPy)

Both proxies run the same configuration (seed 3: track-sc0 src, deny 429 over 100
requests per 10 s) in front of the same backend (a HAProxy `http-request return`
listener, so the backend is never the bottleneck), one after the other, loaded by the
same client (`wrk`, C, one thread). Scenarios: "nothing denied" (the same rules with the
threshold raised out of reach, so every request is tracked, evaluated and forwarded) and
"mostly denied" (the seed's threshold: after the 100th request everything gets 429),
each with keep-alive and with one connection per request. HAProxy runs with
`nbthread 1`, so both proxies use at most one core: requests per CPU second (CPU time
of the proxy process from /proc, user + system) is the fair comparison on a shared box.
`--heads varied` sends every request with its own path and X-Request-Id
(bench/wrk-client.lua), as a stream of real clients would: nothing a proxy worked out for
an earlier head can be reused (edgestick memoises repeated heads).

Each scenario is measured twice: saturated (wrk as fast as it can: the slower proxy is
the bottleneck) and at an equal offered load (`--load F`, default 0.5: each wrk
connection waits between requests so that both proxies are offered F times the lower of
their saturated rates). Both matter on this 2-vCPU machine: in a closed loop the
bottleneck's client sleeps between responses, so the bottleneck also pays for waking it
(an inter-processor interrupt per wake-up; perf puts about a sixth of edgestick's CPU
there with a new connection per request), which the faster proxy, whose client never
sleeps, does not. At an equal load both pay the same.

`--in-process`: edgestick's Python alone, µs per request: the frontend built from the
same configuration, fake transports, the client's and the server's `data_received`
called in a loop (the data-callback paths of proxy/frontend.py; no kernel, no loop turn).
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")

CONFIG = """
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
    bind 127.0.0.1:{port}
    stick-table type ip size 100k expire 30s store http_req_rate(10s),conn_cur
    http-request track-sc0 src
    http-request deny deny_status 429 if {{ sc_http_req_rate(0) gt {limit} }}
    default_backend app_servers

backend app_servers
    server app1 127.0.0.1:{backend}
"""

BACKEND = """
global
    nbthread 1
    maxconn 4000
defaults
    mode http
    timeout client 30s
    timeout http-keep-alive 30s
listen app
    bind 127.0.0.1:{port}
    http-request return status 200 content-type text/plain string "ok"
"""


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port: int, proc, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited: {proc.stdout.read()!r}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(port)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def _ms(text: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    v, unit = float(m.group(1)), m.group(2)
    return v / 1000 if unit == "us" else (v * 1000 if unit == "s" else v)


WRK_SCRIPT = ROOT / "bench" / "wrk-client.lua"
RUNTIME = "auto"    # edgestick proxy --runtime (--runtime below)
PACE_MS = 2         # --load: each connection's wait before a request


def run_wrk(port: int, duration: int, conns: int, close: bool, varied: bool = False,
            delay_ms: int | None = None) -> dict:
    """wrk's figures; `delay_ms`: each connection waits that long before each request."""
    argv = ["wrk", "-t1", f"-c{conns}", f"-d{duration}s", "--latency", "--timeout", "5s",
            "-s", str(WRK_SCRIPT)]
    if close:
        argv += ["-H", "Connection: close"]
    argv.append(f"http://127.0.0.1:{port}/")
    env = dict(os.environ, BENCH_HEADS="varied" if varied else "same")
    if delay_ms is not None:
        env["BENCH_DELAY_MS"] = str(delay_ms)
    out = subprocess.run(argv, capture_output=True, text=True, check=True, env=env).stdout
    res = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
           "requests": int(re.search(r"(\d+) requests in", out).group(1))}
    for pct in ("50", "99"):
        m = re.search(rf"^\s+{pct}%\s+(\S+)", out, re.M)
        res[f"p{pct}"] = _ms(m.group(1)) if m else float("nan")
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    res["non2xx"] = int(non2xx.group(1)) if non2xx else 0
    errs = re.search(r"Socket errors: (.*)", out)
    res["socket_errors"] = errs.group(1) if errs else ""
    return res


def start(kind: str, cfg_text: str, tmp: Path, port: int, floor_args: list[str] = ()) -> subprocess.Popen:
    path = tmp / f"{kind}-{port}.cfg"
    path.write_text(cfg_text)
    if kind == "floor":
        argv = [sys.executable, "-m", "bench.python_floor", "--port", str(port), *floor_args]
    elif kind == "edgestick":
        argv = [sys.executable, "-m", "edgestick", "proxy", "-f", str(path), "--runtime", RUNTIME]
    else:
        argv = [shutil.which("haproxy") or "/usr/sbin/haproxy", "-db", "-f", str(path)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT)
    wait_port(port, proc)
    return proc


def stop(proc: subprocess.Popen):
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def measure(kind: str, limit: int, close: bool, args, tmp: Path, backend_port: int,
            delay_ms: int | None = None, conns: int | None = None) -> dict:
    port = free_port()
    # the floor relays everything, or denies everything, as the scenario mostly does
    floor_args = ["--deny"] if limit < 1000 else ["--relay", str(backend_port)]
    proc = start(kind, CONFIG.format(port=port, limit=limit, backend=backend_port), tmp, port, floor_args)
    try:
        # warm-up: past the first 100 requests of "mostly denied", then --warmup seconds
        # of the measured traffic itself (PyPy's JIT settles on a traffic shape within
        # about 10 s: paced forwarded requests cost it 40k, then 49k, then 50-55k
        # requests per CPU second in consecutive 5 s windows)
        varied = args.heads == "varied"
        run_wrk(port, 1, 4, close, varied)
        if args.warmup > 0:
            run_wrk(port, args.warmup, conns or args.connections, close, varied, delay_ms)
        cpu0 = cpu_seconds(proc.pid)
        res = run_wrk(port, args.duration, conns or args.connections, close, varied, delay_ms)
        res["cpu"] = cpu_seconds(proc.pid) - cpu0
        res["per_cpu"] = res["requests"] / res["cpu"] if res["cpu"] > 0 else float("nan")
        return res
    finally:
        stop(proc)


# ---- --in-process: the proxy's Python per request, without sockets

class _FakeTransport:
    """Just what proxy/frontend.py and proxy/backend.py call on a transport."""

    def __init__(self, proto, peer):
        self.proto, self.peer, self.out, self.closed = proto, peer, [], False

    def get_extra_info(self, name, default=None):
        return {"peername": self.peer, "sockname": ("127.0.0.1", 8080)}.get(name, default)

    def write(self, data):
        self.out.append(data)

    def close(self):
        if not self.closed:
            self.closed = True
            self.proto.connection_lost(None)

    abort = close

    def pause_reading(self):
        pass

    def resume_reading(self):
        pass


async def _in_process(limit: int, close: bool, varied: bool, n: int, tmp: Path) -> float:
    import asyncio
    from edgestick.proxy import backend as be_mod
    from edgestick.proxy import config as config_mod
    from edgestick.proxy import main as main_mod
    from edgestick.proxy.frontend import ClientConn
    path = tmp / "in-process.cfg"
    path.write_text(CONFIG.format(port=8080, limit=limit, backend=8081))
    proc = main_mod.ProxyProcess([str(path)])
    proc.cfg, _ = config_mod.load_config(proc.paths, None)
    proc.tables, proc.table_decls, proc.backends, proc.frontends = proc._build(proc.cfg)
    fe, loop = proc.frontends[0], asyncio.get_running_loop()
    srv = proc.backends["app_servers"].servers[0]
    server = be_mod.ServerConn(srv)
    server.connection_made(_FakeTransport(server, ("127.0.0.1", 8081)))
    srv.all_conns.add(server)
    srv.idle.append(server)
    to_server = server.transport.out
    response = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: text/plain\r\n\r\nok"
    extra = b"Connection: close\r\n" if close else b""
    count = 0

    def request() -> bytes:
        nonlocal count
        count += 1
        if varied:                      # as bench/wrk-client.lua
            return (b"GET /item/%d HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: edgestick-bench"
                    b"\r\nX-Request-Id: %d\r\n%s\r\n" % (count, count, extra))
        return b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n%s\r\n" % extra

    client = None

    def run(k: int):
        nonlocal client
        for i in range(k):
            if close or client is None:
                client = ClientConn(fe, False, False, loop)
                client.connection_made(_FakeTransport(client, ("127.0.0.1", 40000 + i % 20000)))
            client.data_received(request())
            if to_server:               # forwarded: the server answers
                to_server.clear()
                server.data_received(response)
            if not client.transport.out:
                raise RuntimeError("no response")
            client.transport.out.clear()

    run(300)                            # warm-up (past the 100 requests of the limit)
    t0 = time.perf_counter()
    run(n)
    return (time.perf_counter() - t0) / n * 1e6


def in_process(args) -> int:
    import platform
    from edgestick.proxy import runtime
    tmp = Path(tempfile.mkdtemp(prefix="edgestick-bench-"))
    print(f"edgestick proxy, Python per request in-process (best of 3 x 30000), heads: "
          f"{args.heads}, on {platform.python_implementation()} {platform.python_version()}")
    try:
        for label, limit in (("nothing denied", 1_000_000_000), ("mostly denied", 100)):
            for mode, close in (("keep-alive", False), ("close", True)):
                us = min(runtime.run(_in_process(limit, close, args.heads == "varied", 30000, tmp))
                         for _ in range(3))
                print(f"{label:<16}{mode:<11}{us:7.2f} us")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=int, default=8, help="seconds per measurement")
    ap.add_argument("--connections", type=int, default=32, help="wrk connections")
    ap.add_argument("--floor", action="store_true",
                    help="also measure bench/python_floor.py (a bare uvloop relay / fixed 429)")
    ap.add_argument("--heads", choices=("same", "varied"), default="same",
                    help="varied: a new path and X-Request-Id on every request (bench/wrk-client.lua)")
    ap.add_argument("--load", type=float, default=0.5,
                    help="also measure both proxies offered this fraction of the lower of "
                         "their saturated rates (0: saturated only)")
    ap.add_argument("--in-process", action="store_true",
                    help="edgestick's Python per request only (fake transports, no wrk)")
    ap.add_argument("--warmup", type=int, default=10,
                    help="seconds of the measured traffic before each measurement")
    ap.add_argument("--runtime", choices=("auto", "pypy", "cpython"), default="auto",
                    help="edgestick proxy --runtime (auto: PyPy when installed)")
    args = ap.parse_args(argv)
    global RUNTIME
    RUNTIME = args.runtime
    if args.in_process:
        return in_process(args)
    if shutil.which("wrk") is None:
        print("bench/proxy.py needs wrk (scripts/setup-host.sh installs it)", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="edgestick-bench-"))
    bport = free_port()
    backend = start("haproxy", BACKEND.format(port=bport), tmp, bport)
    rows, paced = [], []
    try:
        for label, limit in (("nothing denied", 1_000_000_000), ("mostly denied", 100)):
            for mode, close in (("keep-alive", False), ("close", True)):
                h = measure("haproxy", limit, close, args, tmp, bport)
                e = measure("edgestick", limit, close, args, tmp, bport)
                f = measure("floor", limit, close, args, tmp, bport) if args.floor else None
                rows.append((label, mode, h, e, f))
                if args.load > 0:
                    # wrk's delay is in whole ms: PACE_MS and as many connections as
                    # the rate needs (the achieved rate is a little lower: latency adds)
                    rate = args.load * min(h["rps"], e["rps"])
                    conns = max(4, round(rate * PACE_MS / 1000))
                    hp = measure("haproxy", limit, close, args, tmp, bport, PACE_MS, conns)
                    ep = measure("edgestick", limit, close, args, tmp, bport, PACE_MS, conns)
                    paced.append((label, mode, rate, conns, hp, ep))
    finally:
        stop(backend)
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"edgestick proxy vs HAProxy 2.6 (nbthread 1), seed config 3, wrk -t1 "
          f"-c{args.connections} -d{args.duration}s, backend: HAProxy 'return' listener, "
          f"heads: {args.heads}, edgestick runtime: {RUNTIME}, warm-up {args.warmup}s")
    hdr = (f"{'scenario':<16}{'conn':<11}{'proxy':<10}{'req/s':>9}{'p50 ms':>8}{'p99 ms':>8}"
           f"{'CPU s':>7}{'req/CPU s':>11}{'non-2xx':>9}")
    print(hdr)
    print("-" * len(hdr))
    for label, mode, h, e, f in rows:
        for name, r in (("haproxy", h), ("edgestick", e), ("floor", f)):
            if r is None:
                continue
            print(f"{label:<16}{mode:<11}{name:<10}{r['rps']:>9.0f}{r['p50']:>8.2f}"
                  f"{r['p99']:>8.2f}{r['cpu']:>7.2f}{r['per_cpu']:>11.0f}{r['non2xx']:>9}")
        print(f"{'':<27}ratio edgestick/haproxy: req/s {e['rps'] / h['rps']:.2f}, "
              f"req per CPU s {e['per_cpu'] / h['per_cpu']:.2f}, "
              f"p50 x{e['p50'] / h['p50']:.1f}, p99 x{e['p99'] / h['p99']:.1f}")
        if f is not None:
            print(f"{'':<27}ratio floor/haproxy: req per CPU s {f['per_cpu'] / h['per_cpu']:.2f}; "
                  f"edgestick/floor {e['per_cpu'] / f['per_cpu']:.2f}")
    if paced:
        print(f"\nAt an equal offered load ({args.load:g} x the lower saturated rate above; "
              f"each wrk connection waits {PACE_MS} ms before each request, "
              f"{', '.join(str(p[3]) for p in paced)} connections):")
        paced_hdr = (f"{'scenario':<16}{'conn':<11}{'proxy':<10}{'offered':>9}{'req/s':>9}"
                     f"{'p50 ms':>8}{'p99 ms':>8}{'CPU s':>7}{'req/CPU s':>11}")
        print(paced_hdr)
        print("-" * len(paced_hdr))
        for label, mode, rate, conns, h, e in paced:
            for name, r in (("haproxy", h), ("edgestick", e)):
                print(f"{label:<16}{mode:<11}{name:<10}{rate:>9.0f}{r['rps']:>9.0f}{r['p50']:>8.2f}"
                      f"{r['p99']:>8.2f}{r['cpu']:>7.2f}{r['per_cpu']:>11.0f}")
            print(f"{'':<27}ratio edgestick/haproxy: req per CPU s {e['per_cpu'] / h['per_cpu']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
