"""The Vagrant lab's provisioning scripts (vagrant/provision/) run inside the namespace
lab with the lab's parameters: the same steps a VM runs, exercised without VMs."""
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from edgestick.lab import Lab, provision, scenarios
from edgestick.lab.provision import BACKEND_PORT, Provisioner, http_get
from edgestick.lab.topology import BACKEND_ADDRS4


@pytest.fixture
def prov(lab):
    p = Provisioner(lab)
    try:
        yield p
    finally:
        p.close()


def run_scenario(lab, host, name, target, **options):
    done = lab.run(host, scenarios.scenario_argv(name, target, **options), check=False, timeout=60)
    assert done.returncode == 0, done.stderr
    return scenarios.parse_result(done.stdout)


def test_backend_role_serves_both_backends_to_the_edge_and_dies_with_the_lab(lab, prov):
    service = prov.provision("backend")
    assert "running edgestick-backend in the foreground" in prov.log("backend").read_text()
    for name, addr in zip(("s1", "s2"), BACKEND_ADDRS4):
        r = run_scenario(lab, "edge", "legit", f"{addr}:{BACKEND_PORT}", count=20, rate=0,
                         new_connections=True)
        assert (r.sent, r.ok, r.errors) == (20, 20, {}), r.summary()
        login = run_scenario(lab, "edge", "cred-stuff", f"{addr}:{BACKEND_PORT}", count=5)
        assert login.statuses == {401: 5}
    # Only the edge reaches the backends; the outside does not.
    with scenarios.in_netns(lab.ns("client")):
        assert http_get(BACKEND_ADDRS4[0], BACKEND_PORT, timeout=0.5) == 0
    lab.destroy()
    assert service.poll() is not None


def test_attacker_and_client_roles_run_scenarios(lab, prov):
    prov.provision("attacker")
    prov.provision("client")
    addrs = lab.run("attacker", ["ip", "-o", "-4", "addr", "show", "dev", "eth0"]).stdout
    for a in scenarios.ATTACKER_SOURCES:
        assert f" {a}/24 " in addrs
    # Provisioning twice changes nothing and still succeeds (a VM's `vagrant provision`).
    prov.provision("attacker")
    assert lab.run("attacker", ["ip", "-o", "-4", "addr", "show", "dev", "eth0"]).stdout == addrs

    # A stand-in HTTP server on the edge's outside address (the real edge is edge.sh's).
    lab.popen("edge", [sys.executable, "-m", "edgestick.lab.backend",
                       "--bind", f"{lab.addr4('edge')}:80", "--name", "edge"])
    with scenarios.in_netns(lab.ns("client")):
        for _ in range(100):
            if http_get(lab.addr4("edge"), 80):
                break
            time.sleep(0.05)
    legit = run_scenario(lab, "client", "legit", lab.addr4("edge"), count=30, rate=0, duration=10)
    assert (legit.sent, legit.ok) == (30, 30), legit.summary()
    # The HTTP flood connects from the four extra addresses: a missing one fails to bind.
    flood = run_scenario(lab, "attacker", "http-flood", lab.addr4("edge"), count=400,
                         concurrency=8, duration=10)
    assert flood.statuses == {200: 400} and flood.errors == {}, flood.summary()
    assert flood.params["sources"] == list(scenarios.ATTACKER_SOURCES)
    syn = run_scenario(lab, "attacker", "syn-flood", lab.addr4("edge"), count=3000,
                       sources=300, duration=10)
    assert syn.sent == 3000 and syn.params["dst_mac"] == lab.mac("edge")
    assert syn.params["iface"] == "eth0" and syn.params["sources"] == 300
    udp6 = run_scenario(lab, "attacker", "udp-flood", f"[{lab.addr6('edge')}]:5353", count=300,
                        sources=100, duration=10)
    assert (udp6.sent, udp6.target, udp6.params["sources"]) == (300, f"[{lab.addr6('edge')}]:5353", 100)
    assert udp6.params["dst_mac"] == lab.mac("edge")      # resolved by neighbour discovery
    # In-process, as the demo and benchmarks call them: inside the namespace's context.
    with scenarios.in_netns(lab.ns("attacker")):
        inproc = scenarios.syn_flood(lab.addr4("edge"), count=200, sources=50, duration=10)
    with scenarios.in_netns(lab.ns("client")):
        inproc_http = scenarios.legit(lab.addr4("edge"), count=10, rate=None, keepalive=False)
    assert inproc.sent == 200 and inproc.params["dst_mac"] == lab.mac("edge")
    assert inproc_http.ok == 10


