"""Client for runtime-API sockets: HAProxy's stats socket, edgestick's proxy and shield.

One mechanism for everything in control/ that talks to a proxy or a shield:

* `RuntimeClient(address).command("show table t")` opens a connection, sends one
  command and returns the reply (non-interactive mode: the server answers and closes;
  the reply ends with one empty line, which is kept, so the text is verbatim).
* `with client.session() as s: s.pipeline(commands)` holds one interactive (`prompt`)
  connection and pipelines many commands on it: the mirror writes thousands of
  `set table` lines a cycle without a connection per line.
* `parse_table_dump(text)` turns `show table` output into `TableHeader`/`TableEntry`.

Addresses follow HAProxy's `stats socket` spelling: `/path`, `unix@/path`,
`ipv4@host:port`, `ipv6@[addr]:port`, or plain `host:port`.
"""
from __future__ import annotations

import ipaddress
import re
import select
import socket
import time
from dataclasses import dataclass, field

DEFAULT_TIMEOUT = 5.0
# A server that keeps the connection open after the empty-line terminator (not HAProxy,
# which closes) is given this long to send more before the reply counts as complete.
TERMINATOR_GRACE = 0.2
PROMPT = b"> "


class RuntimeApiError(OSError):
    """Transport-level failure: cannot connect, timeout, connection lost. A command
    the server refuses is not an error here: its error line is the reply."""


def parse_address(text: str) -> tuple[int, object]:
    """(address family, socket address) for a runtime-API address string."""
    if not text:
        raise ValueError("empty runtime API address")
    if text.startswith("unix@"):
        return socket.AF_UNIX, text[5:]
    if text.startswith("/") or text.startswith("./"):
        return socket.AF_UNIX, text
    family = None
    rest = text
    if text.startswith("ipv4@"):
        family, rest = socket.AF_INET, text[5:]
    elif text.startswith("ipv6@"):
        family, rest = socket.AF_INET6, text[5:]
    host, sep, port = rest.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"invalid runtime API address '{text}' "
                         "(expects /path, unix@/path, ipv4@host:port or host:port)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    host = host or "127.0.0.1"
    if family is None:
        try:
            family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
        except ValueError:
            family = socket.AF_INET        # a host name: resolved by connect()
    return family, (host, int(port))


def _reply_end(buf: bytes | bytearray, start: int, scan_from: int | None = None) -> int:
    """End offset of the first complete interactive reply in buf[start:], or -1.

    In prompt mode every reply is its output, one empty line, then "> ". The output's
    own lines end with "\\n", so the reply is over at the first "\\n> " that sits at the
    reply's start or right after a "\\n". `scan_from` skips what an earlier call already
    searched (a long dump arrives in many pieces)."""
    i = start if scan_from is None else max(start, scan_from)
    while True:
        i = buf.find(b"\n> ", i)
        if i < 0:
            return -1
        if i == start or buf[i - 1:i] == b"\n":
            return i + 3
        i += 1


class Session:
    """One interactive connection (`prompt` mode): many commands, one connection."""

    def __init__(self, client: "RuntimeClient"):
        self.client = client
        self.sock = client._connect()
        self.buf = bytearray()
        try:
            self.sock.sendall(b"prompt\n")
            self._read_replies(1)
        except BaseException:
            self.sock.close()
            raise

    def _read_replies(self, count: int) -> list[str]:
        replies: list[str] = []
        pos = 0
        scanned = 0                    # buf[:scanned - 3] holds no reply end
        deadline = time.monotonic() + self.client.timeout
        while len(replies) < count:
            end = _reply_end(self.buf, pos, scanned - 3)
            if end >= 0:
                # the reply without its "\n> " prompt, but with the empty-line terminator's "\n"
                replies.append(self.buf[pos:end - 2].decode("utf-8", "replace"))
                pos = scanned = end
                continue
            scanned = len(self.buf)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RuntimeApiError(f"{self.client.address}: timed out waiting for a reply "
                                      f"({len(replies)} of {count} received)")
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(1 << 16)
            except socket.timeout:
                continue
            except OSError as e:
                raise RuntimeApiError(f"{self.client.address}: {e.strerror or e}") from None
            if not data:
                raise RuntimeApiError(f"{self.client.address}: connection closed after "
                                      f"{len(replies)} of {count} replies")
            self.buf += data
        del self.buf[:pos]
        return replies

    def command(self, cmd: str) -> str:
        return self.pipeline([cmd])[0]

    def pipeline(self, commands: list[str], window: int = 256) -> list[str]:
        """Send commands and return their replies in order. At most `window` commands are
        in flight, so neither side's socket buffer fills while the other waits."""
        replies: list[str] = []
        for i in range(0, len(commands), window):
            chunk = commands[i:i + window]
            for cmd in chunk:
                _check_command(cmd)
            try:
                self.sock.settimeout(self.client.timeout)
                self.sock.sendall("".join(c + "\n" for c in chunk).encode())
            except OSError as e:
                raise RuntimeApiError(f"{self.client.address}: {e.strerror or e}") from None
            replies += self._read_replies(len(chunk))
        return replies

    def close(self) -> None:
        try:
            self.sock.settimeout(0.5)
            self.sock.sendall(b"quit\n")
        except OSError:
            pass
        self.sock.close()

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _check_command(cmd: str) -> None:
    if "\n" in cmd or "\r" in cmd:
        raise ValueError(f"a runtime command is one line: {cmd!r}")


