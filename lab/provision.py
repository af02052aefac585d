"""Run the Vagrant lab's provisioning scripts (vagrant/provision/*.sh) inside the
namespace lab, so CI exercises the very steps a VM runs, without VMs.

Each script gets the lab's parameters as environment variables (role, addresses,
interfaces, folders) and `EDGESTICK_NO_SYSTEMD=1`: the roles with a service (backend,
edge) then run it in the foreground, started with `lab.popen`, so `lab.destroy()` kills
it. Nothing is written outside a per-lab work folder (removed by `close()`) and the lab's
bpffs folder.

    with Provisioner(lab) as prov:
        prov.provision("backend")          # returns once both backends answer /health
        prov.provision("attacker")         # extra source addresses, scenario runner

By hand, on the lab `edgestick lab up` built (its services stop with `edgestick lab down`):

    python -m edgestick.lab.provision [--lab PREFIX] [ROLE ...]
"""
from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .scenarios import ATTACKER_SOURCES, in_netns
from .topology import (BACKEND_ADDRS4, EDGE_INNER, HOSTS, LAN_PREFIX, SPOOF_NET4, SPOOF_NET6,
                       Lab, known_labs)

REPO = Path(__file__).resolve().parent.parent
PROVISION_DIR = REPO / "vagrant" / "provision"
ROLES = ("attacker", "client", "edge", "backend")
BACKEND_PORT = 8080
BACKEND_NAMES = tuple(f"s{i + 1}" for i in range(len(BACKEND_ADDRS4)))
EDGE_HTTP_PORT = 80


class ProvisionError(RuntimeError):
    pass


def backend_servers() -> str:
    """EDGESTICK_BACKENDS for the lab's backend host: both servers in one process."""
    return " ".join(f"{n}={a}:{BACKEND_PORT}" for n, a in zip(BACKEND_NAMES, BACKEND_ADDRS4))


def role_env(role: str, workdir: Path, pin_dir: Path | None = None) -> dict[str, str]:
    """The environment a role's script gets in the namespace lab (a VM gets the same
    variables from the Vagrantfile)."""
    if role not in ROLES:
        raise ValueError(f"unknown role '{role}' (roles: {', '.join(ROLES)})")
    host = HOSTS[role]
    env = {
        "EDGESTICK_ROLE": role,
        "EDGESTICK_REPO": str(REPO),
        "EDGESTICK_VENV": sys.prefix,
        "EDGESTICK_ADDR4": host.addr4,
        "EDGESTICK_ADDR6": host.addr6,
        "EDGESTICK_PREFIX4": str(LAN_PREFIX[0]),
        "EDGESTICK_PREFIX6": str(LAN_PREFIX[1]),
        "EDGESTICK_ETC": str(workdir / role / "etc"),
        "EDGESTICK_RUN_DIR": str(workdir / role / "run"),
        "EDGESTICK_NO_SYSTEMD": "1",
    }
    if role == "attacker":
        env["EDGESTICK_EXTRA_ADDRS"] = " ".join(ATTACKER_SOURCES)
    elif role == "backend":
        env["EDGESTICK_BACKENDS"] = backend_servers()
    elif role == "edge":
        env["EDGESTICK_OUTSIDE_ADDR4"] = host.addr4
        env["EDGESTICK_INSIDE_ADDR4"] = EDGE_INNER.addr4
        env["EDGESTICK_INSIDE_ADDR6"] = EDGE_INNER.addr6
        env["EDGESTICK_SPOOF_NETS"] = f"{SPOOF_NET4} {SPOOF_NET6}"
        if pin_dir is not None:
            env["EDGESTICK_PIN_DIR"] = str(pin_dir / "edge")
    return env


