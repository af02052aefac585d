"""The stats socket: HAProxy's runtime API (CLI) on a unix or TCP socket.

One `RuntimeAPI` serves any number of `stats socket` listeners. A connection is
non-interactive by default: each command line (several commands may be separated by
`;`) gets its reply, each reply ends with an empty line, and the connection closes when
no further input is pending. `prompt` toggles interactive mode (`> ` after each reply);
`quit` closes. A line ending with `<<` is followed by a payload, the lines up to an empty
one, which the line's last command reads as `cli.payload` (`add map MAP <<`). Levels
`user` < `operator` < `admin` come from the socket (`level`) and can be lowered for the
session with the `operator`/`user` commands.

Commands live in a registry (`api.commands`): prefix words -> handler, the level it
requires, and an optional usage line shown by `help` and by the unknown-command reply, which suggests commands the
way HAProxy 2.6 does (word fingerprints). Other subsystems add theirs:

    api.commands.register(("show", "info"), show_info,
                          "show info [desc|json|typed|float]*      : report information ...",
                          level=USER)

A handler is `handler(cli, args) -> str | Awaitable[str]`; `args` are all the words of
the command (the prefix included); the returned text is the reply without the final
empty line (each line ending with "\\n", "" for no output). A long reply may instead be
an iterator of text chunks, sent as they come (the connection drains between chunks). `cli` is the `CliSession`:
`cli.level`, `cli.has_level(OPERATOR)`, `cli.api.context` (whatever the proxy set).
Byte-exact strings below come from HAProxy 2.6.12 (tests/fixtures/haproxy-transcripts).
"""
from __future__ import annotations

import asyncio
import inspect
import os
import socket
import stat
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Iterable, Optional, Sequence, Union

from edgestick.freq_ctr import now_ms

from . import maps
from .stick_table import DATA_TYPES, StickTable, cli_ipv4, data_type_id

USER, OPERATOR, ADMIN = 1, 2, 3
LEVELS = {"user": USER, "operator": OPERATOR, "admin": ADMIN}
LEVEL_NAMES = {v: k for k, v in LEVELS.items()}
MAX_CLI_ARGS = 64
PERMISSION_DENIED = "Permission denied\n"

Handler = Callable[["CliSession", list], Union[str, Awaitable[str]]]


@dataclass
class Command:
    words: tuple
    handler: Handler
    usage: Optional[str] = None
    level: int = USER                       # below it the command answers Permission denied