class RuntimeClient:
    def __init__(self, address: str, timeout: float = DEFAULT_TIMEOUT):
        self.address = address
        self.timeout = timeout
        self.family, self.sockaddr = parse_address(address)

    def _connect(self) -> socket.socket:
        sock = socket.socket(self.family, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.sockaddr)
        except socket.timeout:
            sock.close()
            raise RuntimeApiError(f"{self.address}: timed out connecting") from None
        except OSError as e:
            sock.close()
            raise RuntimeApiError(f"cannot connect to {self.address}: {e.strerror or e}") from None
        return sock

    def command(self, cmd: str) -> str:
        """Send one command (non-interactive) and return the reply, verbatim."""
        _check_command(cmd)
        return self.raw(cmd.encode() + b"\n").decode("utf-8", "replace")

    def raw(self, payload: bytes) -> bytes:
        """Send bytes as they are (one or more lines) and read until the server closes, or
        until the reply ends with its empty-line terminator and nothing more follows."""
        deadline = time.monotonic() + self.timeout
        with self._connect() as sock:
            try:
                sock.sendall(payload)
                out = bytearray()
                while True:
                    complete = out == b"\n" or out.endswith(b"\n\n")
                    wait = deadline - time.monotonic()
                    if complete:
                        wait = min(wait, TERMINATOR_GRACE)
                    if wait <= 0:
                        if complete:
                            return bytes(out)
                        raise RuntimeApiError(f"{self.address}: timed out waiting for a reply")
                    ready, _, _ = select.select([sock], [], [], wait)
                    if not ready:
                        if complete:
                            return bytes(out)
                        continue
                    data = sock.recv(1 << 16)
                    if not data:
                        return bytes(out)
                    out += data
            except OSError as e:
                raise RuntimeApiError(f"{self.address}: {e.strerror or e}") from None

    def session(self) -> Session:
        return Session(self)


# --- `show table` dumps -----------------------------------------------------------------

@dataclass(frozen=True)
class TableHeader:
    name: str
    type: str
    size: int
    used: int


@dataclass
class TableEntry:
    key: str
    use: int
    exp: int
    # name as printed (rates keep their period: "http_req_rate(10000)") -> value;
    # integers as int, anything else (server_key) as the printed text
    data: dict[str, int | str] = field(default_factory=dict)

    def get(self, data_type: str, default=None):
        """A value by type name, ignoring a rate's period: get("http_err_rate")."""
        if data_type in self.data:
            return self.data[data_type]
        prefix = data_type + "("
        for name, value in self.data.items():
            if name.startswith(prefix):
                return value
        return default


class DumpError(ValueError):
    pass


_HEADER = re.compile(r"^# table: (?P<name>.*), type: (?P<type>\w+), size:(?P<size>\d+), used:(?P<used>\d+)$")
_ENTRY = re.compile(r"^0x[0-9a-fA-F]+: key=(?P<key>(?:\\.|[^ \\])*) use=(?P<use>-?\d+) exp=(?P<exp>-?\d+)(?P<rest>.*)$")


def _unescape_key(text: str) -> str:
    """Undo the dump's key escaping (`\\ `, `\\=`, `\\\\`, `\\t`, `\\xHH`...)."""
    if "\\" not in text:
        return text
    out, i = [], 0
    simple = {"t": "\t", "n": "\n", "r": "\r", "e": "\x1b"}
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            nxt = text[i + 1]
            if nxt == "x" and i + 3 < len(text):
                out.append(chr(int(text[i + 2:i + 4], 16)))
                i += 4
                continue
            out.append(simple.get(nxt, nxt))
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)


def parse_table_dump(text: str) -> tuple[list[TableHeader], list[TableEntry]]:
    """Headers and entries of a `show table [NAME [filter]]` reply.

    An error reply (anything that is neither a header, an entry nor the terminator,
    e.g. `No such table`) raises DumpError with the server's message."""
    headers: list[TableHeader] = []
    entries: list[TableEntry] = []
    for line in text.split("\n"):
        if not line:
            continue
        if line.startswith("# "):
            m = _HEADER.match(line)
            if m:
                headers.append(TableHeader(m["name"], m["type"], int(m["size"]), int(m["used"])))
            continue                # e.g. "# contents not dumped due to insufficient privileges"
        parts = line.split(" ")
        if "\\" not in line and len(parts) >= 4 and parts[0].startswith("0x") \
                and parts[1].startswith("key=") and parts[2].startswith("use=") \
                and parts[3].startswith("exp="):
            # the common case, without the regex (a mirror cycle may parse 100k lines)
            key, use, exp, fields = parts[1][4:], parts[2][4:], parts[3][4:], parts[4:]
        else:
            m = _ENTRY.match(line)
            if not m:
                raise DumpError(text.strip() if not headers and not entries else f"unexpected line: {line!r}")
            key, use, exp, fields = _unescape_key(m["key"]), m["use"], m["exp"], m["rest"].split()
        data: dict[str, int | str] = {}
        for item in fields:
            name, sep, value = item.partition("=")
            if not sep:
                raise DumpError(f"unexpected field {item!r} in: {line!r}")
            try:
                data[name] = int(value)
            except ValueError:
                data[name] = value
        try:
            entries.append(TableEntry(key, int(use), int(exp), data))
        except ValueError:
            raise DumpError(f"unexpected line: {line!r}") from None
    return headers, entries


def show_table(client: RuntimeClient | Session, table: str, filters: str = "") -> list[TableEntry]:
    """Entries of one table (optionally filtered: "data.http_err_rate gt 20")."""
    cmd = f"show table {table}" + (f" {filters}" if filters else "")
    reply = client.command(cmd)
    headers, entries = parse_table_dump(reply)
    if not headers and reply.strip():
        raise DumpError(reply.strip())
    return entries
