"""HAProxy configuration syntax shared by the proxy and the shield.

Only the lexical layer lives here: lines split into words with HAProxy's quoting
rules, `file:line` error reporting, and HAProxy's time and size units. Each component
parses the sections it owns (proxy: global/defaults/frontend/backend/listen/peers;
control: shield) and skips the others by name.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Iterator


class ConfigError(Exception):
    """A configuration error, reported as `file:line: 'keyword': message`."""

    def __init__(self, message: str, file: str | None = None, line: int | None = None,
                 keyword: str | None = None):
        self.message, self.file, self.line, self.keyword = message, file, line, keyword
        super().__init__(str(self))

    def __str__(self) -> str:
        if self.file is None:
            where = ""
        elif self.line is None:
            where = f"{self.file}: "
        else:
            where = f"{self.file}:{self.line}: "
        what = f"'{self.keyword}': " if self.keyword else ""
        return f"{where}{what}{self.message}"


@dataclass(frozen=True)
class Line:
    file: str
    lineno: int
    words: tuple[str, ...]

    @property
    def keyword(self) -> str:
        return self.words[0]

    def error(self, message: str, keyword: str | None = None) -> ConfigError:
        return ConfigError(message, self.file, self.lineno, keyword or self.keyword)


_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def split_words(text: str, file: str = "<string>", lineno: int = 0) -> tuple[str, ...]:
    r"""Split one line into words: `#` comments, '…' literal, "…" with escapes and
    environment variables, backslash escapes outside single quotes as HAProxy reads them
    (\<space> \\ \# \' \" \$ give the character, \t \n \r and \xHH what they stand
    for; any other backslash stays, so a regex keeps its \. and \1)."""
    words: list[str] = []
    cur: list[str] = []
    in_word = False
    i, n = 0, len(text)
    quote = ""
    while i < n:
        c = text[i]
        if quote == "'":
            if c == "'":
                quote = ""
            else:
                cur.append(c)
        elif c == "\\" and quote != "'":
            if i + 1 >= n:
                raise ConfigError("line ends with an unfinished escape", file, lineno)
            nxt = text[i + 1]
            hexa = text[i + 2:i + 4]
            if nxt in " \\#'\"$":
                cur.append(nxt)
            elif nxt in "tnr":
                cur.append({"t": "\t", "n": "\n", "r": "\r"}[nxt])
            elif nxt == "x" and len(hexa) == 2 and all(h in _HEX_DIGITS for h in hexa):
                cur.append(chr(int(hexa, 16)))
                i += 2
            else:                       # anything else stays as written (a regex's \1, \.)
                cur.append(c + nxt)
            in_word = True
            i += 1
        elif quote == '"':
            if c == '"':
                quote = ""
            elif c == "$":
                m = _ENV.match(text, i)
                if m:
                    cur.append(os.environ.get(m.group(1) or m.group(2), ""))
                    i = m.end()
                    continue
                cur.append(c)
            else:
                cur.append(c)
        elif c in "\"'":
            quote, in_word = c, True
        elif c == "#":
            break
        elif c in " \t":
            if in_word:
                words.append("".join(cur))
                cur, in_word = [], False
        else:
            cur.append(c)
            in_word = True
        i += 1
    if quote:
        raise ConfigError(f"unmatched quote {quote}", file, lineno)
    if in_word:
        words.append("".join(cur))
    return tuple(words)


def read_lines(text: str, file: str = "<string>") -> Iterator[Line]:
    """Yield the non-empty lines of a configuration text."""
    for lineno, raw in enumerate(text.splitlines(), start=1):
        words = split_words(raw, file, lineno)
        if words:
            yield Line(file, lineno, words)


def read_file(path: str) -> list[Line]:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError(f"cannot open configuration file: {e.strerror}", path) from None
    return list(read_lines(text, path))


_TIME_UNITS = {"us": 0.001, "ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_TIME = re.compile(r"^(\d+)(us|ms|s|m|h|d)?$")
TIME_MAX_MS = 2**31 - 1


def c_strtol(text: str) -> tuple[int | None, str]:
    """C's strtol in base 10, as HAProxy's parsers use it: (value, what follows), value
    None when no digits lead (after white space and a sign)."""
    t = text.lstrip(" \t\n\v\f\r")
    j = 1 if t[:1] in ("+", "-") else 0
    k = j
    while k < len(t) and t[k].isdigit() and t[k].isascii():
        k += 1
    if k == j:
        return None, text
    return int(t[:k]), t[k:]


def c_atoi(text: str) -> int:
    """C's atoi: the leading number, 0 when there is none."""
    return c_strtol(text)[0] or 0


def parse_time_ms(text: str, default_unit: str = "ms") -> int:
    """HAProxy time format (`10s`, `30m`, `500`), in milliseconds.

    Raises ValueError with a readable message; the caller adds file:line."""
    m = _TIME.match(text)
    if not m:
        raise ValueError(f"invalid time value '{text}' (expects <number>[us|ms|s|m|h|d])")
    value = int(m.group(1)) * _TIME_UNITS[m.group(2) or default_unit]
    if 0 < value < 1:
        raise ValueError(f"time value '{text}' is below one millisecond")
    if value > TIME_MAX_MS:
        raise ValueError(f"time value '{text}' is too large (max 2147483647 ms)")
    return int(value)


_SIZE = re.compile(r"^(\d+)([kKmMgG]?)$")


def parse_size(text: str) -> int:
    """HAProxy size format: an integer with an optional k/m/g suffix (powers of 1024)."""
    m = _SIZE.match(text)
    if not m:
        raise ValueError(f"invalid size '{text}' (expects <number>[k|m|g])")
    shift = {"": 0, "k": 10, "m": 20, "g": 30}[m.group(2).lower()]
    return int(m.group(1)) << shift
