"""Cost of one mirror cycle (control/bridge.py) against the size of the shield's map.

    sudo .venv/bin/python -m bench.mirror [--sizes 10000,100000,1000000] [--members 1000]
                                          [--hot 0.01] [--proxy haproxy|edgestick]

For each size N: a real shield map (`Shield.build`, not attached to any interface) is
filled from userspace with N sources, of which `--hot` are over half the conn-rate
threshold; the proxy (a real HAProxy 2.6 by default) holds `--members` of those sources in
the mirrored table, as if they had made HTTP requests. Then mirror cycles run back to back
until a full sweep of the map writes nothing (at most 5 sweeps): the first sweeps write
the members and the hot sources, the latter at most MAX_NEW_PER_CYCLE a cycle, after that
only what changed (nothing: rates are held steady with a 60 s period). Reported per
sweep: cycles, entries scanned, sources considered, `set table` lines written (of which
new entries), and time per cycle split into map scan, `show table` dump and writes. For reference, the same map read with one lookup per key
(xdp.Shield.sources(), the straightforward iterator) is timed for N <= 100k.
"""
from __future__ import annotations

import argparse
import ctypes
import logging
import os
import secrets
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HAPROXY_CFG = """\
global
    stats socket {sock} mode 600 level admin
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend fe_bench
    bind 127.0.0.1:{port}
    stick-table type ip size 2m expire 10m store http_req_rate(10s),gpt0,gpc0_rate(60s),gpc1
    http-request track-sc0 src
    http-request return status 200
"""
EDGESTICK_CFG = HAPROXY_CFG.replace("gpt0,gpc0_rate(60s),gpc1", "xdp_conn_rate,xdp_pkt_rate,xdp_byte_rate,xdp_drops")
CONN_LIMIT = 1000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_socket(path: str, proc, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the proxy exited with status {proc.returncode}")
        if os.path.exists(path):
            return
        time.sleep(0.05)
    raise SystemExit(f"the proxy's socket {path} did not appear")


def fill(shield, n: int, hot: float, period_ms: int) -> list[str]:
    """N sources 10.0.0.0 + i with steady rates; every 1/hot-th one above half the limit."""
    from edgestick.control import xdp
    m = shield.maps["sources"]
    ks, vs = ctypes.sizeof(xdp.EsAddr), ctypes.sizeof(xdp.EsSource)
    chunk = 65536
    keys = ctypes.create_string_buffer(ks * chunk)
    values = ctypes.create_string_buffer(vs * chunk)
    lib = xdp.LIBBPF
    lib.bpf_map_update_batch.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p,
                                         ctypes.POINTER(ctypes.c_uint32), ctypes.c_void_p]
    every = max(1, int(1 / hot)) if hot else 0
    now = xdp.now_tick_ms() & ~1
    for start in range(0, n, chunk):
        count = min(chunk, n - start)
        for j in range(count):
            i = start + j
            keys[j * ks:(j + 1) * ks] = xdp._V4_MAPPED + (0x0A000000 + i).to_bytes(4, "big")
            conn = CONN_LIMIT if every and i % every == 0 else i % 7
            src = xdp.EsSource()
            for f, v in ((src.conn, conn), (src.pkt, conn * 3 + 1), (src.bytes, (conn * 3 + 1) * 80)):
                f.curr_tick, f.curr_ctr = now, v
            src.last_seen_ns = time.monotonic_ns()
            ctypes.memmove(ctypes.addressof(values) + j * vs, ctypes.addressof(src), vs)
        c = ctypes.c_uint32(count)
        if lib.bpf_map_update_batch(m.fd, keys, values, ctypes.byref(c), None) < 0:
            raise OSError(ctypes.get_errno(), "bpf_map_update_batch")
    return [socket.inet_ntoa((0x0A000000 + i).to_bytes(4, "big")) for i in range(n)]