class CommandRegistry:
    """Prefix words -> handler. Lookup picks the longest registered prefix."""

    def __init__(self):
        self.commands: list[Command] = []

    def register(self, words: Sequence[str], handler: Handler, usage: Optional[str] = None,
                 level: int = 1) -> None:
        """Add (or replace) a command. `level` (USER, OPERATOR, ADMIN) is the session level
        it needs; handlers may also check finer rules with `cli.has_level()`."""
        words = tuple(words)
        self.commands = [c for c in self.commands if c.words != words]
        self.commands.append(Command(words, handler, usage, level))

    def find(self, args: Sequence[str]) -> Optional[Command]:
        best = None
        for c in self.commands:
            n = len(c.words)
            if len(args) >= n and tuple(args[:n]) == c.words:
                if best is None or n > len(best.words):
                    best = c
        return best

    # -- HAProxy's cli_gen_usage_msg()

    def usage_message(self, args: Sequence[str], is_help: bool) -> str:
        args = list(args)
        max_kw = 5                                   # CLI_PREFIX_KW_NB

        def arg(i):
            return args[i] if i < len(args) else ""

        length = 0
        for c in self.commands:
            for idx in range(min(max_kw, len(c.words))):
                if not arg(idx) or c.words[idx] != arg(idx):
                    break
                length = max(length, idx + 1)
        if is_help:
            out = "The following commands are valid at this level:\n"
        elif not length and not arg(0):
            out = "Unknown command. Please enter one of the following commands only:\n"
        else:
            out = "Unknown command, but maybe one of the following ones is a better match:\n"

        def prefix_ok(c):
            for idx in range(length):
                if idx >= len(c.words) or not arg(idx):
                    return idx
                if c.words[idx] != arg(idx):
                    return idx
            return length

        matches: list[tuple[int, Command]] = []
        if arg(length):
            for c in self.commands:
                if c.usage is None or prefix_ok(c) != length:
                    continue
                word_sig = [0] * 1024
                list_sig = [0] * 1024
                totlen = 0
                i = length
                while i < max_kw and arg(i):
                    _fingerprint(word_sig, arg(i))
                    totlen += len(arg(i))
                    i += 1
                for w in c.words[length:max_kw]:
                    _fingerprint(list_sig, w)
                    totlen += len(w)
                dist = sum(abs(a - b) for a, b in zip(word_sig, list_sig))
                worst = matches[4][0] if len(matches) == 5 else 1 << 62
                if dist < 5 * totlen // 2 and dist < worst:
                    if len(matches) == 5:
                        matches.pop()
                    pos = len(matches)
                    while pos > 0 and matches[pos - 1][0] > dist:
                        pos -= 1
                    matches.insert(pos, (dist, c))
        entries: list[Command] = []
        if matches:
            best = matches[0][0]
            for dist, c in matches:
                if dist > 5 * best // 2:
                    break
                entries.append(c)
        else:
            entries = [c for c in self.commands if c.usage is not None and prefix_ok(c) == length]
        for c in sorted(entries, key=lambda c: c.usage.encode("latin-1")):
            out += f"  {c.usage}\n"
        out += ("  help [<command>]                        : list matching or all commands\n"
                "  prompt                                  : toggle interactive mode with prompt\n"
                "  quit                                    : disconnect\n")
        return out


def _fingerprint(fp: list, word: str) -> None:
    """HAProxy's update_word_fingerprint(): counts of character-class transitions
    (letters 1..26, digit 27, other/edge 28) plus a presence mark per class."""
    frm = 28
    for ch in word:
        c = ch.lower()
        if "a" <= c <= "z":
            to = ord(c) - 96
        elif "0" <= c <= "9":
            to = 27
        else:
            to = 28
        fp[to] = 1
        fp[32 * frm + to] += 1
        frm = to
    fp[32 * frm + 28] += 1


def split_commands(line: str) -> list[str]:
    """Split a request line on `;` not preceded by a backslash."""
    parts, start = [], 0
    for i, c in enumerate(line):
        if c == ";" and (i == 0 or line[i - 1] != "\\"):
            parts.append(line[start:i])
            start = i + 1
    parts.append(line[start:])
    return parts


def split_args(cmd: str) -> list[str]:
    """Words of one command as HAProxy's CLI parses them: spaces/tabs separate, a
    backslash escapes the next character (`\\\\` gives one backslash), no quoting."""
    args: list[str] = []
    i, n = 0, len(cmd)
    while len(args) < MAX_CLI_ARGS and i < n:
        while i < n and cmd[i] in " \t":
            i += 1
        if i >= n:
            break
        start = i
        while i < n:
            if cmd[i] == "\\":
                i += 2
                continue
            if cmd[i] in " \t":
                break
            i += 1
        raw = cmd[start:min(i, n)]
        i += 1
        word, k = [], 0
        while k < len(raw):
            if raw[k] == "\\":
                k += 1                             # drop the backslash...
                if k >= len(raw) or raw[k] != "\\":
                    continue                       # ...a doubled one keeps one
            word.append(raw[k])
            k += 1
        args.append("".join(word))
    return args


