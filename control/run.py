"""`edgestick run -f FILE [-f FILE ...]`: the proxy and the shield from one configuration.

Two child processes, `edgestick shield -f ...` (started first: protection before
traffic) and `edgestick proxy -f ...`, supervised here:

* a child that dies is restarted with exponential back-off (0.5 s doubling to 30 s, reset
  after it has run 30 s). Protection stays on meanwhile: the XDP program stays attached
  and its maps are pinned, so a shield restart adopts them; the kernel keeps dropping;
* a child that fails within its first second of its first start (a bad configuration)
  stops everything: the supervisor exits with that child's status instead of looping;
* SIGTERM/SIGINT: SIGTERM to the proxy (it drains in-flight requests) then to the
  shield (it leaves XDP attached); with `--detach-on-exit`, `edgestick shield --detach`
  runs after it so the interface is left clean. Children that do not stop within their
  grace period are killed;
* SIGHUP and SIGUSR2 reload the proxy (SIGUSR2 to it: tables are kept).

A configuration without a `shield` section runs the proxy alone.
"""
from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import signal
import sys
import time
from dataclasses import dataclass, field

BACKOFF_FIRST = 0.5
BACKOFF_MAX = 30.0
STABLE_AFTER = 30.0          # a child up this long has its back-off reset
EARLY_FAILURE = 1.0          # a first start dying this fast is a configuration error
PROXY_GRACE = 15.0
SHIELD_GRACE = 5.0


def log(msg: str) -> None:
    print(f"edgestick run: {msg}", file=sys.stderr, flush=True)


@dataclass
class Child:
    name: str
    argv: list[str]
    module: str = ""                  # the Python module the command needs ("not built yet" check)
    grace: float = 5.0                # seconds between SIGTERM and SIGKILL at stop
    reload_signal: int | None = None  # what a reload sends it (None: not reloaded)
    proc: asyncio.subprocess.Process | None = field(default=None, repr=False)
    started_at: float = 0.0
    starts: int = 0
    backoff: float = BACKOFF_FIRST


class Supervisor:
    def __init__(self, children: list[Child], after_stop: list[list[str]] | None = None,
                 backoff_first: float = BACKOFF_FIRST, early_failure: float = EARLY_FAILURE):
        self.children = children
        self.after_stop = after_stop or []
        self.backoff_first = backoff_first
        self.early_failure = early_failure
        self.stopping: asyncio.Event | None = None      # created inside the running loop
        self.exit_status = 0

    def missing(self) -> list[Child]:
        """Children whose command's module does not exist yet."""
        return [c for c in self.children if c.module and importlib.util.find_spec(c.module) is None]

    async def _start(self, child: Child) -> None:
        child.proc = await asyncio.create_subprocess_exec(*child.argv)
        child.started_at = time.monotonic()
        child.starts += 1
        log(f"{child.name} started (pid {child.proc.pid})")

    async def _watch(self, child: Child) -> None:
        """Keep one child running until stop is requested."""
        while not self.stopping.is_set():
            status = await child.proc.wait()
            if self.stopping.is_set():
                return
            ran = time.monotonic() - child.started_at
            if child.starts == 1 and ran < self.early_failure:
                log(f"{child.name} exited with status {status} at start-up: stopping")
                self.exit_status = status if status > 0 else 1
                self.stopping.set()
                return
            if ran >= STABLE_AFTER:
                child.backoff = self.backoff_first
            log(f"{child.name} (pid {child.proc.pid}) exited with status {status} after {ran:.1f} s: "
                f"restarting in {child.backoff:.1f} s")
            try:
                await asyncio.wait_for(self.stopping.wait(), timeout=child.backoff)
                return                                    # stop requested during the back-off
            except asyncio.TimeoutError:
                pass
            child.backoff = min(child.backoff * 2, BACKOFF_MAX)
            await self._start(child)

    async def _stop(self, child: Child) -> None:
        proc = child.proc
        if proc is None or proc.returncode is not None:
            return
        try:
            proc.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            await asyncio.wait_for(proc.wait(), timeout=child.grace)
        except asyncio.TimeoutError:
            log(f"{child.name} (pid {proc.pid}) did not stop within {child.grace:.0f} s: killing it")
            proc.kill()
            await proc.wait()
        log(f"{child.name} stopped")

    def _reload(self) -> None:
        for child in self.children:
            if child.reload_signal is not None and child.proc and child.proc.returncode is None:
                log(f"reloading {child.name}")
                child.proc.send_signal(child.reload_signal)

    def _request_stop(self, signame: str) -> None:
        if not self.stopping.is_set():
            log(f"{signame}: stopping")
            self.stopping.set()

    async def run(self) -> int:
        self.stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._request_stop, signal.Signals(sig).name)
        for sig in (signal.SIGHUP, signal.SIGUSR2):
            loop.add_signal_handler(sig, self._reload)
        try:
            for child in self.children:
                await self._start(child)
            watchers = [asyncio.create_task(self._watch(c)) for c in self.children]
            await self.stopping.wait()
            # Stop in reverse start order: the proxy drains first, the shield last.
            for child in reversed(self.children):
                await self._stop(child)
            await asyncio.gather(*watchers, return_exceptions=True)
            for argv in self.after_stop:
                proc = await asyncio.create_subprocess_exec(*argv)
                status = await proc.wait()
                if status:
                    log(f"'{' '.join(argv)}' exited with status {status}")
                    self.exit_status = self.exit_status or status
            return self.exit_status
        finally:
            for child in self.children:          # never leave an orphan behind
                if child.proc and child.proc.returncode is None:
                    child.proc.kill()
                    await child.proc.wait()


