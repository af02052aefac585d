"""vagrant/: the Vagrantfile is valid and describes exactly the namespace lab's hosts and
addresses; the provisioning scripts parse; the Grafana dashboard queries only metrics our
exporters define; Prometheus scrapes the addresses edge.cfg serves them on."""
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from edgestick.cfgsyntax import read_lines
from edgestick.lab import provision, scenarios
from edgestick.lab.topology import BACKEND_ADDRS4, EDGE_INNER, HOSTS

ROOT = Path(__file__).resolve().parents[2]
VAGRANT = ROOT / "vagrant"
SCRIPTS = sorted((VAGRANT / "provision").glob("*.sh")) + [VAGRANT / "run-scenarios.sh"]

# Loads the Vagrantfile with a recording stand-in for Vagrant's config objects and prints
# what it declares: machines, their networks and provisioners, as JSON.
RECORDER = r'''
require "json"
class Anything
  def method_missing(*_args, **_kw, &blk)
    blk.call(Anything.new) if blk
    self
  end
  def respond_to_missing?(*) = true
end
class VMConfig < Anything
  attr_reader :networks, :provisions, :machines
  def initialize; @networks = []; @provisions = []; @machines = {}; end
  def network(type, **opts) = @networks << opts.merge(type: type)
  def provision(type, **opts) = @provisions << opts.merge(type: type)
  def define(name, **_opts)
    machine = Config.new
    yield machine
    @machines[name] = { networks: machine.vm.networks, provisions: machine.vm.provisions }
  end
end
class Config < Anything
  def vm = (@vm ||= VMConfig.new)
end
module Vagrant
  def self.configure(_version)
    @config = Config.new
    yield @config
  end
  def self.recorded = @config
end
Dir.chdir(File.dirname(ARGV[0])) { load ARGV[0] }
puts JSON.generate(Vagrant.recorded.vm.machines)
'''


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} is not installed: scripts/setup-host.sh installs it (package vagrant)")
    return path


