"""The Vagrant lab's provisioning scripts (vagrant/provision/) run inside the namespace
lab with the lab's parameters: the same steps a VM runs, exercised without VMs."""
import sys
import time

import pytest

from edgestick.lab import scenarios
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
                       sources=2000, duration=10)
    assert syn.sent == 3000 and syn.params["dst_mac"] == lab.mac("edge")
    assert syn.params["iface"] == "eth0" and syn.params["sources"] == 2000
