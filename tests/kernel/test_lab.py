"""The namespace lab: builds, connects, and leaves nothing behind; XDP sees its traffic."""
import ctypes
import os
import signal
import subprocess
import sys
import time

import pytest

from edgestick.lab import Lab
from edgestick.lab import traffic
from edgestick.lab.topology import STATE_DIR, known_labs


def netns_names() -> set[str]:
    return {line.split()[0] for line in
            subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.splitlines()
            if line.strip()}


def test_hosts_reach_each_other(lab):
    for host, target in (("client", "198.18.0.1"), ("attacker", "198.18.0.1"),
                         ("edge", "198.19.0.2"), ("edge", "198.19.0.3")):
        assert lab.run(host, ["ping", "-c1", "-W2", target], check=False).returncode == 0, (host, target)
    assert lab.run("client", ["ping", "-6", "-c1", "-W2", "fd00:18::1"], check=False).returncode == 0
    # The client is not routed into the backend network: only the edge proxies to it.
    assert lab.run("client", ["ping", "-c1", "-W1", "198.19.0.2"], check=False).returncode != 0


def test_destroy_removes_everything():
    lab = Lab.create()
    proc = lab.popen("backend", ["sleep", "60"])
    names = set(lab.namespaces)
    assert names <= netns_names()
    assert lab.pin_dir.is_dir()
    lab.destroy()
    assert not names & netns_names()
    assert not lab.pin_dir.exists()
    assert proc.poll() is not None
    assert not lab.state_file.exists()
    lab.destroy()                      # twice is harmless


def test_crashed_run_is_swept_by_the_next():
    # A process builds a lab and is killed before it can clean up.
    code = ("from edgestick.lab import Lab; import sys, time; l = Lab.create(); "
            "l.popen('edge', ['sleep', '60']); print(l.prefix, flush=True); time.sleep(60)")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        prefix = child.stdout.readline().strip()
        assert prefix and f"{prefix}-edge" in netns_names()
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    Lab.create().destroy()             # the next run sweeps the dead one
    assert not any(n.startswith(prefix + "-") for n in netns_names())
    assert not (STATE_DIR / f"{prefix}.json").exists()
    assert prefix not in {l.prefix for l in known_labs()}


def test_lab_cli_up_twice_then_down():
    edgestick = [sys.executable, "-m", "edgestick"]
    try:
        first = subprocess.run([*edgestick, "lab", "up"], capture_output=True, text=True, check=True)
        second = subprocess.run([*edgestick, "lab", "up"], capture_output=True, text=True, check=True)
        p1, p2 = first.stdout.split()[1], second.stdout.split()[1]
        assert p1 != p2
        assert f"{p2}-edge" in netns_names() and f"{p1}-edge" not in netns_names()
    finally:
        subprocess.run([*edgestick, "lab", "down"], capture_output=True, text=True, check=True)
    assert not any(n.startswith((p1 + "-", p2 + "-")) for n in netns_names())


SMOKE_XDP = r"""
#include <uapi/linux/bpf.h>
BPF_ARRAY(seen, u64, 1);
int smoke(struct xdp_md *ctx) {
    int zero = 0;
    u64 *n = seen.lookup(&zero);
    if (n)
        __sync_fetch_and_add(n, 1);
    return XDP_PASS;
}
"""


def test_smoke_xdp_counts_frames_from_the_attacker(lab):
    """bcc compiles, the program attaches natively to the edge's outside interface, and
    frames sent from the attacker namespace are counted in its map."""
    from bcc import BPF
    from pyroute2 import IPRoute

    from edgestick.control.kernel_headers import ensure_bcc_kernel_source

    ensure_bcc_kernel_source()
    b = BPF(text=SMOKE_XDP)
    fn = b.load_func("smoke", BPF.XDP)
    with IPRoute(netns=lab.ns("edge"), flags=0) as ipr:
        idx = ipr.link_lookup(ifname=lab.edge_if)[0]
        ipr.link("set", index=idx, xdp={"attrs": [("IFLA_XDP_FD", fn.fd), ("IFLA_XDP_FLAGS", 4)]})
        assert ipr.link("get", index=idx)[0].get("IFLA_XDP").get("IFLA_XDP_ATTACHED") == "xdp"
    try:
        sources = traffic.spoofed_sources(50)
        frames = traffic.build_frames("udp", sources, lab.addr4("edge"),
                                      lab.mac("attacker"), lab.mac("edge"), dport=9)
        sock = traffic.packet_socket(lab.ns("attacker"), lab.ifname("attacker"))
        with sock:
            result = traffic.send_frames(sock, frames, count=500, duration=10)
        assert result.sent == 500
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and b["seen"][ctypes.c_int(0)].value < 500:
            time.sleep(0.05)
        # The switch also floods the edge with nothing else during the test, but the
        # kernel may emit an IPv6 router solicitation or two: at least every frame we sent.
        assert 500 <= b["seen"][ctypes.c_int(0)].value < 520
    finally:
        with IPRoute(netns=lab.ns("edge"), flags=0) as ipr:
            idx = ipr.link_lookup(ifname=lab.edge_if)[0]
            ipr.link("set", index=idx, xdp={"attrs": [("IFLA_XDP_FD", -1), ("IFLA_XDP_FLAGS", 4)]})
        b.cleanup()