def _has_shield(files: list[str]) -> bool:
    from edgestick.control import config as shield_config
    from edgestick.cfgsyntax import read_file
    lines = [line for path in files for line in read_file(path)]
    return bool(shield_config.parse_lines(lines))


def build(files: list[str], detach_on_exit: bool = False, shield_name: str | None = None) -> Supervisor:
    edgestick = [sys.executable, "-m", "edgestick"]
    fargs = [a for f in files for a in ("-f", f)]
    children = []
    after_stop = []
    if _has_shield(files):
        name_args = ["--name", shield_name] if shield_name else []
        children.append(Child("shield", edgestick + ["shield"] + fargs + name_args,
                              module="edgestick.control.shield", grace=SHIELD_GRACE))
        if detach_on_exit:
            after_stop.append(edgestick + ["shield", "--detach"] + fargs + name_args)
    else:
        log("no 'shield' section in the configuration: running the proxy alone")
    children.append(Child("proxy", edgestick + ["proxy"] + fargs, module="edgestick.proxy.main",
                          grace=PROXY_GRACE, reload_signal=signal.SIGUSR2))
    return Supervisor(children, after_stop)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="edgestick run",
                                     description="Run the proxy and the shield from one configuration.")
    parser.add_argument("-f", dest="files", action="append", required=True, metavar="FILE",
                        help="configuration file (repeatable, read in order)")
    parser.add_argument("--name", help="the shield section to run when the files hold several")
    parser.add_argument("--detach-on-exit", action="store_true",
                        help="detach the XDP program when stopping (default: leave it attached)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)

    for path in args.files:
        if not os.path.isfile(path):
            log(f"cannot read configuration '{path}'")
            return 1
    from edgestick.cfgsyntax import ConfigError
    try:
        supervisor = build(args.files, args.detach_on_exit, args.name)
    except ConfigError as e:
        log(str(e))
        return 1
    return launch(supervisor)


def launch(supervisor: Supervisor) -> int:
    """Run the supervisor, or exit 2 when a child's command is not built yet."""
    missing = supervisor.missing()
    if missing:
        for child in missing:
            log(f"'edgestick {child.name}' is not built yet ({child.module} is missing)")
        return 2
    return asyncio.run(supervisor.run())


if __name__ == "__main__":
    sys.exit(main())
