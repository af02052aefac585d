"""control/run.py's supervisor with real child processes: restart with back-off, signal
forwarding, stop order, kill after grace, start-up failure, "not built yet"."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

# A child that logs its life to a file: start, signals received, exit.
CHILD = r'''
import os, signal, sys, time
log, mode = sys.argv[1], sys.argv[2]
def note(what):
    with open(log, "a") as f:
        f.write(f"{time.monotonic():.6f} {os.getpid()} {what}\n")
starts = sum(1 for l in open(log) if l.split()[2] == "start") if os.path.exists(log) else 0
note("start")
def on_term(*_):
    note("term")
    if mode != "ignore-term":
        time.sleep(0.1)
        sys.exit(0)
signal.signal(signal.SIGTERM, on_term)
signal.signal(signal.SIGUSR2, lambda *_: note("usr2"))
if mode == "fail-soon":                  # a bad configuration, found once the others are up
    time.sleep(0.2)
    sys.exit(7)
deadline = time.monotonic() + 20          # bounded even if nobody stops it
while time.monotonic() < deadline:
    if mode == "crash-twice" and starts < 2 and time.monotonic() > deadline - 20 + 0.6:
        note("crash")
        sys.exit(3)
    time.sleep(0.02)
'''

# Drives a Supervisor built from JSON: [(name, mode, grace, reloads)], after_stop argv list.
DRIVER = r'''
import json, signal, sys
from edgestick.control.run import Child, Supervisor, launch
spec = json.loads(sys.argv[1])
children = [Child(n, [sys.executable, spec["child"], spec["dir"] + "/" + n + ".log", mode],
                  module=module, grace=grace, reload_signal=signal.SIGUSR2 if reload else None)
            for n, mode, grace, reload, module in spec["children"]]
sys.exit(launch(Supervisor(children, spec.get("after_stop"), backoff_first=0.1,
                           early_failure=spec.get("early_failure", 0.4))))
'''


def events(path: Path) -> list[tuple[float, int, str]]:
    if not path.exists():
        return []
    return [(float(t), int(p), w) for t, p, w in (line.split() for line in path.read_text().splitlines())]


def wait_for(pred, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def start(tmp_path):
    (tmp_path / "child.py").write_text(CHILD)
    (tmp_path / "driver.py").write_text(DRIVER)
    procs = []

    def _start(children, after_stop=None, early_failure=0.4):
        spec = {"child": str(tmp_path / "child.py"), "dir": str(tmp_path),
                "children": children, "after_stop": after_stop, "early_failure": early_failure}
        proc = subprocess.Popen([sys.executable, str(tmp_path / "driver.py"), json.dumps(spec)],
                                stderr=subprocess.PIPE, text=True)
        procs.append(proc)
        return proc
    yield _start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_crashed_child_restarts_reload_and_clean_stop(tmp_path, start):
    marker = tmp_path / "detached"
    sup = start([["shield", "crash-twice", 2.0, False, ""], ["proxy", "run", 2.0, True, ""]],
                after_stop=[[sys.executable, "-c", f"open({str(marker)!r}, 'w').write('ok')"]])
    shield_log, proxy_log = tmp_path / "shield.log", tmp_path / "proxy.log"
    # two crashes, each followed by a restart after the back-off
    assert wait_for(lambda: [w for _, _, w in events(shield_log)].count("start") == 3)
    shield_events = events(shield_log)
    crashes = [t for t, _, w in shield_events if w == "crash"]
    restarts = [t for t, _, w in shield_events if w == "start"][1:]
    assert len(crashes) == 2
    assert restarts[0] - crashes[0] >= 0.1 and restarts[1] - crashes[1] >= 0.2   # back-off doubles
    assert len({p for _, p, _ in shield_events}) == 3                          # new processes
    assert [w for _, _, w in events(proxy_log)] == ["start"]                   # the other kept running

    sup.send_signal(signal.SIGUSR2)
    assert wait_for(lambda: [w for _, _, w in events(proxy_log)].count("usr2") == 1)
    sup.send_signal(signal.SIGHUP)
    assert wait_for(lambda: [w for _, _, w in events(proxy_log)].count("usr2") == 2)
    assert "usr2" not in [w for _, _, w in events(shield_log)]                 # reload is the proxy's

    sup.send_signal(signal.SIGTERM)
    assert sup.wait(timeout=10) == 0
    proxy_term = [t for t, _, w in events(proxy_log) if w == "term"]
    shield_term = [t for t, _, w in events(shield_log) if w == "term"]
    assert len(proxy_term) == 1 and len(shield_term) == 1
    assert proxy_term[0] < shield_term[0]                                      # proxy drains first
    assert marker.read_text() == "ok"                                          # after-stop command ran


def test_child_ignoring_sigterm_is_killed_after_its_grace(tmp_path, start):
    sup = start([["proxy", "ignore-term", 0.5, True, ""]])
    log = tmp_path / "proxy.log"
    assert wait_for(lambda: events(log))
    time.sleep(0.5)                          # past the early-failure window
    pid = events(log)[0][1]
    t0 = time.monotonic()
    sup.send_signal(signal.SIGINT)
    assert sup.wait(timeout=10) == 0
    assert time.monotonic() - t0 >= 0.4
    assert [w for _, _, w in events(log)] == ["start", "term"]
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_start_up_failure_stops_everything_with_its_status(tmp_path, start):
    # a generous start-up window: the failing child needs its interpreter start + 0.2 s
    sup = start([["shield", "run", 2.0, False, ""], ["proxy", "fail-soon", 2.0, True, ""]], early_failure=3.0)
    assert sup.wait(timeout=10) == 7
    assert "proxy exited with status 7 at start-up" in sup.stderr.read()
    assert [w for _, _, w in events(tmp_path / "shield.log")] == ["start", "term"]


def test_not_built_yet_exits_2_and_starts_nothing(tmp_path, start):
    sup = start([["shield", "run", 2.0, False, "edgestick.control.no_such_module"],
                 ["proxy", "run", 2.0, True, ""]])
    assert sup.wait(timeout=10) == 2
    assert "'edgestick shield' is not built yet" in sup.stderr.read()
    assert events(tmp_path / "proxy.log") == [] and events(tmp_path / "shield.log") == []


def test_missing_configuration_file(tmp_path):
    out = subprocess.run([sys.executable, "-m", "edgestick", "run", "-f", str(tmp_path / "nope.cfg")],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 1 and "cannot read configuration" in out.stderr


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze is not installed")
def test_systemd_units_verify_cleanly(tmp_path):
    """The units parse with no unknown key or bad value (systemd-analyze prints any)."""
    units = sorted((Path(__file__).resolve().parents[2] / "systemd").glob("*.service"))
    assert [u.name for u in units] == ["edgestick-proxy.service", "edgestick-shield.service", "edgestick.service"]
    exe = shutil.which("edgestick") or str(Path(sys.executable).parent / "edgestick")
    for unit in units:                     # the installed path does not exist here: point at ours
        (tmp_path / unit.name).write_text(unit.read_text().replace("/usr/local/bin/edgestick", exe))
    out = subprocess.run(["systemd-analyze", "verify", *sorted(map(str, tmp_path.glob("*.service")))],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and out.stdout + out.stderr == ""