class CliSession:
    """One connection to the stats socket."""

    def __init__(self, api: "RuntimeAPI", socket_level: int):
        self.api = api
        self.socket_level = socket_level
        self.level = socket_level
        self.interactive = False
        self.closing = False
        self.payload: Optional[str] = None

    def has_level(self, level: int) -> bool:
        return self.level >= level

    async def run_line(self, line: str, write: Callable[[str], Awaitable[None]],
                       payload: Optional[str] = None) -> None:
        """Execute one request line, sending each reply through `write`. A payload (the
        lines after a line ending with `<<`) goes to the line's last command, which reads
        it as `cli.payload`."""
        commands = split_commands(line)
        for i, cmd in enumerate(commands):
            if self.closing:
                break
            self.payload = payload if i == len(commands) - 1 else None
            try:
                reply = await self.run_command(cmd)
            finally:
                self.payload = None
            if self.closing:
                break
            if isinstance(reply, str):
                await write(reply + "\n")
            else:                                  # an iterator of chunks (long dumps)
                for chunk in reply:
                    await write(chunk)
                await write("\n")
            if self.interactive:
                await write("> ")

    async def run_command(self, cmd: str):
        args = split_args(cmd)
        if args and args[0] == "help":
            return self.api.commands.usage_message(args[1:], True)
        if args and args[0] == "prompt":
            self.interactive = not self.interactive
            return ""
        if args and args[0] == "quit":
            self.closing = True
            return ""
        c = self.api.commands.find(args) if args else None
        if c is None:
            return self.api.commands.usage_message(args, False)
        if self.level < c.level:
            return PERMISSION_DENIED
        reply = c.handler(self, args)
        if inspect.isawaitable(reply):
            reply = await reply
        return reply


# ---------------------------------------------------------------------------- server

def parse_address(addr: str):
    """`/path`, `unix@/path`, `ipv4@host:port`, `ipv6@[host]:port` or `host:port` ->
    ('unix', path) or (family, host, port)."""
    if addr.startswith("unix@"):
        return ("unix", addr[5:])
    if addr.startswith("/") or addr.startswith("./"):
        return ("unix", addr)
    fam = None
    for pfx, f in (("ipv4@", socket.AF_INET), ("ipv6@", socket.AF_INET6)):
        if addr.startswith(pfx):
            addr, fam = addr[len(pfx):], f
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"invalid stats socket address '{addr}'")
    host = host.strip("[]") or ("::" if fam == socket.AF_INET6 else "0.0.0.0")
    if fam is None:
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    return (fam, host, int(port))


