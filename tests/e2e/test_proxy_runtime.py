"""The proxy's two runtimes (proxy/runtime.py): `edgestick proxy` moves onto the
installation's PyPy in place (same pid) unless `--runtime cpython` keeps it on CPython,
and both runtimes answer the same traffic alike: seed configuration 3 (the first 429 is
request 101), on keep-alive and new connections, and the table it leaves."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgestick.proxy import runtime
from proxy_harness import (Backends, Client, mask_table, rewrite_addresses, seed_section,
                           start_proxy, workdir)

TEMPLATE = """
global
    stats socket {SOCK} mode 600 level admin

defaults
    mode http
    timeout connect 2s
    timeout client 10s
    timeout server 10s
    timeout http-keep-alive 10s

backend app_servers
    server app1 127.0.0.1:{APP1}
""" + rewrite_addresses(seed_section(3), {"*:80": "127.0.0.1:{FE}"})

needs_pypy = pytest.mark.skipif(runtime.pypy_python() is None,
                                reason="no PyPy environment (scripts/setup-host.sh makes .venv-pypy)")


@pytest.fixture(scope="module")
def backends():
    b = Backends(["app1"]).start()
    yield b
    b.kill()


def _interpreter(pid: int) -> str:
    return os.path.realpath(f"/proc/{pid}/exe")


def _traffic(port: int) -> list[int]:
    """105 keep-alive requests from one source, then 3 on new connections."""
    c = Client(port, "127.0.0.7")
    out = [c.request("/").status for _ in range(105)]
    c.close()
    for _ in range(3):
        c = Client(port, "127.0.0.7")
        out.append(c.request("/", close=True).status)
        c.close()
    return out


@needs_pypy
def test_auto_moves_onto_pypy_in_place(backends):
    with workdir() as wd:
        p = start_proxy("edgestick", TEMPLATE, backends, wd)
        try:
            assert "pypy" in _interpreter(p.proc.pid)          # the pid we started
            assert Client(p.port, "127.0.0.8").request("/").status == 200
        finally:
            p.stop()
        assert p.proc.returncode == 0                        # SIGTERM: a clean stop


def test_runtime_cpython_stays(backends):
    with workdir() as wd:
        p = start_proxy("edgestick", TEMPLATE, backends, wd, extra_args=["--runtime", "cpython"])
        try:
            assert _interpreter(p.proc.pid) == os.path.realpath(sys.executable)
            assert Client(p.port, "127.0.0.8").request("/").status == 200
        finally:
            p.stop()


@needs_pypy
def test_both_runtimes_answer_alike(backends):
    got = {}
    with workdir() as wd:
        for name in ("pypy", "cpython"):
            (wd / name).mkdir()
            p = start_proxy("edgestick", TEMPLATE, backends, wd / name,
                            extra_args=["--runtime", name])
            try:
                statuses = _traffic(p.port)
                got[name] = (statuses, mask_table(p.cli("show table http_front")))
            finally:
                p.stop()
    statuses, table = got["pypy"]
    assert statuses == [200] * 100 + [429] * 8
    assert got["pypy"] == got["cpython"], (table, got["cpython"][1])


def test_pypy_asked_for_but_missing(tmp_path):
    cfg = tmp_path / "p.cfg"
    cfg.write_text("defaults\n    mode http\nfrontend f\n    bind 127.0.0.1:0\n")
    env = dict(os.environ, EDGESTICK_PYPY=str(tmp_path / "no-such-pypy"))
    out = subprocess.run([sys.executable, "-m", "edgestick", "proxy", "-f", str(cfg),
                          "--runtime", "pypy"], capture_output=True, text=True, timeout=30,
                         env=env, cwd=Path(__file__).resolve().parent)
    assert out.returncode == 1
    assert "[ALERT] --runtime pypy: no PyPy environment" in out.stderr


@needs_pypy
def test_every_proxy_module_imports_on_pypy():
    """The proxy's code stays within what PyPy's Python (3.9) runs: every module imports
    there (postponed annotations, no 3.10+ syntax at import)."""
    import pkgutil
    import edgestick.proxy as pkg
    names = sorted(f"edgestick.proxy.{m.name}" for m in pkgutil.iter_modules(pkg.__path__))
    assert "edgestick.proxy.frontend" in names
    code = "import importlib, sys\nfor n in sys.argv[1:]:\n    importlib.import_module(n)\n"
    out = subprocess.run([runtime.pypy_python(), "-c", code, *names], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
