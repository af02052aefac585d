"""`edgestick lab demo` (what `make demo` runs): the whole product in a fresh lab.

1. build the lab and provision it with the Vagrant scripts (backends, `edgestick run` on
   the edge with vagrant/edge.cfg, the attacker's and the client's tools);
2. run vagrant/run-scenarios.sh against it: a legitimate client for the whole run while
   the attacker sends a spoofed SYN flood, a spoofed UDP flood, an HTTP request flood and
   credential stuffing, one after the other;
3. meanwhile, show the `edgestick top` view every few seconds;
4. print a summary (legitimate success rate, drops by layer and reason, bans made), tear
   everything down and exit 0 (1 if a step failed).

The Prometheus endpoints are live while it runs, inside the edge namespace:
proxy 127.0.0.1:8405/metrics, shield 127.0.0.1:9107/metrics
(`nsenter --net=/run/netns/<prefix>-edge curl -s 127.0.0.1:9107/metrics`).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .provision import ORDER, ProvisionError, Provisioner
from .topology import HOSTS, Lab

REPO = Path(__file__).resolve().parent.parent
RUN_SCENARIOS = REPO / "vagrant" / "run-scenarios.sh"


def _say(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m" if sys.stdout.isatty() else f"\n== {text}", flush=True)


def _ctl(sock: Path, command: str) -> str:
    from edgestick.control.runtime_client import RuntimeApiError, RuntimeClient
    try:
        return RuntimeClient(str(sock), timeout=3).command(command)
    except RuntimeApiError as e:
        return f"({e})\n"


def _top_frame(run_dir: Path) -> str:
    done = subprocess.run([sys.executable, "-m", "edgestick", "top", "--once", "-n", "8",
                           "-S", str(run_dir / "proxy.sock"), "--shield", str(run_dir / "shield.sock")],
                          capture_output=True, text=True, timeout=20)
    return done.stdout or done.stderr


def _summary(results: Path, run_dir: Path) -> tuple[str, bool]:
    lines, ok = [], True
    legit_file = results / "legit.json"
    try:
        legit = json.loads(legit_file.read_text().strip().splitlines()[-1])
        statuses = {int(k): v for k, v in legit.get("statuses", {}).items()}
        good = sum(v for k, v in statuses.items() if 200 <= k < 300)
        rate = 100.0 * good / legit["sent"] if legit.get("sent") else 0.0
        lines.append(f"legitimate client: {good}/{legit['sent']} requests succeeded ({rate:.1f} %), "
                     f"latency {legit.get('latency_ms', {})}")
    except (OSError, ValueError, KeyError, IndexError) as e:
        lines.append(f"legitimate client: no result ({e})")
        ok = False
    for name in ("syn-flood", "udp-flood", "http-flood", "cred-stuff"):
        try:
            r = json.loads((results / f"{name}.json").read_text().strip().splitlines()[-1])
            answered = ", ".join(f"{k}: {v}" for k, v in sorted(r.get("statuses", {}).items()))
            errors = ", ".join(f"{k}: {v}" for k, v in sorted(r.get("errors", {}).items()))
            lines.append(f"attacker {name:<10} sent {r.get('sent', 0):>8} in {r.get('seconds', 0):.1f}s"
                         + (f"  answers {answered}" if answered else "")
                         + (f"  errors {errors}" if errors else ""))
        except (OSError, ValueError, IndexError):
            lines.append(f"attacker {name:<10} no result")
    lines.append("\nXDP layer (show shield):")
    lines.append(_ctl(run_dir / "shield.sock", "show shield").rstrip())
    lines.append("\nbans made (show bans):")
    lines.append(_ctl(run_dir / "shield.sock", "show bans").rstrip() or "(none)")
    lines.append("\nHTTP layer (show stat: frontend denials and responses by class):")
    stat = _ctl(run_dir / "proxy.sock", "show stat")
    header, rows = None, []
    for row in stat.splitlines():
        if row.startswith("# "):
            header = row[2:].split(",")
        elif header and row:
            rows.append(dict(zip(header, row.split(","))))
    for r in rows:
        if r.get("svname") == "FRONTEND":
            lines.append(f"  {r['pxname']}: requests {r.get('req_tot', '?')}, denied {r.get('dreq', '?')}, "
                         f"2xx {r.get('hrsp_2xx', '?')}, 4xx {r.get('hrsp_4xx', '?')}, 5xx {r.get('hrsp_5xx', '?')}")
    return "\n".join(lines), ok


def run_demo(flood_seconds: float = 8.0) -> int:
    lab = Lab.create()
    workdir = Path(tempfile.mkdtemp(prefix=f"edgestick-demo-{lab.prefix}-"))
    prov = Provisioner(lab, workdir)
    run_dir = workdir / "edge" / "run"
    results = workdir / "results"
    status = 0
    try:
        _say(f"lab {lab.prefix}: attacker {HOSTS['attacker'].addr4}, client {HOSTS['client'].addr4}, "
             f"edge {HOSTS['edge'].addr4}, backends 198.19.0.2-3")
        for role in ORDER:
            t0 = time.monotonic()
            prov.provision(role, timeout=90)
            print(f"  {role:<8} provisioned in {time.monotonic() - t0:.1f}s (log {prov.log(role)})")
        _say("metrics while it runs: nsenter --net=/run/netns/"
             f"{lab.ns('edge')} curl -s 127.0.0.1:9107/metrics  (shield), 127.0.0.1:8405/metrics (proxy)")
        _say("traffic: legitimate client throughout; attacker: SYN flood, UDP flood, HTTP flood, credential stuffing")
        env = dict(os.environ, EDGESTICK_LAB=lab.prefix, EDGESTICK_VENV=sys.prefix,
                   EDGE_RUN_DIR=str(run_dir), RESULTS=str(results),
                   FLOOD_SECONDS=str(int(flood_seconds)), FLOOD_FRAMES="300000",
                   HTTP_FLOOD_REQUESTS="20000", STUFFING_REQUESTS="1000")
        with open(workdir / "scenarios.log", "wb") as log:
            scenarios = subprocess.Popen(["bash", str(RUN_SCENARIOS)], env=env, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 6 * flood_seconds + 60
        try:
            while scenarios.poll() is None and time.monotonic() < deadline:
                time.sleep(min(4.0, flood_seconds / 2))
                stage = [l for l in (workdir / "scenarios.log").read_text().splitlines() if l.startswith("== ")]
                _say(f"live ({stage[-1][3:] if stage else 'starting'})")
                print(_top_frame(run_dir), flush=True)
        finally:
            if scenarios.poll() is None:      # the script and its scenario children
                os.killpg(scenarios.pid, signal.SIGKILL)
                status = 1
                print("scenarios did not finish in time", file=sys.stderr)
            scenarios.wait()
        if scenarios.returncode:
            status = 1
            print((workdir / "scenarios.log").read_text()[-3000:], file=sys.stderr)
        _say("summary")
        text, ok = _summary(results, run_dir)
        print(text, flush=True)
        status = status or (0 if ok else 1)
    except (ProvisionError, subprocess.SubprocessError, OSError) as e:
        print(f"demo failed: {e}", file=sys.stderr)
        status = 1
    finally:
        lab.destroy()
        prov.close()
        _say(f"lab {lab.prefix} removed")
    return status


def main(args) -> int:
    return run_demo(flood_seconds=args.duration or 8.0)