class RuntimeAPI:
    """The runtime API of one proxy process.

    `tables()` returns the stick tables in declaration order (`show table` lists the
    last declared first); `context` is free for the proxy (handlers reach it as
    `cli.api.context`)."""

    def __init__(self, tables: Callable[[], Sequence[StickTable]] = lambda: (),
                 context: Any = None):
        self.tables = tables
        self.context = context
        self.commands = CommandRegistry()
        # (server, socket file, its inode): a reload's new process may have replaced the file
        self._servers: list[tuple[asyncio.AbstractServer, Optional[str], int]] = []
        self._conns: set[asyncio.Task] = set()
        # show info's share of the CLI, as HAProxy counts its CLI: connections
        # accepted, bytes sent
        self.conn_total = 0
        self.open_conns = 0
        self.bytes_out = 0
        register_core_commands(self.commands)
        register_table_commands(self.commands)
        register_map_commands(self.commands)
        register_acl_commands(self.commands)

    def table(self, name: str) -> Optional[StickTable]:
        for t in self.tables():
            if t.name == name:
                return t
        return None

    async def listen(self, address: str, mode: Optional[int] = None, level: str = "operator",
                     timeout_ms: int = 10_000, uid: Optional[int] = None,
                     gid: Optional[int] = None) -> asyncio.AbstractServer:
        """Open a `stats socket` listener. `mode` is the unix socket file's permission
        bits (e.g. 0o600), `level` one of user|operator|admin, `timeout_ms` the idle
        timeout of a connection (`stats timeout`)."""
        lvl = LEVELS[level]
        target = parse_address(address)

        def handler(reader, writer):
            self.conn_total += 1
            task = asyncio.current_task()
            if task is not None:
                self._conns.add(task)
                task.add_done_callback(self._conns.discard)
            return self._serve(reader, writer, lvl, timeout_ms)

        if target[0] == "unix":
            path = target[1]
            try:
                if stat.S_ISSOCK(os.lstat(path).st_mode):
                    os.unlink(path)
            except FileNotFoundError:
                pass
            server = await asyncio.start_unix_server(handler, path=path)
            if mode is not None:
                os.chmod(path, mode)
            if uid is not None or gid is not None:
                os.chown(path, -1 if uid is None else uid, -1 if gid is None else gid)
            self._servers.append((server, path, os.stat(path).st_ino))
        else:
            fam, host, port = target
            server = await asyncio.start_server(handler, host=host, port=port, family=fam,
                                                reuse_address=True, reuse_port=True)
            self._servers.append((server, None, 0))
        return server

    @property
    def listeners(self) -> int:
        return len(self._servers)

    async def close(self) -> None:
        """Stop listening, close open connections, remove the socket files."""
        for server, path, ino in self._servers:
            server.close()
            if path:
                try:
                    if os.stat(path).st_ino == ino:    # not the file of a newer process
                        os.unlink(path)
                except FileNotFoundError:
                    pass
        for task in list(self._conns):
            task.cancel()
        for server, _, _ in self._servers:
            try:
                await server.wait_closed()
            except Exception:
                pass
        self._servers.clear()

    def _send(self, writer: asyncio.StreamWriter, text: str) -> None:
        data = text.encode("latin-1", "replace")
        self.bytes_out += len(data)
        writer.write(data)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     level: int, timeout_ms: int) -> None:
        cli = CliSession(self, level)
        self.open_conns += 1
        timeout = timeout_ms / 1000 if timeout_ms else None
        try:
            while not cli.closing:
                try:
                    raw = await asyncio.wait_for(reader.readline(), timeout)
                except (asyncio.TimeoutError, asyncio.LimitOverrunError, ValueError):
                    break
                if not raw.endswith(b"\n"):
                    break                       # EOF before a complete line
                line = raw[:-1].decode("latin-1")
                if line.endswith("\r"):
                    line = line[:-1]
                payload = None
                if line.endswith("<<"):
                    payload = await _read_payload(reader, timeout)
                    if payload is None:
                        break                   # EOF inside a payload: nothing is run
                    line = line[:line.index("<<")]
                pending: list[str] = []

                async def write(text: str) -> None:
                    pending.append(text)          # coalesced: one send per reply
                    if len(pending) > 1 and sum(map(len, pending)) > 65536:
                        self._send(writer, "".join(pending))
                        pending.clear()
                        await writer.drain()
                await cli.run_line(line, write, payload)
                if pending:
                    self._send(writer, "".join(pending))
                    await writer.drain()
                if not cli.interactive and b"\n" not in reader._buffer:
                    break                       # non-interactive: nothing more pending
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self.open_conns -= 1
            try:
                writer.close()
            except Exception:
                pass


async def _read_payload(reader: asyncio.StreamReader, timeout) -> Optional[str]:
    """The lines up to an empty one, joined by newlines (HAProxy gives "\n" for none);
    None when the connection ends or times out first."""
    lines = []
    while True:
        try:
            raw = await asyncio.wait_for(reader.readline(), timeout)
        except (asyncio.TimeoutError, asyncio.LimitOverrunError, ValueError):
            return None
        if not raw.endswith(b"\n"):
            return None
        text = raw[:-1].decode("latin-1")
        if text.endswith("\r"):
            text = text[:-1]
        if not text:
            return "\n".join(lines) if lines else "\n"
        lines.append(text)


# ---------------------------------------------------------------------------- core commands

def register_core_commands(reg: CommandRegistry) -> None:
    def show_cli_level(cli, args):
        return LEVEL_NAMES[cli.level] + "\n"

    def lower_to(level):
        def handler(cli, args):
            if cli.level < level:
                return PERMISSION_DENIED
            cli.level = level
            return ""
        return handler

    reg.register(("show", "cli", "level"), show_cli_level,
                 "show cli level                          : display the level of the current CLI session")
    reg.register(("operator",), lower_to(OPERATOR),
                 "operator                                : lower the level of the current CLI session to operator")
    reg.register(("user",), lower_to(USER),
                 "user                                    : lower the level of the current CLI session to user")


