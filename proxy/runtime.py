"""The interpreter and event loop the proxy runs on.

Two runtimes run the same code: PyPy (Debian's pypy3, Python 3.9, JIT) and CPython 3.11
with uvloop. `edgestick proxy` starts on the CPython of the installation and moves itself
onto PyPy (exec, same pid) when the installation has a PyPy environment
(scripts/setup-host.sh makes `.venv-pypy`) unless `--runtime cpython` says otherwise:
bench/proxy.py measured PyPy several times faster per request. uvloop does not run on
PyPy, so there the loop is asyncio's own, with a leaner accept (below).
"""
from __future__ import annotations

import asyncio
import os
import platform
import socket
import sys
from pathlib import Path

PYPY = platform.python_implementation() == "PyPy"


class _LeanAcceptLoop(asyncio.SelectorEventLoop):
    """asyncio's selector loop (PyPy's stdlib, Python 3.9) with its accept redone:
    - a plain TCP connection gets its transport right away, where asyncio makes a task
      per accepted connection (its accept waits on a future, for the TLS case);
    - every accepted TCP socket gets TCP_NODELAY, which asyncio sets only on sockets
      whose proto is 6 (an accepted one says 0): without it a response written in two
      parts waits for the client's delayed ACK, 40 ms (uvloop sets it itself)."""

    def _accept_connection(self, protocol_factory, sock, sslcontext=None, server=None,
                           backlog=100, ssl_handshake_timeout=None):
        for _ in range(backlog):
            try:
                conn, addr = sock.accept()
                conn.setblocking(False)
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError:
                # out of descriptors and the like: asyncio's own handling (a pause)
                return super()._accept_connection(protocol_factory, sock, sslcontext, server,
                                                  backlog, ssl_handshake_timeout)
            if conn.family in (socket.AF_INET, socket.AF_INET6):
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            extra = {"peername": addr}
            if sslcontext is not None:
                self.create_task(self._accept_connection2(
                    protocol_factory, conn, extra, sslcontext, server, ssl_handshake_timeout))
                continue
            try:
                self._make_socket_transport(conn, protocol_factory(), extra=extra, server=server)
            except Exception:
                conn.close()
                raise


RUNTIMES = ("auto", "pypy", "cpython")


def pypy_python() -> str | None:
    """The interpreter of the installation's PyPy environment: $EDGESTICK_PYPY, else
    `.venv-pypy` at the project root (scripts/setup-host.sh); None when there is none."""
    path = os.environ.get("EDGESTICK_PYPY") or str(
        Path(__file__).resolve().parent.parent / ".venv-pypy" / "bin" / "python")
    return path if os.access(path, os.X_OK) else None


def choose(runtime: str, argv: list[str]) -> str | None:
    """Move the process onto the runtime asked for (`auto`: PyPy when the installation
    has it). Returns only to stay on this interpreter; an error message when the runtime
    asked for cannot be had."""
    if runtime == "cpython" or PYPY:
        return None
    python = pypy_python()
    if python is None:
        return ("--runtime pypy: no PyPy environment (scripts/setup-host.sh makes "
                ".venv-pypy; or set EDGESTICK_PYPY)") if runtime == "pypy" else None
    env = dict(os.environ)
    # PyPy sizes its young generation from the L3 size the CPU reports (a 240 MB nursery
    # on this project's VMs). 32 MB: forwarded keep-alive requests per CPU second grow
    # with it (8 MB 58k, 16 MB 69k, 32 MB 76k, 64 MB 85k) and so does the resident
    # memory of a 1M-entry table's process (231, 245, 317 MB at 8, 32, 64 MB)
    env.setdefault("PYPY_GC_NURSERY", "32MB")
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(python, [python, "-m", "edgestick", "proxy", *argv], env)
    return None     # (not reached)


class _LeanAcceptPolicy(asyncio.DefaultEventLoopPolicy):
    def new_event_loop(self):
        return _LeanAcceptLoop()


def run(main) -> int:
    """Run the coroutine `main` on this runtime's loop (asyncio.run's set-up and
    clean-up either way)."""
    if PYPY:
        asyncio.set_event_loop_policy(_LeanAcceptPolicy())
        return asyncio.run(main)
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)
