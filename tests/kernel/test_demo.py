"""`make demo` runs to its summary and exits 0: the front door, end to end."""
import re
import subprocess
import sys

from edgestick.lab.topology import known_labs


def test_demo_runs_to_its_summary_and_cleans_up():
    before = {lab.prefix for lab in known_labs()}
    done = subprocess.run([sys.executable, "-m", "edgestick", "lab", "demo", "--duration", "3"],
                          capture_output=True, text=True, timeout=300)
    out = done.stdout
    assert done.returncode == 0, (out[-3000:], done.stderr[-3000:])
    summary = out[out.index("== summary"):]
    ok, sent = map(int, re.search(r"legitimate client: (\d+)/(\d+) requests succeeded", summary).groups())
    assert sent > 0 and ok >= 0.9 * sent
    drops = {m[0]: int(m[1]) for m in re.findall(r"counter: drop reason=(\w+) packets=(\d+)", summary)}
    assert drops.get("flood", 0) > 0             # the spoofed floods met the flood guard
    assert drops.get("ban", 0) > 0               # escalated sources were dropped at the NIC
    assert int(re.search(r"# bans: active=(\d+)", summary).group(1)) >= 1
    assert re.search(r"http_front: requests \d+, denied [1-9]", summary)   # 429/403 at the proxy
    assert "edge: top sources" in out or "edgestick top" in out            # the live view ran
    assert {lab.prefix for lab in known_labs()} == before                  # lab removed
