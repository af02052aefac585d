"""The shield's runtime API: a unix socket in the style of HAProxy's stats socket.

Conventions (the same as the proxy's runtime API; they meet only at the socket):
one command per connection (or several separated by `;`), each reply ends with an empty
line; `prompt` switches the connection to interactive mode, where each reply is followed
by "\\n> " and the connection stays open until `quit` or EOF. An error is one line. A
command is parsed and validated completely before anything changes, so a bad command
changes nothing.

Parsing (`parse_command`) needs no kernel; executing goes through the daemon's Shield
object (control/shield.py), whose methods are named after the commands.
"""
from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
import traceback
from dataclasses import dataclass, field

from edgestick.cfgsyntax import ConfigError, parse_time_ms, split_words
from edgestick.control.config import ENFORCE_MODES, LEVELS, METRICS, parse_network, parse_threshold

SORT_KEYS = ("conn_rate", "pkt_rate", "byte_rate", "drops")
DEFAULT_TOP = 20
MAX_TOP = 100_000
# `set threshold` names: the drop limit of a metric, its ban limit, the flood guard.
THRESHOLDS = tuple(METRICS) + tuple(f"ban_{m}" for m in METRICS) + ("flood_guard",)
MAX_LINE = 4096
IDLE_TIMEOUT_S = 10.0               # HAProxy's default `stats timeout`


class CommandError(Exception):
    """A bad command: its message is the one-line error the client sees."""


@dataclass(frozen=True)
class Command:
    name: str                       # e.g. "show sources"; also the Shield method, with _
    level: str                      # the lowest socket level allowed to run it
    args: dict = field(default_factory=dict)

    @property
    def method(self) -> str:
        return self.name.replace(" ", "_")


# name -> (usage, help text, level). The order is the order `help` prints.
COMMANDS = {
    "help": ("help", "list the commands", "user"),
    "prompt": ("prompt", "toggle interactive mode with a prompt", "user"),
    "quit": ("quit", "close the connection", "user"),
    "show shield": ("show shield", "interfaces, mode, program id, counters by reason", "user"),
    "show sources": ("show sources [top <n>] [by <key>]",
                     f"the busiest sources (keys: {', '.join(SORT_KEYS)})", "operator"),
    "show bans": ("show bans", "banned sources and the time each ban has left", "operator"),
    "show rules": ("show rules", "allow/deny lists, thresholds and modes", "operator"),
    "add ban": ("add ban <addr|cidr> [<ttl>]", "drop everything from a source (for <ttl>)", "admin"),
    "del ban": ("del ban <addr|cidr>", "lift a ban", "admin"),
    "add allow": ("add allow <addr|cidr>", "never drop these sources", "admin"),
    "del allow": ("del allow <addr|cidr>", "remove an allow-list entry", "admin"),
    "add deny": ("add deny <addr|cidr>", "always drop these sources", "admin"),
    "del deny": ("del deny <addr|cidr>", "remove a deny-list entry", "admin"),
    "set threshold": ("set threshold <name> <value>|off",
                      f"change a limit now ({', '.join(THRESHOLDS)})", "admin"),
    "set mode": ("set mode enforce|dry-run", "drop, or only count what would be dropped", "admin"),
}


def help_text(level: str = "admin") -> str:
    """The commands this socket level may run, one `usage : text` line each."""
    return "".join(f"  {usage:<40}: {text}\n" for usage, text, need in COMMANDS.values()
                   if level_allows(level, need))


def level_allows(have: str, need: str) -> bool:
    return LEVELS.index(have) >= LEVELS.index(need)


def _network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return parse_network(text)
    except ValueError as e:
        raise CommandError(str(e)) from None


def _expect(words: list[str], count: int, usage: str) -> None:
    if len(words) != count:
        raise CommandError(f"Usage: {usage}")


def _parse_show_sources(rest: list[str]) -> dict:
    usage = COMMANDS["show sources"][0]
    args = {"top": DEFAULT_TOP, "by": "pkt_rate"}
    seen = set()
    while rest:
        if len(rest) < 2 or rest[0] not in ("top", "by") or rest[0] in seen:
            raise CommandError(f"Usage: {usage}")
        key, value, rest = rest[0], rest[1], rest[2:]
        seen.add(key)
        if key == "top":
            if not value.isdigit() or not 1 <= int(value) <= MAX_TOP:
                raise CommandError(f"'top' expects a number from 1 to {MAX_TOP}, not '{value}'")
            args["top"] = int(value)
        else:
            if value not in SORT_KEYS:
                raise CommandError(f"'by' expects one of {', '.join(SORT_KEYS)}, not '{value}'")
            args["by"] = value
    return args