@pytest.fixture(scope="module")
def machines() -> dict:
    done = subprocess.run([need("ruby"), "-e", RECORDER, str(VAGRANT / "Vagrantfile")],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_vagrantfile_syntax_and_vagrant_validate(tmp_path):
    done = subprocess.run([need("ruby"), "-c", "Vagrantfile"], cwd=VAGRANT,
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and "Syntax OK" in done.stdout, done.stderr
    env = dict(os.environ, VAGRANT_HOME=str(tmp_path / "home"),
               VAGRANT_DOTFILE_PATH=str(tmp_path / "dot"), VAGRANT_CHECKPOINT_DISABLE="1")
    done = subprocess.run([need("vagrant"), "validate", "--ignore-provider"], cwd=VAGRANT,
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def lab_host(machine: str) -> str:
    return "backend" if machine.startswith("backend") else machine


def private_ips(m: dict) -> list[str]:
    return [n["ip"] for n in m["networks"] if n["type"] == "private_network"]


def test_vagrantfile_has_exactly_the_lab_hosts_and_addresses(machines):
    assert set(machines) == {"attacker", "client", "edge", "backend1", "backend2"}
    assert {lab_host(m) for m in machines} == set(HOSTS)
    expected = {
        "attacker": [HOSTS["attacker"].addr4],
        "client": [HOSTS["client"].addr4],
        "edge": [HOSTS["edge"].addr4, EDGE_INNER.addr4],
        "backend1": [BACKEND_ADDRS4[0]],
        "backend2": [BACKEND_ADDRS4[1]],
    }
    assert {name: private_ips(m) for name, m in machines.items()} == expected
    for m in machines.values():
        for net in m["networks"]:
            assert net["netmask"] == "255.255.255.0"
            assert net["libvirt__forward_mode"] == "none"           # isolated: floods stay in
            assert net["libvirt__host_ip"] not in {a for ips in expected.values() for a in ips}


def test_each_vm_is_provisioned_with_the_lab_roles_parameters(machines, tmp_path):
    backends = []
    for name, m in machines.items():
        role = lab_host(name)
        shell = [p for p in m["provisions"] if p["type"] == "shell"]
        assert shell[0]["path"] == f"provision/{role}.sh"
        assert all((VAGRANT / p["path"]).is_file() for p in shell)
        env = shell[0]["env"]
        lab_env = provision.role_env(role, tmp_path, tmp_path)
        # Same variables as the namespace lab, apart from the VM's own folders and systemd.
        assert set(env) - {"EDGESTICK_REPO", "EDGESTICK_VENV"} <= set(lab_env), name
        assert env["EDGESTICK_ROLE"] == role
        if role != "backend":
            for key in ("EDGESTICK_ADDR4", "EDGESTICK_ADDR6", "EDGESTICK_EXTRA_ADDRS",
                        "EDGESTICK_OUTSIDE_ADDR4", "EDGESTICK_INSIDE_ADDR4", "EDGESTICK_INSIDE_ADDR6",
                        "EDGESTICK_SPOOF_NETS"):
                assert env.get(key) == lab_env.get(key), (name, key)
        else:
            assert env["EDGESTICK_ADDR4"] == private_ips(m)[0]
            backends += env["EDGESTICK_BACKENDS"].split()
    assert machines["attacker"]["provisions"][0]["env"]["EDGESTICK_EXTRA_ADDRS"].split() == \
        list(scenarios.ATTACKER_SOURCES)
    assert backends == provision.backend_servers().split()
    assert machines["backend1"]["provisions"][0]["env"]["EDGESTICK_ADDR6"] == HOSTS["backend"].addr6
    assert [p["path"] for p in machines["edge"]["provisions"]] == \
        ["provision/edge.sh", "provision/monitoring.sh"]


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_provisioning_scripts_parse(script):
    done = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, timeout=10)
    assert done.returncode == 0, done.stderr


def exporter_metric_names() -> set[str]:
    """Every metric family our exporters define, found in their source; counters are
    exposed with a `_total` suffix."""
    names = set()
    for path in [*(ROOT / "proxy").glob("*.py"), *(ROOT / "control").glob("*.py")]:
        for name in re.findall(r"""["']((?:haproxy|edgestick)_[a-z0-9_]+)["']""", path.read_text()):
            names |= {name, name if name.endswith("_total") else name + "_total"}
    return names


def test_dashboard_queries_only_metrics_our_exporters_define():
    dash = json.loads((VAGRANT / "grafana" / "edgestick-dashboard.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    queried = {m for e in exprs for m in re.findall(r"\b(?:haproxy|edgestick)_[a-z0-9_]+", e)}
    assert queried - exporter_metric_names() == set()
    # The panels the lab needs: drops by reason, legitimate vs denied, bans, sources,
    # stick-table use.
    for needed in ("edgestick_xdp_drops_total", "haproxy_frontend_http_responses_total",
                   "haproxy_frontend_requests_denied_total", "edgestick_xdp_bans_active",
                   "edgestick_xdp_sources_tracked", "haproxy_sticktable_used",
                   "haproxy_sticktable_size"):
        assert needed in queried
    # Every panel reads the data source monitoring.sh provisions.
    uid = re.search(r"uid: (\S+)", (VAGRANT / "provision" / "monitoring.sh").read_text())[1]
    assert {t["datasource"]["uid"] for p in dash["panels"] for t in p["targets"]} == {uid}
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))


def test_prometheus_scrapes_where_edge_cfg_serves_metrics():
    targets = re.findall(r'targets: \["([^"]+)"\]', (VAGRANT / "prometheus.yml").read_text())
    lines = read_lines((VAGRANT / "edge.cfg").read_text(), "edge.cfg")
    served = set()
    section = None
    for line in lines:
        if line.words[0] in ("frontend", "shield", "global", "defaults", "backend"):
            section = list(line.words[:2])
        elif section == ["frontend", "metrics"] and line.words[0] == "bind":
            served.add(line.words[1])
        elif section and section[0] == "shield" and line.words[:2] == ("metrics", "bind"):
            served.add(line.words[2])
    assert sorted(targets) == sorted(served) and len(served) == 2