def served_by(lab, host: str, addr: str, count: int) -> list[str]:
    """The x-server header of `count` new-connection GETs from `host`."""
    servers = []
    with scenarios.in_netns(lab.ns(host)):
        for _ in range(count):
            with socket.create_connection((addr, 80), timeout=2) as s:
                s.sendall(b"GET / HTTP/1.1\r\nhost: edge\r\nconnection: close\r\n\r\n")
                reply = b""
                while chunk := s.recv(4096):
                    reply += chunk
            servers += [line.split(b":", 1)[1].strip().decode() for line in reply.split(b"\r\n")
                        if line.lower().startswith(b"x-server:")]
    return servers


def test_edge_role_runs_edgestick_in_front_of_the_backends(lab, prov):
    prov.provision("backend")
    edge = prov.provision("edge")          # returns once the edge answers the client
    prov.provision("attacker")
    edge_addr = lab.addr4("edge")
    assert sorted(served_by(lab, "client", edge_addr, 4)) == ["s1", "s1", "s2", "s2"]
    # Replies to spoofed sources die at the edge (on a VM: not out of the NAT network).
    routes = lab.run("edge", ["ip", "route", "show", "type", "unreachable"]).stdout
    routes += lab.run("edge", ["ip", "-6", "route", "show", "type", "unreachable"]).stdout
    assert "198.18.64.0/18" in routes and "fd00:18:1::/48" in routes

    syn = run_scenario(lab, "attacker", "syn-flood", edge_addr, count=1200, sources=300, duration=10)
    assert syn.sent == 1200
    # Credential stuffing: the backends answer 401 until the proxy's http_err_rate rule
    # (gt 20 in 10 s) answers 403 from the 22nd error on.
    stuffing = run_scenario(lab, "attacker", "cred-stuff", edge_addr, count=60, concurrency=1)
    assert stuffing.statuses.get(401) == 21 and stuffing.first_status_at.get(403) == 22, stuffing.summary()
    legit = run_scenario(lab, "client", "legit", edge_addr, count=20, rate=0, new_connections=True)
    assert legit.ok == 20, legit.summary()

    run_dir = prov.workdir / "edge" / "run"
    done = lab.run("edge", [sys.executable, "-m", "edgestick", "top", "--once", "-n", "5000",
                            "--by", "pkt_rate", "-S", str(run_dir / "proxy.sock"),
                            "--shield", str(run_dir / "shield.sock")], check=False)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert f"on {lab.edge_if} " in out and "frontend http_front: requests " in out
    used = re.search(r"table http_front: used (\d+)/102400", out)
    assert used and int(used[1]) >= 2        # the attacker and the client (and mirrored sources)
    header = next(line.split() for line in out.splitlines() if line.startswith("source"))
    assert header[:6] == ["source", "conn/1s", "pkt/1s", "B/1s", "drops", "ban"]
    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:] if line[:1].isdigit()}
    # One story per source: the attacker's row has XDP counters and HTTP counters...
    attacker = dict(zip(header, rows[lab.addr4("attacker")]))
    assert attacker["pkt/1s"] != "-" and int(attacker["http_err_rate(10s)"]) >= 21
    # ...the spoofed sources only XDP ones, and all 300 of them are tracked.
    spoofed = [r for k, r in rows.items() if k.startswith("198.18.") and int(k.split(".")[2]) >= 64]
    assert len(spoofed) == 300 and all(r[-1] == "-" for r in spoofed)

    # The shield's socket alone is enough: XDP columns only.
    alone = lab.run("edge", [sys.executable, "-m", "edgestick", "top", "--once", "-n", "3",
                             "--shield", str(run_dir / "shield.sock")], check=False)
    assert alone.returncode == 0 and "frontend" not in alone.stdout
    header = next(line.split() for line in alone.stdout.splitlines() if line.startswith("source"))
    assert header == ["source", "conn/1s", "pkt/1s", "B/1s", "drops", "ban"]

    # The shield mirrors its counters into the proxy's table (edge.cfg: mirror http_front).
    ctl = [sys.executable, "-m", "edgestick", "ctl", "-S", str(run_dir / "proxy.sock"),
           f"show table http_front key {lab.addr4('attacker')}"]
    deadline = time.monotonic() + 10
    while "xdp_pkt_rate=" not in (entry := lab.run("edge", ctl).stdout) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "xdp_pkt_rate=" in entry and "http_err_rate(10000)=" in entry, entry

    # Prometheus's targets (vagrant/prometheus.yml) serve every metric the dashboard queries.
    exposed = set()
    vagrant = provision.REPO / "vagrant"
    with scenarios.in_netns(lab.ns("edge")):
        for target in re.findall(r'targets: \["([^"]+)"\]', (vagrant / "prometheus.yml").read_text()):
            with urllib.request.urlopen(f"http://{target}/metrics", timeout=5) as reply:
                for line in reply.read().decode().splitlines():
                    name = line.split()[2] if line.startswith("# TYPE ") else re.split(r"[{ ]", line)[0]
                    exposed |= {name, name + "_total"}
    dashboard = json.loads((vagrant / "grafana" / "edgestick-dashboard.json").read_text())
    queried = {m for p in dashboard["panels"] for t in p["targets"]
               for m in re.findall(r"\b(?:haproxy|edgestick)_[a-z0-9_]+", t["expr"])}
    assert queried and queried <= exposed, queried - exposed

    lab.destroy()                          # stops edgestick run with the namespace
    assert edge.poll() is not None
    assert not lab.pin_dir.exists()