def parse_command(line: str) -> Command:
    """Parse and validate one command line; raises CommandError with the reply."""
    try:
        words = list(split_words(line))
    except ConfigError as e:
        raise CommandError(e.message) from None
    if not words:
        raise CommandError("Empty command")
    name = " ".join(words[:2]) if " ".join(words[:2]) in COMMANDS else words[0]
    if name not in COMMANDS:
        raise CommandError(f"Unknown command '{' '.join(words[:2])}' (try 'help')")
    usage, _, level = COMMANDS[name]
    rest = words[len(name.split()):]
    args: dict = {}
    if name in ("help", "prompt", "quit", "show shield", "show bans", "show rules"):
        _expect(rest, 0, usage)
    elif name == "show sources":
        args = _parse_show_sources(rest)
    elif name == "add ban":
        if len(rest) not in (1, 2):
            raise CommandError(f"Usage: {usage}")
        args["network"] = _network(rest[0])
        args["ttl_ms"] = None                      # no ttl: until 'del ban'
        if len(rest) == 2:
            try:
                args["ttl_ms"] = parse_time_ms(rest[1])
            except ValueError as e:
                raise CommandError(str(e)) from None
            if args["ttl_ms"] == 0:
                raise CommandError("a ban's ttl must be greater than zero")
    elif name in ("del ban", "add allow", "del allow", "add deny", "del deny"):
        _expect(rest, 1, usage)
        args["network"] = _network(rest[0])
    elif name == "set threshold":
        _expect(rest, 2, usage)
        if rest[0] not in THRESHOLDS:
            raise CommandError(f"unknown threshold '{rest[0]}' (expects one of {', '.join(THRESHOLDS)})")
        args["name"] = rest[0]
        if rest[1] == "off":
            args["value"] = None
        else:
            try:
                args["value"] = parse_threshold(rest[1])
            except ValueError as e:
                raise CommandError(f"threshold {e}") from None
    elif name == "set mode":
        _expect(rest, 1, usage)
        if rest[0] not in ENFORCE_MODES:
            raise CommandError(f"unknown mode '{rest[0]}' (expects enforce or dry-run)")
        args["mode"] = rest[0]
    return Command(name, level, args)


# --- the socket server ------------------------------------------------------------------

class RuntimeServer:
    """Serves the commands of one Shield on a unix socket (asyncio)."""

    def __init__(self, shield, path: str, mode: int = 0o600, level: str = "operator",
                 executor=None):
        self.shield, self.path, self.mode, self.level = shield, path, mode, level
        # Commands run on this executor, one at a time when it has one worker: map
        # read-modify-writes do not interleave, and blocking calls (netlink through
        # pyroute2, which runs its own event loop) stay off the server's loop.
        self.executor = executor
        self._server: asyncio.AbstractServer | None = None

    @staticmethod
    def check_free(path: str) -> None:
        """Raise RuntimeError when a live process serves `path`; a socket file left by a
        killed daemon is removed (taken over)."""
        if not os.path.exists(path):
            return
        probe = socket.socket(socket.AF_UNIX)
        try:
            probe.connect(path)
        except OSError:
            os.unlink(path)
        else:
            raise RuntimeError(f"another process serves {path}")
        finally:
            probe.close()

    async def start(self) -> None:
        self.check_free(self.path)
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        self._server = await asyncio.start_unix_server(self._serve, self.path, limit=MAX_LINE)
        os.chmod(self.path, self.mode)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    def execute(self, line: str) -> tuple[str, str | None]:
        """Run one command line; returns (reply text, control) where control is
        'prompt' or 'quit' for the connection, else None. The reply ends with '\\n'
        unless empty."""
        try:
            cmd = parse_command(line)
            if not level_allows(self.level, cmd.level):
                raise CommandError("Permission denied")
            if cmd.name == "help":
                return help_text(self.level), None
            if cmd.name in ("prompt", "quit"):
                return "", cmd.name
            out = getattr(self.shield, cmd.method)(**cmd.args)
        except CommandError as e:
            return f"{e}\n", None
        except ValueError as e:    # an address the shield cannot key (control/xdp.py)
            return f"{e}\n", None
        except OSError as e:       # a map operation the kernel refused (full map, ...)
            return f"Kernel refused the change: {e.strerror or e}\n", None
        except Exception as e:     # a bug must cost one reply, not the connection or the daemon
            traceback.print_exc()
            return f"Internal error: {type(e).__name__}: {e}\n", None
        return out, None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        interactive = False
        try:
            while True:
                try:
                    raw = await asyncio.wait_for(reader.readline(), IDLE_TIMEOUT_S)
                except asyncio.TimeoutError:
                    break                   # an idle client does not hold a connection forever
                except (asyncio.LimitOverrunError, ValueError):
                    writer.write(b"Command line too long\n\n")
                    break
                if not raw:
                    break
                line = raw.decode("utf-8", "replace").strip()
                if not line:
                    if interactive:
                        writer.write(b"> ")
                        await writer.drain()
                        continue
                    break
                # As in HAProxy, ';' separates several commands on one line.
                for part in line.split(";"):
                    reply, control = await asyncio.get_running_loop().run_in_executor(
                        self.executor, self.execute, part)
                    if control == "quit":
                        return
                    if control == "prompt":
                        interactive = not interactive
                    writer.write(reply.encode() + (b"\n> " if interactive else b"\n"))
                await writer.drain()
                # Non-interactive: close once no further line is pending (HAProxy also
                # answers lines that arrived together, like the proxy's runtime API).
                if not interactive and b"\n" not in getattr(reader, "_buffer", b""):
                    break
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except ConnectionError:
                pass
