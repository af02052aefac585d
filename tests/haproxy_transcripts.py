"""Read the HAProxy 2.6.12 captures in tests/fixtures/haproxy-transcripts/.

`cli_exchanges(name)` gives the runtime API exchanges of a transcript, in order: each
`$ echo 'CMD' | socat ...` (or `echo "CMD"`) line with the exact reply bytes that
followed it (from its `repr:` line, or from the BEGIN/END block when there is none).
`config(name)` gives the captured haproxy.cfg text. `mask(reply)` hides what legitimately
differs between two processes: the entry pointers and the `exp=` countdowns.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

DIR = Path(__file__).resolve().parent / "fixtures" / "haproxy-transcripts"

_CMD = re.compile(r"""^\$ echo (['"])(.*)\1 \| socat stdio UNIX-CONNECT:\S+$""")
_BEGIN = re.compile(r"^--- reply: BEGIN \((\d+) bytes\) ---$")


def text(name: str) -> str:
    return (DIR / name).read_text(encoding="utf-8")


def config(name: str) -> str:
    t = text(name)
    start = t.index("--- haproxy.cfg (exact) ---\n") + len("--- haproxy.cfg (exact) ---\n")
    return t[start:t.index("--- end of haproxy.cfg ---")]


def cli_exchanges(name: str) -> list[tuple[str, bytes]]:
    lines = text(name).split("\n")
    out: list[tuple[str, bytes]] = []
    i = 0
    while i < len(lines):
        m = _CMD.match(lines[i])
        if not m:
            i += 1
            continue
        cmd = m.group(2)
        j = i + 1
        while j < len(lines) and not _BEGIN.match(lines[j]):
            j += 1
        size = int(_BEGIN.match(lines[j]).group(1))
        k = j + 1
        while lines[k] != "--- reply: END ---":
            k += 1
        reply = None
        if k + 1 < len(lines) and lines[k + 1].startswith("repr: "):
            reply = ast.literal_eval(lines[k + 1][len("repr: "):])
        else:
            reply = ("\n".join(lines[j + 1:k]) + "\n").encode()
        assert len(reply) == size, (name, cmd, len(reply), size)
        out.append((cmd, reply))
        i = k + 1
    return out


_PTR = re.compile(rb"^0x[0-9a-f]+: ", re.M)
_EXP = re.compile(rb" exp=\d+(?=[ \n])")


def mask(reply: bytes) -> bytes:
    return _EXP.sub(b" exp=*", _PTR.sub(b"0x*: ", reply))


def exps(reply: bytes) -> list[int]:
    return [int(x) for x in re.findall(rb" exp=(\d+)(?=[ \n])", reply)]


def stick_tables(cfg_text: str) -> list[tuple[str, tuple[str, ...], bool]]:
    """(proxy name, words after `stick-table`, has stick rules) per declared table, in
    declaration order."""
    from edgestick.cfgsyntax import read_lines
    out = []
    name = None
    current = None
    for line in read_lines(cfg_text, "haproxy.cfg"):
        if line.words[0] in ("frontend", "backend", "listen", "defaults", "global", "peers"):
            name = line.words[1] if len(line.words) > 1 else None
            current = None
        elif line.words[0] == "stick-table" and name:
            current = [name, tuple(line.words[1:]), False]
            out.append(current)
        elif line.words[0] == "stick" and current is not None:
            current[2] = True
    return [tuple(x) for x in out]
