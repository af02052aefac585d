"""The lab topology in network namespaces, built with pyroute2.

                       switch (bridge br0)
      attacker eth0 ──┤                 ├── ext0 edge int0 ── eth0 backend
      client   eth0 ──┘                                   (two backend addresses)

Outside LAN 198.18.0.0/24 and fd00:18::/64; inside link 198.19.0.0/24 and fd00:19::/64.
The attacker spoofs sources from 198.18.64.0/18 and fd00:18:1::/48, which the edge has no
route back to. The same hosts and addresses are what vagrant/ describes as VMs.

Every lab has a unique prefix and a state file under /run/edgestick/labs recording its
namespaces, processes and bpffs folder, so `destroy()` (or the next run, after a crash)
removes everything it made and nothing else.
"""
from __future__ import annotations

import errno
import ipaddress
import json
import os
import secrets
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from pyroute2 import IPRoute, netns

STATE_DIR = Path(os.environ.get("EDGESTICK_LAB_STATE", "/run/edgestick/labs"))
BPFFS = Path("/sys/fs/bpf")
IFA_F_NODAD = 0x02  # addresses usable at once, no duplicate-address wait


@dataclass(frozen=True)
class Host:
    name: str
    ifname: str              # its interface towards the switch (or towards the edge)
    addr4: str
    addr6: str