def http_get(host: str, port: int, path: str = "/health", timeout: float = 1.0) -> int:
    """Status of one GET in the current network namespace (0: no answer)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n".encode())
            head = s.recv(64)
        return int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/1.") else 0
    except (OSError, ValueError, IndexError):
        return 0


class Provisioner:
    """Provisions the hosts of one lab with the Vagrant scripts."""

    def __init__(self, lab: Lab, workdir: Path | None = None):
        self.lab = lab
        if workdir is None:
            workdir = Path(tempfile.mkdtemp(prefix=f"edgestick-provision-{lab.prefix}-"))
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.services: dict[str, subprocess.Popen] = {}

    def env(self, role: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("EDGESTICK_")}
        env.update(role_env(role, self.workdir, self.lab.pin_dir))
        return env

    def log(self, role: str) -> Path:
        return self.workdir / f"{role}.log"

    def provision(self, role: str, timeout: float = 60.0):
        """Run vagrant/provision/<role>.sh in the lab host of that role. For attacker and
        client: returns the finished process. For backend and edge: returns the service
        process once it answers (backends /health from the edge, the edge from the
        client)."""
        script = PROVISION_DIR / f"{role}.sh"
        argv = ["bash", str(script)]
        env = self.env(role)
        if role in ("attacker", "client"):
            done = self.lab.run(role, argv, check=False, timeout=timeout, env=env)
            self.log(role).write_text(done.stdout + done.stderr)
            if done.returncode != 0:
                raise ProvisionError(f"{script.name} failed ({done.returncode}):\n{done.stderr[-2000:]}")
            return done
        with open(self.log(role), "wb") as out:
            proc = self.lab.popen(role, argv, env=env, stdout=out, stderr=subprocess.STDOUT)
        self.services[role] = proc
        if role == "backend":
            probes = [("edge", addr, BACKEND_PORT) for addr in BACKEND_ADDRS4]
        else:
            probes = [("client", HOSTS["edge"].addr4, EDGE_HTTP_PORT)]
        deadline = time.monotonic() + timeout
        pending = list(probes)
        while pending:
            if proc.poll() is not None:
                raise ProvisionError(f"{script.name} exited ({proc.returncode}) before its "
                                     f"service answered:\n{self.log(role).read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise ProvisionError(f"{script.name}: no answer from {pending} within {timeout}s:\n"
                                     f"{self.log(role).read_text()[-2000:]}")
            host, addr, port = pending[0]
            with in_netns(self.lab.ns(host)):
                status = http_get(addr, port)
            if status:
                pending.pop(0)
            else:
                time.sleep(0.1)
        return proc

    def close(self) -> None:
        """Remove the work folder (the lab's destroy() ends the services)."""
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> "Provisioner":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


ORDER = ("backend", "edge", "attacker", "client")     # the edge checks its backends


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m edgestick.lab.provision",
                                description="Provision the namespace lab's hosts with vagrant/provision/*.sh.")
    p.add_argument("--lab", help="the lab's prefix (default: the lab 'edgestick lab up' built)")
    p.add_argument("roles", nargs="*", choices=[[], *ORDER], metavar="ROLE",
                   help=f"roles to provision, in this order: {' '.join(ORDER)} (default: all)")
    a = p.parse_args(argv)
    labs = [lab for lab in known_labs() if (lab.prefix == a.lab if a.lab else lab.persistent)]
    if not labs:
        p.error(f"no lab '{a.lab}'" if a.lab else "no lab: run 'edgestick lab up' first")
    lab = labs[0]
    workdir = Path(tempfile.gettempdir()) / f"edgestick-provision-{lab.prefix}"
    prov = Provisioner(lab, workdir)
    for role in [r for r in ORDER if r in (a.roles or ORDER)]:
        try:
            prov.provision(role)
        except (ProvisionError, subprocess.TimeoutExpired) as e:
            print(f"provision {role}: {e}\n(logs in {workdir})", file=sys.stderr)
            return 1
        print(f"{role}: provisioned (log {prov.log(role)})")
    print(f"run the scenarios: EDGESTICK_LAB={lab.prefix} EDGE_RUN_DIR={workdir}/edge/run "
          f"vagrant/run-scenarios.sh")
    return 0


if __name__ == "__main__":
    sys.exit(main())