# ---------------------------------------------------------------------------- table commands

SHOW, CLEAR, SET = "show", "clear", "set"
FILTER_LEN = 4
_OPS = ("eq", "ne", "le", "ge", "lt", "gt")


def _strl2llrc(text: str) -> Optional[int]:
    """HAProxy's strl2llrc: an optional '-' then digits only, within signed 64 bits."""
    digits = text[1:] if text.startswith("-") else text
    if not digits or not digits.isdigit() or not digits.isascii():
        return None
    v = int(text)
    if not -(1 << 63) <= v < (1 << 63):
        return None
    return v


def _cli_key(table: StickTable, text: str, action: str):
    """Parse a CLI key: returns (key, None) or (None, error line)."""
    t = table.type
    if t == "ip":
        return cli_ipv4(text), None
    if t == "ipv6":
        try:
            return socket.inet_pton(socket.AF_INET6, text), None
        except OSError:
            return None, "Invalid key\n"
    if t == "integer":
        i = 0
        while i < len(text) and text[i] in " \t\n\v\f\r":
            i += 1
        j = i + (1 if i < len(text) and text[i] in "+-" else 0)
        k = j
        while k < len(text) and text[k].isdigit() and text[k].isascii():
            k += 1
        if k == j:
            return None, "Invalid key\n"
        val = int(text[j:k])
        if text[i] == "-" and val:
            return None, "Invalid key\n"          # strtoul wraps negatives above 2^32
        if val > 0xFFFFFFFF:
            return None, "Invalid key\n"
        return val, None
    if t == "string":
        return table.key_of(text), None
    verb = {SHOW: "Showing keys from", CLEAR: "Removing keys from", SET: "Inserting keys into"}[action]
    return None, (f"{verb} tables of type other than ip, ipv6, string and integer is not "
                  "supported\n")


def _filters(table: StickTable, args: list, action: str):
    """Parse `data.<type> <op> <value>` filters from args[3:]; (filters, error)."""
    if action not in (SHOW, CLEAR):
        return None, ('content-based lookup is only supported with the "show" and "clear" '
                      "actions\n")
    filters = []
    i = 0

    def arg(n):
        return args[n] if n < len(args) else ""
    while i < FILTER_LEN:
        if i > 0 and not arg(3 + 3 * i):
            break
        dt = data_type_id(arg(3 + 3 * i)[5:])
        if dt < 0:
            return None, f"Filter entry #{i + 1}: Unknown data type\n"
        if dt not in table._fields:
            return None, f"Filter entry #{i + 1}: Data type not stored in this table\n"
        op = arg(4 + 3 * i)
        if op not in _OPS:
            return None, (f'Filter entry #{i + 1}: Require and operator among "eq", "ne", '
                          '"le", "ge", "lt", "gt"\n')
        value = _strl2llrc(arg(5 + 3 * i))
        if value is None:
            return None, f"Filter entry #{i + 1}: Require a valid integer value to compare against\n"
        filters.append((dt, op, value))
        i += 1
    if arg(3 + 3 * i):
        return None, (f"Detected extra data in filter, {3 + 3 * i + 1}th word of input, "
                      f"after '{arg(2 + 3 * i)}'\n")
    return filters, None


def _matches(table: StickTable, row: int, filters, now: int) -> bool:
    for dt, op, value in filters:
        v = table.cli_value(row, dt, now)
        if op == "eq":
            ok = v == value
        elif op == "ne":
            ok = v != value
        elif op == "le":
            ok = v <= value
        elif op == "ge":
            ok = v >= value
        elif op == "lt":
            ok = v < value
        else:
            ok = v > value
        if not ok:
            return False
    return True


