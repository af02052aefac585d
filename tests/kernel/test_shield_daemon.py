"""`edgestick shield` as a real daemon in the lab's edge namespace: its runtime socket,
its Prometheus endpoint, SIGTERM leaving protection in place, `--detach`, and the restart
proof (a ban added at run time holds through a kill -9 and a restart while a flood from
the banned source runs: the XDP drop counter accounts for every packet sent, and a UDP
receiver behind the shield gets none of them)."""
import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families
from pyroute2 import netns

from edgestick.control import xdp
from edgestick.lab import traffic

EDGESTICK = [sys.executable, "-m", "edgestick"]
METRICS_PORT = 9107          # inside the lab's own edge namespace: always free
BANNED = "198.18.64.7"
OTHER = "198.18.64.8"
DENIED_NET = "203.0.113.0/24"


def write_config(tmp_path, lab, extra: str = "", name: str = "edge.cfg", metrics: bool = True) -> str:
    path = tmp_path / name
    path.write_text(f"""\
global
    stats socket {tmp_path}/haproxy.sock level admin
frontend http_front
    bind :80
    default_backend app
backend app
    server s1 198.19.0.2:8080

shield edge
    interface {lab.edge_if} mode native
    table type ip size 4k expire 60s store conn_rate(1s),pkt_rate(1s),byte_rate(1s)
    deny {DENIED_NET}
    drop if {{ pkt_rate gt 100000 }}
    flood-guard 100000
    pin-dir {lab.pin_dir}/shield
    stats socket {tmp_path}/shield.sock mode 600 level admin
{f"    metrics bind :{METRICS_PORT}" if metrics else ""}
{extra}""")
    return str(path)


def command(tmp_path, line: str) -> str:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(str(tmp_path / "shield.sock"))
        s.sendall(line.encode() + b"\n")
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out.decode()


def start_daemon(lab, tmp_path, cfg: str, log_name: str = "shield.log",
                 from_outside: bool = False) -> tuple[subprocess.Popen, int]:
    """Start `edgestick shield` in the edge namespace (or, from_outside, in this one with
    --netns); returns it once its socket answers and its program is attached, with the
    program id."""
    log = open(tmp_path / log_name, "wb")
    if from_outside:
        proc = subprocess.Popen([*EDGESTICK, "shield", "-f", cfg, "--netns", lab.ns("edge")],
                                stdout=log, stderr=log, start_new_session=True)
        lab.pids.append(proc.pid)              # destroy() kills it whatever happens
    else:
        proc = lab.popen("edge", [*EDGESTICK, "shield", "-f", cfg], stdout=log, stderr=log)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"shield exited with {proc.returncode}: {(tmp_path / log_name).read_text()}")
        try:
            m = re.search(r"^interface: \S+ attach=native prog_id=(\d+)$",
                          command(tmp_path, "show shield"), re.M)
            if m and int(m.group(1)) > 0:
                mode, prog_id = xdp.xdp_attached(lab.edge_if, lab.ns("edge"))
                if mode == "native" and prog_id == int(m.group(1)):
                    return proc, prog_id
        except OSError:
            pass
        time.sleep(0.1)
    pytest.fail(f"shield did not come up: {(tmp_path / log_name).read_text()}")


def counter(reply: str, verdict: str, reason: str) -> int:
    m = re.search(rf"^counter: {verdict} reason={reason} packets=(\d+) bytes=\d+$", reply, re.M)
    return int(m.group(1)) if m else 0


def scrape(lab) -> str:
    netns.pushns(lab.ns("edge"))
    try:
        s = socket.create_connection(("127.0.0.1", METRICS_PORT), timeout=5)
    finally:
        netns.popns()
    with s:
        s.sendall(b"GET /metrics HTTP/1.0\r\nHost: edge\r\n\r\n")
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    head, _, body = out.decode().partition("\r\n\r\n")
    assert head.startswith("HTTP/1.0 200"), head
    return body


def samples(body: str) -> dict[tuple, float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(body) for s in fam.samples}


def udp_frames(lab, source: str, count: int = 1, payload: bytes = b"") -> list[bytes]:
    """UDP to the edge's port 9: 60-byte frames over IPv4, 80 over IPv6."""
    from scapy.layers.inet import IP, UDP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import Ether
    l3 = IPv6(src=source, dst=lab.addr6("edge")) if ":" in source else IP(src=source, dst=lab.addr4("edge"))
    return [bytes(Ether(src=lab.mac("attacker"), dst=lab.mac("edge")) / l3 /
                  UDP(sport=40000 + i, dport=9) / (payload or b"x" * 18)) for i in range(count)]