# The address plan. The edge has two interfaces: EDGE_IF outside, EDGE_INNER_IF inside.
EDGE_IF = "ext0"
EDGE_INNER_IF = "int0"
HOSTS = {
    "attacker": Host("attacker", "eth0", "198.18.0.66", "fd00:18::66"),
    "client": Host("client", "eth0", "198.18.0.10", "fd00:18::10"),
    "edge": Host("edge", EDGE_IF, "198.18.0.1", "fd00:18::1"),
    "backend": Host("backend", "eth0", "198.19.0.2", "fd00:19::2"),
}
EDGE_INNER = Host("edge", EDGE_INNER_IF, "198.19.0.1", "fd00:19::1")
BACKEND_ADDRS4 = ("198.19.0.2", "198.19.0.3")   # two backend servers on one host
SPOOF_NET4 = ipaddress.ip_network("198.18.64.0/18")
SPOOF_NET6 = ipaddress.ip_network("fd00:18:1::/48")
LAN_PREFIX = (24, 64)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Lab:
    """A running lab. Build one with `Lab.create()`, remove it with `destroy()`."""

    def __init__(self, prefix: str, persistent: bool = False):
        self.prefix = prefix
        self.persistent = persistent
        self.pin_dir = BPFFS / prefix
        self.state_file = STATE_DIR / f"{prefix}.json"
        self.pids: list[int] = []

    # ---- names and addresses ------------------------------------------------------
    def ns(self, host: str) -> str:
        if host not in HOSTS and host != "switch":
            raise KeyError(f"no lab host '{host}' (hosts: {', '.join(HOSTS)})")
        return f"{self.prefix}-{host}"

    @property
    def namespaces(self) -> list[str]:
        return [self.ns(h) for h in (*HOSTS, "switch")]

    edge_if = EDGE_IF
    edge_inner_if = EDGE_INNER_IF

    @staticmethod
    def addr4(host: str) -> str:
        return HOSTS[host].addr4

    @staticmethod
    def addr6(host: str) -> str:
        return HOSTS[host].addr6

    @staticmethod
    def ifname(host: str) -> str:
        return HOSTS[host].ifname

    def mac(self, host: str, ifname: str | None = None) -> str:
        with IPRoute(netns=self.ns(host), flags=0) as ipr:
            link = ipr.link("get", index=ipr.link_lookup(ifname=ifname or HOSTS[host].ifname)[0])[0]
            return link.get("IFLA_ADDRESS")

    # ---- life cycle -----------------------------------------------------------------
    @classmethod
    def create(cls, prefix: str | None = None, persistent: bool = False) -> "Lab":
        """Build the lab. Stale labs of dead test runs are removed first."""
        sweep_stale()
        lab = cls(prefix or "es" + secrets.token_hex(3), persistent)
        lab._save()                      # recorded before anything exists: a crash is recoverable
        try:
            lab._build()
        except BaseException:
            lab.destroy()
            raise
        return lab

    def _save(self) -> None:
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        state = {"prefix": self.prefix, "persistent": self.persistent, "owner": os.getpid(),
                 "namespaces": self.namespaces, "pids": self.pids, "pin_dir": str(self.pin_dir)}
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        tmp.replace(self.state_file)

    @classmethod
    def load(cls, prefix: str) -> "Lab":
        state = json.loads((STATE_DIR / f"{prefix}.json").read_text())
        lab = cls(state["prefix"], state["persistent"])
        lab.pids = list(state.get("pids", []))
        return lab

    def _build(self) -> None:
        for name in self.namespaces:
            netns.create(name)
        self.pin_dir.mkdir(parents=True, exist_ok=True)
        switch = self.ns("switch")
        with IPRoute(netns=switch, flags=0) as ipr:
            ipr.link("add", ifname="br0", kind="bridge")
            br = ipr.link_lookup(ifname="br0")[0]
            for host in ("attacker", "client", "edge"):
                port = f"p-{host}"
                ipr.link("add", ifname=port, kind="veth",
                         peer={"ifname": HOSTS[host].ifname, "net_ns_fd": self.ns(host)})
                idx = ipr.link_lookup(ifname=port)[0]
                ipr.link("set", index=idx, master=br, state="up")
            ipr.link("set", index=br, state="up")
        with IPRoute(netns=self.ns("edge"), flags=0) as ipr:
            ipr.link("add", ifname=EDGE_INNER_IF, kind="veth",
                     peer={"ifname": HOSTS["backend"].ifname, "net_ns_fd": self.ns("backend")})
        addresses = {
            "attacker": [(HOSTS["attacker"], ())],
            "client": [(HOSTS["client"], ())],
            "edge": [(HOSTS["edge"], ()), (EDGE_INNER, ())],
            "backend": [(HOSTS["backend"], BACKEND_ADDRS4[1:])],
        }
        for host, links in addresses.items():
            with IPRoute(netns=self.ns(host), flags=0) as ipr:
                ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
                for link, extra4 in links:
                    idx = ipr.link_lookup(ifname=link.ifname)[0]
                    for a in (link.addr4, *extra4):
                        ipr.addr("add", index=idx, address=a, prefixlen=LAN_PREFIX[0])
                    ipr.addr("add", index=idx, address=link.addr6, prefixlen=LAN_PREFIX[1],
                             flags=IFA_F_NODAD)
                    ipr.link("set", index=idx, state="up")
        # The backend answers the edge's inside address only; clients reach the edge only.
        self._save()

    def destroy(self) -> None:
        """Remove everything this lab made: processes, namespaces (with their veth and
        XDP programs), pinned BPF objects, the state file. Safe to call twice."""
        for pid in self.pids:
            _kill_group(pid)
        for name in self.namespaces:
            if os.path.exists(f"/run/netns/{name}"):
                try:
                    netns.remove(name)
                except OSError as e:
                    if e.errno != errno.ENOENT:
                        raise
        shutil.rmtree(self.pin_dir, ignore_errors=True)
        self.pids = []
        self.state_file.unlink(missing_ok=True)

    def __enter__(self) -> "Lab":
        return self

    def __exit__(self, *exc) -> None:
        self.destroy()

    # ---- processes ------------------------------------------------------------------
    def command(self, host: str, argv: list[str]) -> list[str]:
        """argv run inside `host`'s network namespace. nsenter changes only the network
        namespace, so /sys/fs/bpf stays visible (unlike `ip netns exec`)."""
        return ["nsenter", f"--net=/run/netns/{self.ns(host)}", "--", *argv]

    def popen(self, host: str, argv: list[str], **kwargs) -> subprocess.Popen:
        """Start a process in `host`; it is killed (with its process group) by destroy()."""
        kwargs.setdefault("start_new_session", True)
        proc = subprocess.Popen(self.command(host, argv), **kwargs)
        self.pids.append(proc.pid)
        self._save()
        return proc

    def run(self, host: str, argv: list[str], check: bool = True, timeout: float = 60,
            **kwargs) -> subprocess.CompletedProcess:
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("text", True)
        return subprocess.run(self.command(host, argv), check=check, timeout=timeout, **kwargs)

    def status(self) -> dict:
        present = [n for n in self.namespaces if os.path.exists(f"/run/netns/{n}")]
        return {"prefix": self.prefix, "persistent": self.persistent,
                "namespaces": present, "processes": [p for p in self.pids if _pid_alive(p)],
                "pin_dir": str(self.pin_dir) if self.pin_dir.exists() else None}


def _kill_group(pid: int, grace: float = 3.0) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            if os.waitpid(pid, os.WNOHANG)[0]:
                return
        except ChildProcessError:       # not our child: poll for its end instead
            if not _pid_alive(pid):
                return
        time.sleep(0.05)
    try:
        os.killpg(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


def known_labs() -> list[Lab]:
    if not STATE_DIR.is_dir():
        return []
    labs = []
    for f in sorted(STATE_DIR.glob("*.json")):
        try:
            labs.append(Lab.load(f.stem))
        except (ValueError, KeyError, OSError):
            f.unlink(missing_ok=True)
    return labs


def sweep_stale() -> list[str]:
    """Destroy ephemeral labs whose creating process is gone (a crashed test run)."""
    removed = []
    for f in STATE_DIR.glob("*.json") if STATE_DIR.is_dir() else ():
        try:
            state = json.loads(f.read_text())
        except (ValueError, OSError):
            continue
        if not state.get("persistent") and not _pid_alive(state.get("owner", 0)):
            Lab.load(state["prefix"]).destroy()
            removed.append(state["prefix"])
    return removed