def test_run_scenarios_script_drives_the_lab(lab, prov, tmp_path):
    """vagrant/run-scenarios.sh, pointed at the namespace lab instead of the VMs."""
    prov.provision("backend")
    prov.provision("edge")
    prov.provision("attacker")
    prov.provision("client")
    env = dict(os.environ, EDGESTICK_LAB=lab.prefix, EDGESTICK_VENV=sys.prefix,
               EDGE_RUN_DIR=str(prov.workdir / "edge" / "run"), RESULTS=str(tmp_path),
               FLOOD_SECONDS="1", FLOOD_FRAMES="20000", FLOOD_SOURCES="200",
               HTTP_FLOOD_REQUESTS="3000", STUFFING_REQUESTS="100", LEGIT_SECONDS="6")
    done = subprocess.run(["bash", str(provision.REPO / "vagrant" / "run-scenarios.sh")],
                          env=env, capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr[-3000:]
    results = {p.stem: scenarios.parse_result(p.read_text()) for p in tmp_path.glob("*.json")}
    assert set(results) == {"legit", "syn-flood", "udp-flood", "http-flood", "cred-stuff"}
    # The legitimate client kept being served through every attack.
    legit = results["legit"]
    assert legit.sent >= 20 and legit.success_rate == 1.0, legit.summary()
    assert results["syn-flood"].sent == 20000 and results["udp-flood"].sent == 20000
    # The HTTP flood from four sources went over seed 3's 100 requests per 10 s: 429s.
    assert results["http-flood"].statuses.get(429, 0) > 0, results["http-flood"].summary()
    assert results["cred-stuff"].statuses.get(403, 0) > 0, results["cred-stuff"].summary()
    assert "frontend http_front" in done.stdout and "# bans: active=" in done.stdout


def test_provision_command_on_a_lab_by_prefix(lab):
    done = subprocess.run([sys.executable, "-m", "edgestick.lab.provision", "--lab", lab.prefix,
                           "backend"], capture_output=True, text=True, timeout=60)
    try:
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("backend: provisioned")
        assert f"EDGESTICK_LAB={lab.prefix} " in done.stdout
        with scenarios.in_netns(lab.ns("edge")):
            assert http_get(BACKEND_ADDRS4[1], BACKEND_PORT) == 200
    finally:
        # The command recorded its service in the lab's state: a lab loaded from there
        # (as `edgestick lab down` does) stops it.
        recorded = Lab.load(lab.prefix)
        pids = list(recorded.pids)
        recorded.destroy()
        shutil.rmtree(Path(tempfile.gettempdir()) / f"edgestick-provision-{lab.prefix}", ignore_errors=True)
    assert len(pids) == 1
    assert not Path(f"/proc/{pids[0]}").exists()
    bad = subprocess.run([sys.executable, "-m", "edgestick.lab.provision", "--lab", "nolab"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "no lab 'nolab'" in bad.stderr


def test_run_scenarios_script_stops_its_client_when_a_scenario_fails(lab, tmp_path):
    # Nothing answers at .99: the SYN flood cannot resolve its next hop and fails.
    env = dict(os.environ, EDGESTICK_LAB=lab.prefix, EDGESTICK_VENV=sys.prefix, EDGE="198.18.0.99",
               RESULTS=str(tmp_path), LEGIT_SECONDS="60", FLOOD_SECONDS="1")
    done = subprocess.run(["bash", str(provision.REPO / "vagrant" / "run-scenarios.sh")],
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "no link-layer address for 198.18.0.99" in done.stderr
    deadline = time.monotonic() + 5
    while subprocess.run(["ip", "netns", "pids", lab.ns("client")], capture_output=True,
                         text=True).stdout.strip():
        assert time.monotonic() < deadline, "the legitimate client outlived the script"
        time.sleep(0.1)