def wait_for(predicate, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


def test_runtime_api_metrics_sigterm_and_detach(lab, tmp_path):
    cfg = write_config(tmp_path, lab)
    proc, prog_id = start_daemon(lab, tmp_path, cfg)

    shown = command(tmp_path, "show shield")
    assert shown.endswith("\n\n") and "shield: edge\n" in shown and f"prog_id: {prog_id}\n" in shown
    assert "map: sources used=" in shown and "size=4096\n" in shown

    # Changes through the socket: every success is the bare empty line.
    assert command(tmp_path, f"add ban {BANNED}") == "\n"
    assert command(tmp_path, "add ban fd00:18:1:5::9 30s") == "\n"
    assert command(tmp_path, "add allow 198.18.0.10") == "\n"
    assert command(tmp_path, "set threshold conn_rate 500") == "\n"
    bans = command(tmp_path, "show bans")
    assert f"key={BANNED} exp=- reason=manual\n" in bans
    m = re.search(r"^key=fd00:18:1:5::/64 exp=(\d+) reason=manual$", bans, re.M)
    assert m and 20_000 < int(m.group(1)) <= 30_000
    rules = command(tmp_path, "show rules")
    assert f"deny: {DENIED_NET}\n" in rules and "allow: 198.18.0.10/32\n" in rules
    assert "threshold conn_rate: 500\n" in rules and "threshold pkt_rate: 100000\n" in rules
    assert "threshold flood_guard: 100000\n" in rules

    # Bad commands and bad addresses: one error line each, nothing changes.
    before = (command(tmp_path, "show rules"), re.sub(r"exp=\d+", "", command(tmp_path, "show bans")))
    for bad in ("show everything", "add ban 198.18.64.999", "add ban 198.18.0.0/16",
                "add ban fd00:18:1:5:1::/80", f"del ban {OTHER}", "add allow 198.18.0.1/8",
                f"add allow {DENIED_NET}", "del deny 192.0.2.0/24", "set threshold pkt_rate lots",
                "set threshold ban_conn_rate 100", "set mode panic", "add ban"):
        reply = command(tmp_path, bad)
        assert reply.endswith("\n\n") and reply.count("\n") == 2 and len(reply) > 2, (bad, reply)
    after = (command(tmp_path, "show rules"), re.sub(r"exp=\d+", "", command(tmp_path, "show bans")))
    assert after == before

    # Interactive mode: several commands on one connection, each reply then "\n> ".
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(str(tmp_path / "shield.sock"))
        s.sendall(b"prompt\nset mode dry-run\nshow rules\nset mode enforce\nquit\n")
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    replies = out.decode().split("\n> ")
    assert replies[0] == "" and replies[1] == "" and replies[3] == "" and replies[4] == ""
    assert "mode: dry-run\n" in replies[2]
    assert "mode: enforce\n" in command(tmp_path, "show rules")
    # Lines sent together are all answered before the connection closes.
    out = command(tmp_path, "set mode dry-run\nshow rules\nset mode enforce")
    assert out.startswith("\nmode: dry-run\n") and out.endswith("\n\n\n") and out.count("\n\n") == 1
    # Several commands on one line, separated by ';' (HAProxy's non-interactive form).
    # Replies: "\n" (set), the rules and their empty line, "\n" (set).
    out = command(tmp_path, "set mode dry-run;show rules;set mode enforce")
    assert out.startswith("\nmode: dry-run\n") and out.endswith("\n\n\n") and out.count("\n\n") == 1
    assert "mode: enforce\n" in command(tmp_path, "show rules")

    # Traffic: the banned source and the deny list are dropped by the program, by reason.
    with traffic.packet_socket(lab.ns("attacker"), lab.ifname("attacker")) as sock:
        assert traffic.send_frames(sock, udp_frames(lab, BANNED), 200, 10).sent == 200
        assert traffic.send_frames(sock, udp_frames(lab, "203.0.113.5"), 50, 10).sent == 50
        assert traffic.send_frames(sock, udp_frames(lab, OTHER, 10), 100, 10).sent == 100
        assert traffic.send_frames(sock, udp_frames(lab, "198.18.64.9"), 30, 10).sent == 30
        # Another address of the banned IPv6 /64: the ban covers the whole source prefix.
        assert traffic.send_frames(sock, udp_frames(lab, "fd00:18:1:5::77"), 20, 10).sent == 20

    def dropped() -> bool:
        reply = command(tmp_path, "show shield")
        return counter(reply, "drop", "ban") == 220 and counter(reply, "drop", "deny") == 50
    assert wait_for(dropped), command(tmp_path, "show shield")
    sources = command(tmp_path, "show sources top 5 by pkt_rate")
    keys = re.findall(r"^key=(\S+) ", sources, re.M)
    # 100 packets rank before 30 (both rates decay alike, and equal rates sort by key).
    assert keys.index(OTHER) < keys.index("198.18.64.9")
    assert re.search(rf"^key={OTHER} conn_rate\(1000\)=0 pkt_rate\(1000\)=\d+ byte_rate\(1000\)=\d+ "
                     r"drops=0 seen=\d+$", sources, re.M)
    assert f"key={BANNED} " not in sources    # a ban is checked before any state is made
    assert re.findall(r"^key=(\S+) ", command(tmp_path, "show sources top 1"), re.M) == [OTHER]

    # Metrics, read from the maps at scrape time; never a source address as a label.
    body = scrape(lab)
    got = samples(body)
    iface = (("interface", lab.edge_if),)
    assert got[("edgestick_xdp_drops_total", iface + (("reason", "ban"),))] == 220
    assert got[("edgestick_xdp_drops_total", iface + (("reason", "deny"),))] == 50
    assert got[("edgestick_xdp_would_drops_total", iface + (("reason", "ban"),))] == 0
    assert got[("edgestick_xdp_packets_total", iface + (("verdict", "drop"),))] == 270
    assert got[("edgestick_xdp_packets_total", iface + (("verdict", "pass"),))] >= 130
    assert got[("edgestick_xdp_bytes_total", iface + (("verdict", "drop"),))] == 250 * 60 + 20 * 80
    assert got[("edgestick_xdp_bans_active", ())] == 2
    assert got[("edgestick_xdp_sources_tracked", ())] >= 1
    assert got[("edgestick_xdp_map_capacity", (("map", "sources"),))] == 4096
    assert got[("edgestick_xdp_program_info", iface + (("mode", "native"), ("prog_id", str(prog_id))))] == 1
    assert "198.18." not in body and "fd00:" not in body and "python_gc" not in body

    # A lifted ban lets the source through again.
    assert command(tmp_path, f"del ban {BANNED}") == "\n"
    assert f"key={BANNED} " not in command(tmp_path, "show bans")
    with traffic.packet_socket(lab.ns("attacker"), lab.ifname("attacker")) as sock:
        assert traffic.send_frames(sock, udp_frames(lab, BANNED), 10, 10).sent == 10
    assert wait_for(lambda: f"key={BANNED} " in command(tmp_path, "show sources top 100"))
    assert counter(command(tmp_path, "show shield"), "drop", "ban") == 220

    # Run-time changes reach the program: dry-run only counts; a lower pkt_rate limit drops.
    assert command(tmp_path, "set mode dry-run") == "\n"
    assert command(tmp_path, "set threshold pkt_rate 5") == "\n"
    with traffic.packet_socket(lab.ns("attacker"), lab.ifname("attacker")) as sock:
        assert traffic.send_frames(sock, udp_frames(lab, "fd00:18:1:5::78"), 10, 10).sent == 10
    assert wait_for(lambda: counter(command(tmp_path, "show shield"), "would_drop", "ban") == 10)
    assert command(tmp_path, "set mode enforce") == "\n"
    with traffic.packet_socket(lab.ns("attacker"), lab.ifname("attacker")) as sock:
        assert traffic.send_frames(sock, udp_frames(lab, "198.18.64.10"), 20, 10).sent == 20
    assert wait_for(lambda: counter(command(tmp_path, "show shield"), "drop", "pkt_rate") >= 10)
    assert counter(command(tmp_path, "show shield"), "drop", "ban") == 220

    # SIGHUP re-reads the file: its thresholds and lists apply now (a runtime change is
    # replaced by the file's value, a runtime list entry stays); what needs a restart is
    # kept; a broken file changes nothing.
    text = open(cfg).read()
    reloaded = (text.replace(f"deny {DENIED_NET}", "deny 198.18.97.0/24")
                .replace("flood-guard 100000", "flood-guard 90000")
                .replace(f"metrics bind :{METRICS_PORT}", f"metrics bind :{METRICS_PORT + 1}"))
    open(cfg, "w").write(reloaded)
    proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: "deny: 198.18.97.0/24\n" in command(tmp_path, "show rules"))
    rules = command(tmp_path, "show rules")
    assert f"deny: {DENIED_NET}\n" not in rules and "allow: 198.18.0.10/32\n" in rules
    assert "threshold pkt_rate: 100000\n" in rules and "threshold flood_guard: 90000\n" in rules
    assert "mode: enforce\n" in rules
    assert samples(scrape(lab))[("edgestick_xdp_bans_active", ())] == 1    # still on the old port
    assert "metrics_bind changed: applied at the next start" in (tmp_path / "shield.log").read_text()
    open(cfg, "w").write(reloaded.replace("flood-guard 90000", "flood-guard lots"))
    proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: "reload refused" in (tmp_path / "shield.log").read_text())
    assert command(tmp_path, "show rules") == rules and proc.poll() is None
    open(cfg, "w").write(text)

    # Refused with exit 3 and protection unchanged: another shield (its own pins) on this
    # interface, a silent switch of attach mode, a second daemon of this shield.
    other = tmp_path / "other.cfg"
    other.write_text(text.replace(f"{lab.pin_dir}/shield", f"{lab.pin_dir}/other"))
    generic = tmp_path / "generic.cfg"
    generic.write_text(text.replace("mode native", "mode generic"))
    # This one fails late (metrics port taken) after adopting the pinned program and maps:
    # the detach below still recognises the attached one as this shield's by its maps.
    busy = tmp_path / "busy.cfg"
    busy.write_text(text.replace("shield.sock", "shield2.sock"))
    for path, message in (
            (busy, "Address already in use"),
            (other, f"{lab.edge_if} already has XDP program {prog_id}, not this shield's"),
            (generic, "this shield's program is attached native, the file says generic"),
            (cfg, f"another process serves {tmp_path}/shield.sock")):
        out = lab.run("edge", [*EDGESTICK, "shield", "-f", str(path)], check=False)
        assert out.returncode == 3 and message in out.stderr, out.stderr
        assert xdp.xdp_attached(lab.edge_if, lab.ns("edge")) == ("native", prog_id)
    assert f"prog_id: {prog_id}\n" in command(tmp_path, "show shield")

    # SIGTERM: the daemon stops, the program stays attached, the maps stay pinned.
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0
    assert xdp.xdp_attached(lab.edge_if, lab.ns("edge")) == ("native", prog_id)
    assert (lab.pin_dir / "shield" / "bans").exists()
    assert not (tmp_path / "shield.sock").exists()

    # --detach (from outside the namespace, with --netns) with --purge leaves nothing.
    out = subprocess.run([*EDGESTICK, "shield", "-f", cfg, "--netns", lab.ns("edge"), "--detach", "--purge"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert xdp.xdp_attached(lab.edge_if, lab.ns("edge")) == (None, 0)
    assert not (lab.pin_dir / "shield").exists()

    # Without pins to name its program, --detach removes only an edgestick program.
    foreign = attach_foreign_program(lab)
    try:
        out = subprocess.run([*EDGESTICK, "shield", "-f", cfg, "--netns", lab.ns("edge"), "--detach"],
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 3 and "'foreign_xdp') is not an edgestick program" in out.stderr
        assert xdp.xdp_attached(lab.edge_if, lab.ns("edge"))[0] == "native"
    finally:
        xdp.xdp_detach(lab.edge_if, lab.ns("edge"))
        foreign.cleanup()


def attach_foreign_program(lab):
    """Another tool's XDP program on the edge's interface (bcc, in this process)."""
    from bcc import BPF

    from edgestick.control.kernel_headers import ensure_bcc_kernel_source
    ensure_bcc_kernel_source()
    b = BPF(text="#include <uapi/linux/bpf.h>\nint foreign_xdp(struct xdp_md *ctx) { return XDP_PASS; }")
    fn = b.load_func("foreign_xdp", BPF.XDP)
    from pyroute2 import IPRoute
    with IPRoute(netns=lab.ns("edge"), flags=0) as ipr:
        idx = ipr.link_lookup(ifname=lab.edge_if)[0]
        ipr.link("set", index=idx, xdp={"attrs": [("IFLA_XDP_FD", fn.fd), ("IFLA_XDP_FLAGS", 4)]})
    return b


RECEIVER = r"""
import json, socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 9))
s.settimeout(0.5)
print("ready", flush=True)
seen = {}
deadline = time.monotonic() + float(sys.argv[1])
while time.monotonic() < deadline:
    try:
        data, (src, _) = s.recvfrom(2048)
    except socket.timeout:
        continue
    if data == b"STOP":
        break
    seen[src] = seen.get(src, 0) + 1
print(json.dumps(seen), flush=True)
"""


def test_banned_flood_across_kill9_and_restart(lab, tmp_path):
    cfg = write_config(tmp_path, lab)
    first, first_prog = start_daemon(lab, tmp_path, cfg, "first.log")
    # Added at run time, so only the pinned maps carry them into the next daemon.
    assert command(tmp_path, f"add ban {BANNED}") == "\n"
    assert command(tmp_path, "add deny 198.18.99.0/24") == "\n"
    assert command(tmp_path, "add allow 198.18.98.0/24") == "\n"     # the next file denies it
    assert command(tmp_path, "add ban fd00:18:1:5::9 60s") == "\n"   # the next file groups per /48

    receiver = lab.popen("edge", [sys.executable, "-c", RECEIVER, "60"], stdout=subprocess.PIPE, text=True)
    assert receiver.stdout.readline().strip() == "ready"

    flood_frames = udp_frames(lab, BANNED, 16)
    stop = threading.Event()
    sent = []

    def flood():
        # Paced, bounded by count and time; runs until told to stop after the restart.
        with traffic.packet_socket(lab.ns("attacker"), lab.ifname("attacker")) as sock:
            deadline = time.monotonic() + 40
            while not stop.is_set() and time.monotonic() < deadline and sum(sent) < 100_000:
                sent.append(traffic.send_frames(sock, flood_frames, 200, 5, pps=4000).sent)

    flooder = threading.Thread(target=flood)
    flooder.start()
    try:
        time.sleep(0.5)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        assert xdp.xdp_attached(lab.edge_if, lab.ns("edge")) == ("native", first_prog)
        # The new daemon runs outside the namespace (--netns): its netlink calls fork
        # (pyroute2), which must not stop it.
        outside = write_config(tmp_path, lab, name="outside.cfg", metrics=False,
                               extra="    deny 198.18.98.0/24\n    table-ipv6-prefix 48\n")
        second, second_prog = start_daemon(lab, tmp_path, outside, "second.log", from_outside=True)
        for _ in range(10):                        # each looks the interfaces up (a fork)
            assert f"interface: {lab.edge_if} attach=native" in command(tmp_path, "show shield")
        assert second_prog == first_prog           # same build: adopted, not compiled again
        time.sleep(0.5)                            # the flood goes on under the new daemon
        assert flooder.is_alive()
    finally:
        stop.set()
        flooder.join(timeout=60)
    total = sum(sent)
    assert total >= 2000

    # The ban and the list entry survived, and every flood packet was dropped for the ban,
    # by either program: the pinned per-CPU counters carried over too.
    bans = command(tmp_path, "show bans")
    assert f"key={BANNED} exp=- reason=manual\n" in bans
    # the IPv6 ban was regrouped to the new file's /48, and the daemon said so
    assert re.search(r"^key=fd00:18:1::/48 exp=\d+ reason=manual$", bans, re.M) and "/64" not in bans
    assert ("ipv6-prefix 48: ban of fd00:18:1:5::/64 widened to fd00:18:1::/48"
            in (tmp_path / "second.log").read_text())
    rules = command(tmp_path, "show rules")
    assert "deny: 198.18.99.0/24\n" in rules
    # An entry the new file puts in the other list has moved there.
    assert "deny: 198.18.98.0/24\n" in rules and "allow: 198.18.98.0/24\n" not in rules
    assert wait_for(lambda: counter(command(tmp_path, "show shield"), "drop", "ban") == total), \
        (total, command(tmp_path, "show shield"))

    # Behind the shield, nothing of the banned source arrived; an unbanned source does.
    with traffic.packet_socket(lab.ns("attacker"), lab.ifname("attacker")) as sock:
        assert traffic.send_frames(sock, udp_frames(lab, OTHER, 20), 20, 10).sent == 20
        time.sleep(0.2)
        sock.send(udp_frames(lab, OTHER, 1, b"STOP")[0])
    out, _ = receiver.communicate(timeout=20)
    seen = json.loads(out.strip().splitlines()[-1])
    assert seen.get(BANNED, 0) == 0
    assert seen.get(OTHER) == 20

    assert second.poll() is None
    second.send_signal(signal.SIGTERM)
    assert second.wait(timeout=10) == 0
    out = subprocess.run([*EDGESTICK, "shield", "-f", cfg, "--netns", lab.ns("edge"), "--detach", "--purge"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert xdp.xdp_attached(lab.edge_if, lab.ns("edge")) == (None, 0)