def _table_request(cli: CliSession, args: list, action: str) -> str:
    """show/clear/set table, as HAProxy 2.6's cli_parse_table_req and its io handler."""
    api = cli.api
    name = args[2] if len(args) > 2 else ""
    now = now_ms()
    if not name:
        if action != SHOW:
            return _ARG_ERRORS[action]
        tables = list(api.tables())
        for t in tables:
            t.sweep(now)
        return "".join(t.header() for t in reversed(tables))
    table = api.table(name)
    if table is None:
        return "No such table\n"
    a3 = args[3] if len(args) > 3 else ""
    if a3 == "key":
        return _table_entry(cli, table, args, action, now)
    filters: list = []
    if a3.startswith("data."):
        filters, err = _filters(table, args, action)
        if err:
            return err
    elif a3:
        return _ARG_ERRORS[action]
    table.sweep(now)
    if action == SHOW:
        if cli.socket_level < OPERATOR:
            return table.header() + "# contents not dumped due to insufficient privileges\n"
        return _dump(table, filters, now)
    # clear (and the 2.6 quirk: `set table NAME` without a key clears too)
    if cli.socket_level < OPERATOR:
        return ""
    for row in table.rows(now):
        if not table.use(row) and _matches(table, row, filters, now):
            table.remove(row)
    return ""


def _dump(table: StickTable, filters, now: int):
    """`show table NAME` in chunks (see _in_chunks). Entries removed while the dump
    waits for the client are skipped."""
    keys = table._keys
    snapshot = [(keys[r], r) for r in table.rows(now)]

    def lines():
        yield table.header()
        for key, row in snapshot:
            if keys[row] is not key:
                continue
            if filters and not _matches(table, row, filters, now):
                continue
            yield table.format_entry(row, now)
    return _in_chunks(lines())


def _in_chunks(lines: Iterable[str]):
    """A long reply as chunks of about 64 kB, so a million entries are never one string."""
    chunk, size = [], 0
    for line in lines:
        chunk.append(line)
        size += len(line)
        if size > 65536:
            yield "".join(chunk)
            chunk, size = [], 0
    yield "".join(chunk)


_ARG_ERRORS = {
    SHOW: ('Optional argument only supports "data.<store_data_type>" <operator> <value> and '
           "key <key>\n"),
    CLEAR: ('Required arguments: <table> "data.<store_data_type>" <operator> <value> or '
            "<table> key <key>\n"),
    SET: "Required arguments: <table> key <key> [data.<store_data_type> <value>]*\n",
}


def _table_entry(cli: CliSession, table: StickTable, args: list, action: str, now: int) -> str:
    if len(args) < 5 or not args[4]:
        return "Key value expected\n"
    key, err = _cli_key(table, args[4], action)
    if err:
        return err
    if not cli.has_level(OPERATOR):
        return PERMISSION_DENIED
    if action == SHOW:
        row = table.lookup_key(key, now)
        if row is None:
            return ""
        return table.header() + table.format_entry(row, now)
    if action == CLEAR:
        row = table.lookup_key(key, now)
        if row is None:
            return ""
        if not table.remove(row):
            return "Entry currently in use, cannot remove\n"
        return ""
    row = table.get_or_create_key(key, now)
    if row is None:
        return "Unable to allocate a new entry\n"
    table.acquire(row)
    try:
        i = 5
        while i < len(args) and args[i]:
            word = args[i]
            if not word.startswith("data."):
                return '"data.<type>" followed by a value expected\n'
            dt = data_type_id(word[5:])
            if dt < 0:
                return "Unknown data type\n"
            if dt not in table._fields:
                return "Data type not stored in this table\n"
            value = _strl2llrc(args[i + 1]) if i + 1 < len(args) else None
            if value is None:
                return "Require a valid integer value to store\n"
            table.cli_set(row, dt, value, now)
            i += 2
        return ""
    finally:
        table.touch(row, now)
        table.unref(row)


def register_table_commands(reg: CommandRegistry) -> None:
    reg.register(("clear", "table"), lambda cli, a: _table_request(cli, a, CLEAR),
                 "clear table <table> [<filter>]*         : remove an entry from a table (filter: data/key)")
    reg.register(("set", "table"), lambda cli, a: _table_request(cli, a, SET),
                 "set table <table> key <k> [data.* <v>]* : update or create a table entry's data")
    reg.register(("show", "table"), lambda cli, a: _table_request(cli, a, SHOW),
                 "show table <table> [<filter>]*          : report table usage stats or dump this "
                 "table's contents (filter: data/key)")


