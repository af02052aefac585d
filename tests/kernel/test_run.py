"""`edgestick run` on the lab's edge with the real children: a kill -9 of the shield or of
the proxy is repaired by a restart while protection stays on (the XDP program stays
attached and a ban keeps dropping through the gap), and SIGTERM stops both cleanly,
leaving XDP attached."""
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from edgestick.control import xdp
from edgestick.control.runtime_client import RuntimeClient
from edgestick.lab import traffic
from edgestick.lab.scenarios import in_netns

EDGESTICK = [sys.executable, "-m", "edgestick"]
BANNED = "198.18.64.7"

CONFIG = """\
global
    stats socket {tmp}/proxy.sock mode 600 level admin
defaults
    mode http
    timeout connect 2s
    timeout client 5s
    timeout server 5s
frontend http_front
    bind {edge}:80
    default_backend app
backend app
    server s1 {backend}:8080

shield edge
    interface {ifname} mode native
    table type ip size 4k expire 60s store conn_rate(1s),pkt_rate(1s),byte_rate(1s)
    pin-dir {pin_dir}/shield
    stats socket {tmp}/shield.sock mode 600 level admin
"""


def wait_for(pred, timeout: float, what: str, log_path=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.1)
    log = f"\n--- {log_path} ---\n{log_path.read_text()}" if log_path else ""
    pytest.fail(f"timed out waiting for {what}{log}")


def children(pid: int) -> dict[str, int]:
    """{"shield": pid, "proxy": pid} of the supervisor's live children."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid and b"edgestick" in argv:
            for name in ("shield", "proxy"):
                if name.encode() in argv:
                    out[name] = int(entry)
    return out


def answers(path, command: str, start: str) -> bool:
    try:
        return RuntimeClient(str(path), timeout=2).command(command).startswith(start)
    except OSError:
        return False


def shield_up(tmp) -> bool:
    return answers(tmp / "shield.sock", "show shield", "shield:")


def proxy_up(tmp) -> bool:
    return answers(tmp / "proxy.sock", "show info", "Name:")


def http_ok(lab) -> bool:
    with in_netns(lab.ns("client")):
        s = socket.socket()
    try:
        s.settimeout(2)
        s.connect((lab.addr4("edge"), 80))
        s.sendall(b"GET / HTTP/1.1\r\nHost: edge\r\nConnection: close\r\n\r\n")
        return s.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False
    finally:
        s.close()


def ban_drops(tmp) -> int:
    m = re.search(r"^counter: drop reason=ban packets=(\d+) ",
                  RuntimeClient(str(tmp / "shield.sock")).command("show shield"), re.M)
    return int(m.group(1)) if m else 0


def test_run_restarts_crashed_children_with_protection_on_and_stops_cleanly(lab, tmp_path):
    lab.popen("backend", [sys.executable, "-m", "edgestick.lab.backend", "--bind",
                          f"{lab.addr4('backend')}:8080"], stdout=subprocess.DEVNULL)
    cfg = tmp_path / "edge.cfg"
    cfg.write_text(CONFIG.format(tmp=tmp_path, edge=lab.addr4("edge"), backend=lab.addr4("backend"),
                                 ifname=lab.edge_if, pin_dir=lab.pin_dir))
    log = open(tmp_path / "run.log", "wb")
    run = lab.popen("edge", [*EDGESTICK, "run", "-f", str(cfg)], stdout=log, stderr=log)
    def serving():
        if run.poll() is not None:
            pytest.fail(f"edgestick run exited with {run.returncode}: {(tmp_path / 'run.log').read_text()}")
        return shield_up(tmp_path) and proxy_up(tmp_path) and http_ok(lab)
    wait_for(serving, 60, "edgestick run to serve", tmp_path / "run.log")
    first = children(run.pid)
    assert set(first) == {"shield", "proxy"}
    RuntimeClient(str(tmp_path / "shield.sock")).command(f"add ban {BANNED}")
    mode, prog_id = xdp.xdp_attached(lab.edge_if, lab.ns("edge"))
    assert mode == "native" and prog_id > 0

    # kill -9 the shield while the banned source floods: every packet is still dropped
    sock = traffic.packet_socket(lab.ns("attacker"), lab.ifname("attacker"))
    frames = traffic.build_frames("udp", [BANNED] * 16, lab.addr4("edge"), lab.mac("attacker"), lab.mac("edge"),
                                  dport=9)
    before = ban_drops(tmp_path)
    sent = []
    flood = threading.Thread(target=lambda: sent.append(
        traffic.send_frames(sock, frames, count=3000, duration=6.0, pps=1000)))
    flood.start()
    try:
        time.sleep(0.3)
        os.kill(first["shield"], signal.SIGKILL)
        gap_modes = set()
        def restarted():
            if run.poll() is not None:
                pytest.fail(f"edgestick run exited with {run.returncode}: {(tmp_path / 'run.log').read_text()}")
            gap_modes.add(xdp.xdp_attached(lab.edge_if, lab.ns("edge"))[0])
            pid = children(run.pid).get("shield")
            return pid not in (None, first["shield"]) and shield_up(tmp_path) and pid
        wait_for(restarted, 60, "the shield's restart", tmp_path / "run.log")
    finally:
        flood.join()
        sock.close()
    assert gap_modes == {"native"}                      # attached all along
    assert f"key={BANNED} " in RuntimeClient(str(tmp_path / "shield.sock")).command("show bans")
    assert ban_drops(tmp_path) - before == sent[0].sent  # not one packet of the banned source passed
    assert run.poll() is None

    # kill -9 the proxy: restarted, traffic flows again
    os.kill(first["proxy"], signal.SIGKILL)
    wait_for(lambda: children(run.pid).get("proxy") not in (None, first["proxy"]) and http_ok(lab),
             30, "the proxy's restart", tmp_path / "run.log")
    text = (tmp_path / "run.log").read_text()
    assert re.search(r"edgestick run: shield \(pid \d+\) exited with status -9 .* restarting in", text)
    assert re.search(r"edgestick run: proxy \(pid \d+\) exited with status -9 .* restarting in", text)

    # SIGTERM: both stop, the supervisor exits 0, XDP stays attached
    last = children(run.pid)
    run.send_signal(signal.SIGTERM)
    assert run.wait(timeout=30) == 0
    for pid in last.values():
        assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"
    assert xdp.xdp_attached(lab.edge_if, lab.ns("edge"))[0] == "native"
    assert not http_ok(lab)