def sweep(bridge) -> dict:
    totals = dict(cycles=0, scanned=0, candidates=0, written=0, new=0, scan=0.0, dump=0.0, write=0.0,
                  total=0.0, cpu=0.0)
    while True:
        c0 = time.process_time()
        r = bridge.cycle()
        totals["cpu"] += time.process_time() - c0
        if r.errors:
            raise SystemExit(f"cycle errors: {r.errors[:3]}")
        totals["cycles"] += 1
        for k in ("scanned", "candidates", "written", "new"):
            totals[k] += getattr(r, k)
        totals["scan"] += r.scan_s
        totals["dump"] += r.dump_s
        totals["write"] += r.write_s
        totals["total"] += r.total_s
        if r.sweep_done:
            return totals


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="bench.mirror", description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--members", type=int, default=1000, help="sources present in the proxy table")
    ap.add_argument("--hot", type=float, default=0.005, help="share of sources over half the threshold")
    ap.add_argument("--proxy", choices=("haproxy", "edgestick"), default="haproxy")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)

    from edgestick.control import config as shield_config
    from edgestick.control import xdp
    from edgestick.control.bridge import MAX_NEW_PER_CYCLE, SCAN_BUDGET, Bridge
    from edgestick.control.runtime_client import RuntimeClient

    sizes = [int(s) for s in args.sizes.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="es-bench-mirror-"))
    pin_dir = f"/sys/fs/bpf/es-bench-{secrets.token_hex(4)}"
    sock = str(tmp / "proxy.sock")
    cfg_text = (HAPROXY_CFG if args.proxy == "haproxy" else EDGESTICK_CFG).format(sock=sock, port=free_port())
    (tmp / "proxy.cfg").write_text(cfg_text)
    argv_proxy = (["haproxy", "-f", str(tmp / "proxy.cfg")] if args.proxy == "haproxy"
                  else [sys.executable, "-m", "edgestick", "proxy", "-f", str(tmp / "proxy.cfg")])
    proxy = subprocess.Popen(argv_proxy, stdout=subprocess.DEVNULL)
    store = ({"gpc0_rate": "xdp_conn_rate", "gpt0": "xdp_pkt_rate", "gpc1": "xdp_drops"}
             if args.proxy == "haproxy" else None)
    print(f"mirror cycle cost, proxy={args.proxy}, {args.members} proxy-table members, "
          f"{args.hot:.1%} hot sources, scan budget {SCAN_BUDGET} entries/cycle, "
          f"at most {MAX_NEW_PER_CYCLE} new sources/cycle")
    print(f"{'sources':>9} {'sweep':>6} {'cycles':>6} {'scanned':>9} {'considered':>10} {'written':>8} {'new':>6} "
          f"{'scan s':>7} {'dump s':>7} {'write s':>7} {'s/cycle':>8} {'cpu s/cycle':>11}")
    try:
        wait_socket(sock, proxy)
        client = RuntimeClient(sock, timeout=60)
        for n in sizes:
            client.command("clear table fe_bench")
            shutil.rmtree(pin_dir, ignore_errors=True)
            shield = xdp.Shield.build(pin_dir, xdp.ShieldConfig(period_ms=60_000, conn_rate_limit=CONN_LIMIT),
                                      sources_max=n + n // 4)
            try:
                names = fill(shield, n, args.hot, 60_000)
                step = max(1, n // args.members)
                with client.session() as s:
                    s.pipeline([f"set table fe_bench key {names[i]} data.http_req_rate 1"
                                for i in range(1, n, step)][:args.members])
                cfg = shield_config.ShieldConfig("bench", file="<bench>", interfaces=[])
                cfg.mirrors = ["fe_bench"]
                if store:
                    cfg.mirror_store = {"fe_bench": store}
                bridge = Bridge(cfg, shield, sock)
                for number in range(1, 6):
                    t = sweep(bridge)
                    c = t["cycles"]
                    print(f"{n:>9} {number:>6} {c:>6} {t['scanned']:>9} {t['candidates']:>10} {t['written']:>8} "
                          f"{t['new']:>6} "
                          f"{t['scan'] / c:>7.3f} {t['dump'] / c:>7.3f} {t['write'] / c:>7.3f} "
                          f"{t['total'] / c:>8.3f} {t['cpu'] / c:>11.3f}", flush=True)
                    if t["written"] == 0:
                        break
                if n <= 100_000:
                    t0 = time.perf_counter()
                    count = len(shield.sources())
                    print(f"{'':>9} reference: xdp.Shield.sources() read {count} sources in "
                          f"{time.perf_counter() - t0:.3f} s (one lookup per key)", flush=True)
            finally:
                shield.close()
                shutil.rmtree(pin_dir, ignore_errors=True)
    finally:
        proxy.terminate()
        proxy.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(pin_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