# ---------------------------------------------------------------------------- map commands
# HAProxy 2.6's map.c: every map command is allowed at level user.

UNKNOWN_MAP = "Unknown map identifier. Please use #<id> or <file>.\n"


def _map_command(nargs: int, usage_error: str, action: Callable) -> Handler:
    """A command taking a map then `nargs - 1` more words: `usage_error` when one is
    missing, HAProxy's unknown-map line when the map is not known, else action(ref, args)."""
    def handler(cli: CliSession, args: list) -> str:
        if len(args) < 2 + nargs or not all(args[2:2 + nargs]):
            return usage_error
        ref = maps.REGISTRY.lookup(args[2])
        if ref is None:
            return UNKNOWN_MAP
        return action(ref, args)
    return handler


def _show_map(cli: CliSession, args: list):
    if len(args) < 3 or not args[2]:
        return "# id (file) description\n" + "".join(
            f"{ref.uid} ({ref.path}) {ref.description()}\n" for ref in maps.REGISTRY.maps())
    ref = maps.REGISTRY.lookup(args[2])
    if ref is None:
        return UNKNOWN_MAP
    return _map_dump(ref)


def _map_dump(ref):
    """`show map FILE`, in chunks: a map may hold millions of entries."""
    entries = list(ref.entries)
    return _in_chunks(f"0x{e.id:x} {e.key} {e.value}\n" for e in entries)


def _add_map(ref, args: list) -> str:
    try:
        ref.add(args[3], args[4])
    except maps.MapError as e:
        return f"{e}.\n"
    return ""


_ADD_MAP_USAGE = ("'add map' expects three parameters (map identifier, key and value) or one "
                  "parameter (map identifier) and a payload\n")
_add_map_args = _map_command(3, _ADD_MAP_USAGE, _add_map)


def _add_map_cmd(cli: CliSession, args: list) -> str:
    """add map MAP KEY VALUE, or add map MAP <<payload (`key value` lines; KEY VALUE are
    then ignored, as HAProxy does)."""
    if cli.payload is None:
        return _add_map_args(cli, args)
    if len(args) < 3 or not args[2]:
        return _ADD_MAP_USAGE
    ref = maps.REGISTRY.lookup(args[2])
    if ref is None:
        return UNKNOWN_MAP
    try:
        ref.add_payload(cli.payload)
    except maps.MapError as e:
        return f"{e}.\n"
    return ""


def _on_entries(not_found: str, by_id_not_found: str, action: Callable) -> Callable:
    """set/del map: the entries named by key or `#0x<id>`, HAProxy's lines when none."""
    def run(ref, args: list) -> str:
        entries = ref.find_entries(args[3])
        if entries is None:
            return "Malformed identifier. Please use #<id> or <file>.\n"
        if not entries:
            return by_id_not_found if args[3].startswith("#0x") else not_found
        action(ref, entries, args)
        return ""
    return run


def register_map_commands(reg: CommandRegistry) -> None:
    reg.register(("show", "map"), _show_map,
                 "show map [@ver] [map]                   : report available maps or dump a map's contents")
    reg.register(("get", "map"), _map_command(
        2, "Missing map identifier and/or key.\n", lambda ref, a: ref.lookup_report(a[3])),
        "get map <acl> <value>                   : report the keys and values matching a sample for a map")
    reg.register(("add", "map"), _add_map_cmd,
        "add map [@<ver>] <map> <key> <val>      : add a map entry (payload supported instead of key/val)")
    reg.register(("set", "map"), _map_command(
        3, "'set map' expects three parameters: map identifier, key and value.\n",
        _on_entries("entry not found.\n", "key or pattern not found.\n",
                    lambda ref, entries, a: ref.set_value(entries, a[4]))),
        "set map <map> [<key>|#<ref>] <value>    : modify a map entry")
    reg.register(("del", "map"), _map_command(
        2, "This command expects two parameters: map identifier and key.\n",
        _on_entries("Key not found.\n", "Key not found.\n",
                    lambda ref, entries, a: ref.delete(entries))),
        "del map <map> [<key>|#<ref>]            : delete map entries matching <key>")
    reg.register(("clear", "map"), _map_command(
        1, "Missing map identifier.\n", lambda ref, a: ref.clear() or ""),
        "clear map [@<ver>] <map>                : clear the contents of this map")


# ---------------------------------------------------------------------------- ACL commands
# HAProxy 2.6's ACL side of map.c: the same pattern references (proxy/maps.py AclRef),
# every command allowed at level user. Not built: versions (`@<ver>`, prepare/commit acl).

UNKNOWN_ACL = "Unknown ACL identifier. Please use #<id> or <file>.\n"


def _acl_command(nargs: int, usage_error: str, action: Callable,
                 unknown: str = UNKNOWN_ACL) -> Handler:
    """An ACL command taking the ACL then `nargs - 1` more words (see _map_command)."""
    def handler(cli: CliSession, args: list) -> str:
        if len(args) < 2 + nargs or not all(args[2:2 + nargs]):
            return usage_error
        ref = maps.REGISTRY.lookup_acl(args[2])
        if ref is None:
            return unknown
        return action(ref, args)
    return handler


def _show_acl(cli: CliSession, args: list):
    if len(args) < 3 or not args[2]:
        return "# id (file) description\n" + "".join(
            f"{ref.uid} ({ref.path}) {ref.description()}\n" for ref in maps.REGISTRY.acls)
    ref = maps.REGISTRY.lookup_acl(args[2])
    if ref is None:
        return UNKNOWN_ACL
    return _in_chunks(f"0x{e.id:x} {e.key}\n" for e in list(ref.entries))


_ADD_ACL_USAGE = "'add acl' expects two parameters: ACL identifier and pattern.\n"


def _add_acl(cli: CliSession, args: list) -> str:
    """add acl ACL PATTERN; with a payload (HAProxy 2.6) the pattern is the payload up to
    its first blank, PATTERN still required."""
    if len(args) < 4 or not args[2] or not args[3]:
        return _ADD_ACL_USAGE
    ref = maps.REGISTRY.lookup_acl(args[2])
    if ref is None:
        return UNKNOWN_ACL
    pattern = args[3]
    if cli.payload is not None:
        pattern = maps.split_map_line(cli.payload)[0]
    try:
        ref.add(pattern, "")
    except maps.MapError as e:
        return f"{e}.\n"
    return ""


def _del_acl(ref, args: list) -> str:
    entries = ref.find_entries(args[3])
    if not entries:
        return "Key not found.\n"
    ref.delete(entries)
    return ""


def register_acl_commands(reg: CommandRegistry) -> None:
    reg.register(("show", "acl"), _show_acl,
                 "show acl [@<ver>] <acl>]                : report available acls or dump an acl's contents")
    reg.register(("get", "acl"), _acl_command(
        2, "Missing ACL identifier and/or key.\n", lambda ref, a: ref.lookup_report(a[3])),
        "get acl <acl> <value>                   : report the patterns matching a sample for an ACL")
    reg.register(("add", "acl"), _add_acl,
                 "add acl [@<ver>] <acl> <pattern>        : add an acl entry")
    reg.register(("del", "acl"), _acl_command(
        2, "This command expects two parameters: ACL identifier and key.\n", _del_acl,
        unknown=UNKNOWN_MAP),                   # (HAProxy 2.6 says "map" here)
        "del acl <acl> [<key>|#<ref>]            : delete acl entries matching <key>")
    reg.register(("clear", "acl"), _acl_command(
        1, "Missing ACL identifier.\n", lambda ref, a: ref.clear() or ""),
        "clear acl [@<ver>] <acl>                : clear the contents of this acl")


__all__ = ["RuntimeAPI", "CliSession", "CommandRegistry", "USER", "OPERATOR", "ADMIN",
           "LEVELS", "PERMISSION_DENIED", "split_args", "split_commands", "DATA_TYPES"]
