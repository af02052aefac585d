"""Request logging as HAProxy 2.6 does it.

- Configuration: `log` targets (global, defaults, proxies; `log global`, `no log`),
  `log-tag`, `log-send-hostname`, `log-format`, `option httplog [clf]` (read from the
  options), `option dontlognull`, `dontlog-normal`, `log-separate-errors`, `capture
  request|response header`, `capture cookie`, `declare capture`, `http-request|response
  capture`, `unique-id-format`, `unique-id-header`.
- Log-format strings: one compiler (`compile_format`) and one renderer (`render`) for the
  log line, the unique id and the rules' values (`log_format`, which frontend.py and the
  rules use): literal text, `%%`, HAProxy's %-variables with `%{+Q}`/`%{-Q}`/`%{+X}`/`%{+E}`
  flags and `%o`, and `%[sample]`. In a log line, blanks are separators: a run of them
  writes one space, and none after something that wrote nothing (%hr without captures).
- Run time: a frontend with a log target, captures or a unique id gets a FrontendLog;
  each stream then carries a Record (times, captures, termination state) that the
  frontend fills at a few points and hands over at the stream's end (FrontendLog.end).
  Frontends without any of these get no Record: their requests pay an `is None` test at
  a few points.
- Sending: syslog framing per target `format` (rfc3164, local, rfc5424, short, priority,
  timed, iso, raw), facility and level, `len` truncation, over UDP, a unix datagram
  socket, or stdout/stderr.
"""
from __future__ import annotations

import os
import re
import socket
import time
from typing import Callable, Optional

from .sample import FETCHES, REQUEST_HEADER_FETCHES, FetchDef, SampleError, compile_expr

FACILITIES = ("kern user mail daemon auth syslog lpr news uucp cron auth2 ftp ntp audit alert "
              "cron2 local0 local1 local2 local3 local4 local5 local6 local7").split()
LEVELS = "emerg alert crit err warning notice info debug".split()
FORMATS = ("local", "rfc3164", "rfc5424", "short", "priority", "timed", "iso", "raw")
LEVEL_INFO, LEVEL_ERR = 6, 3

# HAProxy's own formats (option httplog, option httplog clf)
HTTP_FORMAT = ("%ci:%cp [%tr] %ft %b/%s %TR/%Tw/%Tc/%Tr/%Ta %ST %B %CC %CS %tsc "
               "%ac/%fc/%bc/%sc/%rc %sq/%bq %hr %hs %{+Q}r")
CLF_FORMAT = ('%{+Q}o %{-Q}ci - - [%trg] %r %ST %B "" "" %cp %ms %ft %b %s %TR %Tw %Tc %Tr '
              '%Ta %tsc %ac %fc %bc %sc %rc %sq %bq %CC %CS %hrl %hsl')
TCP_FORMAT = "%ci:%cp [%t] %ft %b/%s %Tw/%Tc/%Tt %B %ts %ac/%fc/%bc/%sc/%rc %sq/%bq"

_MONTHS = "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split()


# ---------------------------------------------------------------------------- configuration

class Target:
    """One `log` destination: where, how framed, which facility and levels."""
    __slots__ = ("kind", "addr", "fmt", "facility", "level", "minlevel", "maxlen", "text",
                 "sample")

    def __init__(self, kind, addr, fmt, facility, level, minlevel, maxlen, text):
        self.kind, self.addr, self.fmt = kind, addr, fmt     # kind: udp, unix, fd
        self.facility, self.level, self.minlevel = facility, level, minlevel
        self.maxlen, self.text = maxlen, text
        self.sample = None          # (line numbers sent, period) of `sample R:S`


GLOBAL = "global"       # `log global` in a proxy's target list, resolved at finish


class GlobalLog:
    """The global section's `log` lines, `log-tag`, `log-send-hostname`."""

    def __init__(self):
        self.targets: list[Target] = []
        self.tag = "haproxy"
        self.hostname: Optional[str] = None


class ProxyLog:
    """A proxy's logging settings (copied from its defaults section, then its own lines)."""

    def __init__(self):
        self.targets: list = []             # Target or GLOBAL
        self.fmt: Optional[str] = None       # log-format
        self.fmt_where = None
        self.tag: Optional[str] = None
        self.hostname: Optional[str] = None   # log-send-hostname (global), set by finish
        self.uid_fmt: Optional[str] = None
        self.uid_header: Optional[str] = None
        self.req_caps: list[tuple[Optional[str], int]] = []   # (header name or None, len)
        self.res_caps: list[tuple[Optional[str], int]] = []
        self.cookie_cap: Optional[tuple[str, int]] = None     # capture cookie NAME len N

    def copy(self) -> "ProxyLog":
        p = ProxyLog()
        p.targets = list(self.targets)
        p.fmt, p.fmt_where, p.tag = self.fmt, self.fmt_where, self.tag
        p.uid_fmt, p.uid_header = self.uid_fmt, self.uid_header
        return p                           # (captures are not inherited: frontends only)


def inherit(base: Optional[ProxyLog]) -> ProxyLog:
    return ProxyLog() if base is None else base.copy()


def parse_target(line) -> Target | str:
    """`log global` | `log <target> [len N] [format F] [sample R:S] <facility> [level
    [minlevel]]`, with HAProxy's messages."""
    w = line.words
    if len(w) < 2:
        raise line.error("expects 'global', 'stdout', 'stderr' or an address")
    if w[1] == "global":
        return GLOBAL
    where = w[1]
    i = 2
    maxlen, fmt, text, sample = 1024, "local", " ".join(w[1:]), None
    for option in ("len", "format", "sample"):     # optional, in this order (as HAProxy)
        if i >= len(w) or w[i] != option:
            continue
        if i + 1 >= len(w):
            raise line.error(f"log : missing value after '{w[i]}'")
        val = w[i + 1]
        if option == "len":
            if not val.isdigit() or not 80 <= int(val) <= 65535:
                raise line.error(f"log : invalid log length '{val}', must be between 80 and "
                                 "65535")
            maxlen = int(val)
        elif option == "format":
            if val not in FORMATS:
                raise line.error(f"log : unknown log format '{val}'")
            fmt = val
        else:
            sample = _parse_sample(line, val)
        i += 2
    if i >= len(w):
        raise line.error("log : expects <facility> after the target")
    if w[i] not in FACILITIES:
        raise line.error(f"log : unknown log facility '{w[i]}'")
    facility = FACILITIES.index(w[i])
    levels = []
    for lvl in w[i + 1:i + 3]:
        if lvl not in LEVELS:
            raise line.error(f"log : unknown optional log level '{lvl}'")
        levels.append(LEVELS.index(lvl))
    if len(w) > i + 3:
        raise line.error(f"log : unexpected argument '{w[i + 3]}'")
    level = levels[0] if levels else 7
    minlevel = levels[1] if len(levels) > 1 else 0
    kind, addr = _destination(line, where)
    t = Target(kind, addr, fmt, facility, level, minlevel, maxlen, text)
    t.sample = sample
    return t


def _parse_sample(line, text: str) -> tuple[frozenset, int]:
    """`sample <ranges>:<size>` (`1-3,5:10`): the line numbers, counted from 1 in each
    period of `size` lines, that are sent."""
    ranges, sep, size = text.partition(":")
    if not sep:
        raise line.error("log : Missing sample size")
    picked: set[int] = set()
    top = 0
    for r in ranges.split(","):
        lo, dash, hi = r.partition("-")
        if not lo.isdigit() or (dash and not hi.isdigit()) or int(lo) < 1 or \
                (dash and int(hi) < int(lo)):
            raise line.error(f"log : wrong sample range '{r}'")
        lo_n, hi_n = int(lo), int(hi) if dash else int(lo)
        picked.update(range(lo_n, hi_n + 1))
        top = max(top, hi_n)
    if not size.isdigit() or int(size) < top:
        raise line.error(f"log : sample size {size} should be greater or equal to {top} the "
                         "maximum of the high ranges limits")
    return frozenset(picked), int(size)


def _destination(line, where: str):
    if where in ("stdout", "fd@1"):
        return "fd", 1
    if where in ("stderr", "fd@2"):
        return "fd", 2
    for prefix in ("unix@",):
        if where.startswith(prefix):
            return "unix", where[len(prefix):]
    if where.startswith("/"):
        return "unix", where
    if where.startswith(("ring@", "tcp@", "tcp4@", "tcp6@", "fd@")):
        raise line.error(f"log : '{where}' is not supported by edgestick (UDP, unix datagram "
                         "sockets, stdout and stderr are)")
    text = where
    for prefix in ("udp@", "udp4@", "udp6@", "ipv4@", "ipv6@"):
        if text.startswith(prefix):
            text = text[len(prefix):]
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = text, "514"
    host = host.strip("[]")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise line.error(f"log : invalid port in '{where}'")
    try:
        info = socket.getaddrinfo(host or "127.0.0.1", int(port), type=socket.SOCK_DGRAM)
    except socket.gaierror:
        raise line.error(f"log : unable to resolve '{where}'") from None
    return "udp", info[0][4][:2]


def parse_global(cfg, line) -> None:
    """`log`, `log-tag`, `log-send-hostname` in the global section."""
    g = cfg.global_
    if g.log is None:
        g.log = GlobalLog()
    kw, w = line.keyword, line.words
    if kw == "log":
        t = parse_target(line)
        if t is GLOBAL:
            raise line.error("log : 'global' is only valid in proxy sections")
        g.log.targets.append(t)
    elif kw == "log-tag":
        if len(w) != 2:
            raise line.error("expects a tag for use in syslog.")
        g.log.tag = w[1]
    elif kw == "log-send-hostname":
        g.log.hostname = w[1] if len(w) > 1 else socket.gethostname()


GLOBAL_KEYWORDS = ("log", "log-tag", "log-send-hostname")


def _plog(p) -> ProxyLog:
    if p.log is None:
        p.log = ProxyLog()
    return p.log


def kw_log(parser, p, line):
    t = parse_target(line)
    _plog(p).targets.append(t)


def kw_no_log(parser, p, line):
    """`no log`: the proxy logs nowhere (targets inherited from defaults dropped)."""
    if len(line.words) > 2:
        raise line.error(f"'no log' cannot handle unexpected argument '{line.words[2]}'.")
    _plog(p).targets = []


def kw_log_format(parser, p, line):
    if len(line.words) != 2:
        raise line.error("log-format expects only one argument, don't forget to escape "
                         "spaces!")
    pl = _plog(p)
    if p.kind == "backend":
        parser.warn(line, f"backend '{p.name}' : 'log-format' directive is ignored in "
                          "backends.")
        return
    pl.fmt, pl.fmt_where = line.words[1], line
    _check_format(parser, p, line, line.words[1], "log-format")


def kw_log_tag(parser, p, line):
    if len(line.words) != 2:
        raise line.error("expects a tag for use in syslog.")
    _plog(p).tag = line.words[1]


def kw_unique_id_format(parser, p, line):
    if len(line.words) != 2:
        raise line.error("unique-id-format expects only one argument, don't forget to escape "
                         "spaces!")
    _plog(p).uid_fmt = line.words[1]
    _check_format(parser, p, line, line.words[1], "unique-id-format")


def kw_unique_id_header(parser, p, line):
    if len(line.words) != 2:
        raise line.error("expects an argument.")
    _plog(p).uid_header = line.words[1]


def kw_capture(parser, p, line):
    """`capture request|response header <name> len <n>`, `capture cookie <name> len <n>`."""
    w = line.words
    what = w[1] if len(w) > 1 else ""
    if p.kind == "defaults":
        raise line.error(f"'capture' not allowed in 'defaults' section.")
    if what == "cookie":
        if len(w) != 5 or w[3] != "len" or not w[4].isdigit():
            raise line.error("'capture cookie' expects <cookie_name> 'len' <len>.")
        _plog(p).cookie_cap = (w[2], int(w[4]))
    elif what in ("request", "response"):
        if len(w) != 6 or w[2] != "header" or w[4] != "len" or not w[5].isdigit():
            raise line.error(f"'capture {what}' expects 'header' <header_name> 'len' <len>.")
        caps = _plog(p).req_caps if what == "request" else _plog(p).res_caps
        caps.append((w[3].lower(), int(w[5])))
    else:
        raise line.error("'capture' expects 'cookie', 'request' or 'response'.")


def kw_declare(parser, p, line):
    w = line.words
    if (len(w) != 5 or w[1] != "capture" or w[2] not in ("request", "response")
            or w[3] != "len" or not w[4].isdigit()):
        raise line.error("'declare' expects 'capture' 'request'|'response' 'len' <len>.")
    caps = _plog(p).req_caps if w[2] == "request" else _plog(p).res_caps
    caps.append((None, int(w[4])))


def capture_slot(p, line, args, response: bool, what: str) -> tuple[int, int]:
    """`http-request capture <expr> len <n>` (a new slot) or `... id <n>` (a declared
    one): (slot index, length)."""
    caps = _plog(p).res_caps if response else _plog(p).req_caps
    if args[1] == "len":
        if response:
            raise line.error(f"'{what}' : 'len' is not allowed here; use 'id' with a "
                             "'declare capture response'.")
        caps.append((None, int(args[2])))
        return len(caps) - 1, int(args[2])
    idx = int(args[2])
    if idx >= len(caps):
        # HAProxy resolves ids after parsing; a missing one is its error then
        raise line.error(f"'{what}' : unable to find capture id '{idx}'.")
    return idx, caps[idx][1]


def _check_format(parser, p, line, text: str, what: str):
    try:
        f = compile_format(text, strict=True)
    except SampleError as e:
        raise line.error(f"failed to parse {what} : {e}.") from None
    if what != "log-format":
        return
    for name, rest in f.samples:        # the request is gone when a stream logs
        need = ("HTTP request headers,HTTP response headers" if name in _ANY_HEADERS else
                "HTTP request headers" if name in REQUEST_HEADER_FETCHES else None)
        if need:
            raise line.error(f"failed to parse log-format : sample fetch <{rest}> may not be "
                             f"reliably used here because it needs '{need}' which is not "
                             "available here.")


_ANY_HEADERS = frozenset(("hdr", "hdr_cnt", "hdr_ip", "hdr_val", "fhdr", "fhdr_cnt"))


def finish(cfg, warnings: list) -> None:
    """`log global` resolved to the global targets; HAProxy's warning for a log-format
    without a target."""
    glog = cfg.global_.log
    for p in cfg.proxies:
        pl = p.log
        if pl is None:
            continue
        resolved = []
        for t in pl.targets:
            if t is GLOBAL:
                resolved.extend(glog.targets if glog is not None else ())
            else:
                resolved.append(t)
        pl.targets = resolved
        if glog is not None:
            pl.tag = pl.tag or glog.tag
            pl.hostname = glog.hostname
        o = p.options
        has_format = pl.fmt is not None or o.httplog or o.tcplog
        if has_format and not resolved and p.has_frontend:
            kind = "frontend" if p.kind == "frontend" else "proxy"
            warnings.append(f"log format ignored for {kind} '{p.name}' since it has no log "
                            "address.")


# ---------------------------------------------------------------------------- log-format

# node kinds: literal text, a separator, a variable
_TEXT, _SEP, _VAR = 0, 1, 2
# value kinds for the flags: text (quoted by +Q, '-' when absent), ip and port (hex with
# +X), numbers (never quoted), raw (dates, states: as they are), or nothing written
Q, X, E = 1, 2, 4


def _opts(flags: str, base: int) -> int:
    o = base
    for part in flags.split(","):
        while part:
            sign, name = part[0], part[1:2]
            bit = {"Q": Q, "X": X, "E": E}.get(name, 0)
            if sign == "+":
                o |= bit
            elif sign == "-":
                o &= ~bit
            part = part[2:]
    return o


class Format:
    """A compiled log-format string: its nodes, and `run(ctx, rec)`, one Python function
    generated from them (a log line is rendered per request: one call per variable,
    separators decided here unless a node may write nothing)."""
    __slots__ = ("nodes", "collapse", "run", "samples")

    def __init__(self, nodes, collapse):
        self.nodes, self.collapse = nodes, collapse
        self.run = _generate(nodes)
        self.samples: list = []     # (fetch name, the text from it on): config checks


def _generate(nodes) -> Callable:
    env: dict = {}
    code = ["def run(ctx, rec):", " p = []"]
    pending: list[str] = []         # expressions appended in one go
    last_space: Optional[bool] = True   # None: known at run time only (variable ls)

    def flush():
        if pending:
            code.append(f" p += ({', '.join(pending)},)")
            pending.clear()

    for i, (kind, node) in enumerate(nodes):
        if kind == _TEXT:
            pending.append(repr(node))
            last_space = node[-1] == " "
        elif kind == _SEP:
            if last_space is None:
                flush()
                code.append(" if not ls: p.append(' ')")
            elif not last_space:
                pending.append("' '")
            last_space = True
        else:
            fmt_fn, fn, vkind, o, absent = node
            env[f"f{i}"], env[f"g{i}"] = fn, fmt_fn
            if vkind == "none":
                flush()
                if last_space is not None:
                    code.append(f" ls = {last_space}")
                code.append(f" v = g{i}(ctx, rec)")
                code.append(" if v is not None: p.append(v); ls = False")
                last_space = None
                continue
            if vkind in ("int", "port") and not o & X:
                pending.append(f"('-' if (v := f{i}(ctx, rec)) is None else str(v))")
            elif vkind in ("text", "ip") and not o & (Q | X | E):
                pending.append(f"({absent!r} if (v := f{i}(ctx, rec)) is None else v)")
            elif vkind == "raw":
                pending.append(f"f{i}(ctx, rec)")
            else:
                pending.append(f"g{i}(ctx, rec)")
            last_space = False
    flush()
    code.append(" return ''.join(p)")
    exec("\n".join(code), env)
    return env["run"]


def compile_format(text: str, strict: bool = False, collapse: bool = True) -> Format:
    """Parse a log-format string. `strict`: unknown variables are errors (configuration
    time); otherwise they stay literal text (rules' values, as edgestick always did).
    `collapse`: blanks are separators (log lines, unique ids), else literal text."""
    nodes: list = []
    samples: list = []
    opts = 0
    absent = "-" if collapse else ""    # (a rule's value leaves it empty)
    i, n = 0, len(text)
    lit: list[str] = []

    def flush():
        if lit:
            nodes.append((_TEXT, "".join(lit)))
            lit.clear()

    while i < n:
        ch = text[i]
        if ch == " " and collapse:
            flush()
            while i < n and text[i] == " ":
                i += 1
            if not nodes or nodes[-1][0] != _SEP:
                nodes.append((_SEP, None))
            continue
        if ch != "%":
            lit.append(ch)
            i += 1
            continue
        if i + 1 < n and text[i + 1] == "%":
            lit.append("%")
            i += 2
            continue
        j = i + 1
        flags = ""
        if j < n and text[j] == "{":
            k = text.find("}", j)
            if k < 0:
                if strict:
                    raise SampleError(f"missing '}}' in '{text}'")
                lit.append(ch)
                i += 1
                continue
            flags, j = text[j + 1:k], k + 1
        if j < n and text[j] == "[":
            end = text.find("]", j)
            if end < 0:
                if strict:
                    raise SampleError(f"missing ']' after '{text[j + 1:]}'")
                lit.append(ch)
                i += 1
                continue
            flush()
            try:
                expr = compile_expr(text[j + 1:end])
            except SampleError as e:
                if not strict:
                    raise
                raise SampleError(f"failed to parse sample expression <{text[j + 1:]}> : "
                                  f"{e}") from None
            samples.append((expr.fetch.name, text[j + 1:]))
            fn, o = _sample_var(expr), _opts(flags, opts)
            nodes.append((_VAR, (_formatter(fn, "text", o, absent), fn, "text", o, absent)))
            i = end + 1
            continue
        k = j
        while k < n and text[k].isalpha():
            k += 1
        name = text[j:k]
        var = VARS.get(name)
        if name == "o":
            opts = _opts(flags, opts)
            i = k
            continue
        if var is None:
            if strict:
                raise SampleError(f"no such format variable '{name}'. If you wanted to emit "
                                  "the '%' character verbatim, you need to use '%%'")
            lit.append(text[i:k])
            i = k
            continue
        flush()
        o = _opts(flags, opts)
        nodes.append((_VAR, (_formatter(var[0], var[1], o, absent), var[0], var[1], o, absent)))
        i = k
    flush()
    f = Format(nodes, collapse)
    f.samples = samples
    return f


def _sample_var(expr):
    def value(ctx, rec):
        v = expr(ctx)
        if v is None:
            return None
        return str(int(v)) if isinstance(v, bool) else str(v)
    return value


def _formatter(fn, vkind: str, o: int, absent: str):
    """fn's value as the node writes it (flags applied); None: the node writes nothing."""
    if vkind == "none":                 # (%hr...: nothing without captures)
        quote = bool(o & Q)

        def listed(ctx, rec):
            v = fn(ctx, rec)
            if v is None:
                return None
            if isinstance(v, list):
                return " ".join(f'"{x}"' for x in v) if quote else " ".join(v)
            return f'"{v}"' if quote else v
        return listed
    if vkind in ("text", "ip"):
        none = '""' if o & Q else absent
        if vkind == "ip" and o & X:
            def hex_ip(ctx, rec):
                v = fn(ctx, rec)
                return none if v is None else _hex_ip(v)
            return hex_ip
        if o & (Q | E):
            quote, esc = bool(o & Q), bool(o & E)

            def quoted(ctx, rec):
                v = fn(ctx, rec)
                if v is None:
                    return none
                if esc:
                    v = _escape(v)
                return f'"{v}"' if quote else v
            return quoted

        def text(ctx, rec):
            v = fn(ctx, rec)
            return none if v is None else v
        return text
    if vkind in ("port", "int"):
        if o & X:
            def hex4(ctx, rec):
                v = fn(ctx, rec)
                return "-" if v is None else ("%04X" % v if v >= 0 else str(v))
            return hex4

        def number(ctx, rec):
            v = fn(ctx, rec)
            return "-" if v is None else str(v)
        return number
    if vkind == "hex8":
        if o & X:
            return lambda ctx, rec: "%08X" % fn(ctx, rec)
        return lambda ctx, rec: str(fn(ctx, rec))
    return fn                           # raw: as it is


def render(fmt: Format, ctx, rec=None) -> str:
    return fmt.run(ctx, rec)


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def _hex_ip(ip: str) -> str:
    try:
        return socket.inet_pton(socket.AF_INET, ip).hex().upper()
    except OSError:
        try:
            return socket.inet_pton(socket.AF_INET6, ip).hex().upper()
        except OSError:
            return ip


_CACHE: dict[str, Format] = {}


def log_format(fmt: str, ctx) -> str:
    """A rule's log-format value (set-header, return lf-string, redirect...)."""
    f = _CACHE.get(fmt)
    if f is None:
        f = _CACHE[fmt] = compile_format(fmt, collapse=False)
    nodes = f.nodes
    if len(nodes) == 1 and nodes[0][0] == _TEXT:
        return nodes[0][1]
    stream = ctx.stream
    return render(f, ctx, getattr(stream, "log", None))


# ---------------------------------------------------------------------------- the variables

def _encode(s: str, bad) -> str:
    """Characters a log line must not carry as they are: '#' and their hex code."""
    if bad.search(s) is None:
        return s
    return bad.sub(lambda m: "#%02X" % ord(m.group()), s)


_URL_BAD = re.compile(r'[\x00-\x1f"#\x7f-\xff]')
_HDR_BAD = re.compile(r'[\x00-\x08\x0a-\x1f"#{|}\x7f]')


def _req_line(ctx, rec):
    if rec is not None and rec.method is not None:
        m, t, v = rec.method, rec.target, rec.version
    elif ctx.method is not None:
        m, t, v = ctx.method, ctx.url, ctx.version
    else:
        return "<BADREQ>"
    return _encode(f"{m} {t} HTTP/{v // 10}.{v % 10}", _URL_BAD)


def _req_parts(ctx, rec):
    if rec is not None and rec.method is not None:
        return rec.method, rec.target, rec.version
    if ctx.method is not None:
        return ctx.method, ctx.url, ctx.version
    return None


def _uri_path(ctx, rec):
    p = _req_parts(ctx, rec)
    if p is None:
        return None
    return _encode(p[1].split("?", 1)[0], _URL_BAD)   # (an absolute URI stays whole)


def _query(ctx, rec):
    p = _req_parts(ctx, rec)
    if p is None:
        return None
    t = p[1]
    return _encode(t[t.index("?"):], _URL_BAD) if "?" in t else ""


def _version(ctx, rec):
    p = _req_parts(ctx, rec)
    return None if p is None else f"HTTP/{p[2] // 10}.{p[2] % 10}"


def _backend(ctx):
    """The backend the stream reached: where it was sent, else whose rules it ran."""
    s = ctx.stream
    be = getattr(s, "be", None)
    if be is None and getattr(s, "srv", None) is not None:
        be = s.srv.backend
    return be if be is not None else ctx.be


def _unanswered(ctx) -> bool:
    """Closed by a rule before any response and any backend (`http-request reject`)."""
    s = ctx.stream
    return not getattr(s, "status", 0) and getattr(s, "srv", None) is None and \
        _backend(ctx) is None


def _be_name(ctx, rec):
    be = _backend(ctx)
    return be.name if be is not None else (ctx.fe.name if ctx.fe is not None else None)


def _srv_name(ctx, rec):
    srv = getattr(ctx.stream, "srv", None)
    if srv is not None:
        return srv.name
    return rec.applet if rec is not None and rec.applet else "<NOSRV>"


def _srv_addr(ctx, rec):
    srv = getattr(ctx.stream, "srv", None)
    return None if srv is None else srv.host


def _srv_port(ctx, rec):
    srv = getattr(ctx.stream, "srv", None)
    return None if srv is None else srv.port


def _ms(t0, t1) -> int:
    return int(t1 * 1000) - int(t0 * 1000)


def _t_idle(ctx, rec):
    return -1 if rec is None or rec.t_begin is None else _ms(rec.t_accept, rec.t_begin)


def _t_req(ctx, rec):
    """TR: the head arrived at once (see Record), its body when rules waited for it; a
    tarpitted request has none (HAProxy keeps its request time unset), nor one whose
    body did not come in time."""
    if rec is None or rec.t_begin is None or rec.term in ("PT", "cR") or _unanswered(ctx):
        return -1
    return 0 if rec.t_req_end is None else _ms(rec.t_begin, rec.t_req_end)


def _tq(ctx, rec):
    if _t_req(ctx, rec) < 0:
        return -1
    return _ms(rec.t_accept, rec.t_begin)


def _tw(ctx, rec):
    if rec is None or rec.t_queue is None:
        return -1
    return _ms(rec.t_begin if rec.t_req_end is None else rec.t_req_end, rec.t_queue)


def _tc(ctx, rec):
    if rec is None or rec.t_connect is None:
        return -1
    return _ms(rec.t_queue, rec.t_connect)


def _tr(ctx, rec):
    if rec is None or rec.t_resp is None:
        return -1
    return _ms(rec.t_connect, rec.t_resp)


def _end_time(rec):
    return rec.t_end if rec.t_end is not None else time.time()


def _ta(ctx, rec):
    if rec is None:
        return -1
    return _ms(rec.t_begin if rec.t_begin is not None else rec.t_accept, _end_time(rec))


def _tt(ctx, rec):
    return -1 if rec is None else _ms(rec.t_accept, _end_time(rec))


def _th(ctx, rec):
    return 0 if rec is not None else -1


def _status(ctx, rec):
    s = getattr(ctx.stream, "status", 0)
    return s if s else -1


def _bytes_out(ctx, rec):
    s = ctx.stream
    return s.bytes_out + s.adj_out if s is not None else 0


def _bytes_in(ctx, rec):
    s = ctx.stream
    return s.bytes_in + s.adj_in if s is not None else 0


def _caps(rec, response: bool):
    if rec is None:
        return None
    caps = rec.res_caps if response else rec.req_caps
    return caps


def _hdr_braces(response):
    def value(ctx, rec):
        caps = _caps(rec, response)
        if not caps:
            return None
        return "{" + "|".join(_encode(v, _HDR_BAD) if v else "" for v in caps) + "}"
    return value


def _hdr_list(response):
    def value(ctx, rec):
        caps = _caps(rec, response)
        if not caps:
            return None
        return [_encode(v, _HDR_BAD) if v else "-" for v in caps]
    return value


def _term(ctx, rec):
    return rec.term_state(ctx) if rec is not None else "--"


def _term_cookie(ctx, rec):
    return _term(ctx, rec) + "--"


def _conn_counts(which):
    def value(ctx, rec):
        fe = ctx.fe
        if which == "ac":
            return fe.proc.cur_conns if fe is not None else 0
        if which == "fc":
            return fe.stats.scur if fe is not None else 0
        if which == "bc":
            be = _backend(ctx)
            return be.cur if be is not None else 0
        srv = getattr(ctx.stream, "srv", None)
        return srv.cur if srv is not None else 0
    return value


def _date(t: float, local: bool) -> time.struct_time:
    return time.localtime(t) if local else time.gmtime(t)


_CLF_SECOND: dict = {}     # (second, local) -> (date text, zone text): one per second


def _clf_date(t: float, local: bool, ms: bool) -> str:
    sec = int(t)
    got = _CLF_SECOND.get((sec, local))
    if got is None:
        tm = _date(t, local)
        base = f"{tm.tm_mday:02d}/{_MONTHS[tm.tm_mon - 1]}/{tm.tm_year}:{tm.tm_hour:02d}:" \
               f"{tm.tm_min:02d}:{tm.tm_sec:02d}"
        off = tm.tm_gmtoff if local else 0
        sign = "+" if off >= 0 else "-"
        off = abs(off) // 60
        if len(_CLF_SECOND) > 8:
            _CLF_SECOND.clear()
        got = _CLF_SECOND[(sec, local)] = (base, f" {sign}{off // 60:02d}{off % 60:02d}")
    if ms:
        return got[0] + ".%03d" % (int(t * 1000) % 1000)
    return got[0] + got[1]


def _accept_t(rec):
    return rec.t_accept if rec is not None else time.time()


def _req_t(rec):
    if rec is None:
        return time.time()
    return rec.t_begin if rec.t_begin is not None else rec.t_accept


def _uid(ctx, rec):
    if rec is None:
        return None
    return rec.unique_id(ctx)


_HOST: list = []


def _hostname(ctx, rec):
    if not _HOST:
        _HOST.append(socket.gethostname())
    return _HOST[0]


def _frontend_text(ctx, rec):
    fe = ctx.fe
    if fe is None:
        return None
    return fe.name + ("~" if ctx.ssl else "")


def _rt(ctx, rec):
    return rec.rt if rec is not None else 0


def _lc(ctx, rec):
    lg = getattr(ctx.fe, "logging", None)
    return lg.count if lg is not None else 0


# name -> (value(ctx, rec), kind)
VARS: dict[str, tuple[Callable, str]] = {
    "ci": (lambda ctx, rec: ctx.src, "ip"),
    "cp": (lambda ctx, rec: ctx.src_port, "port"),
    "fi": (lambda ctx, rec: ctx.dst, "ip"),
    "fp": (lambda ctx, rec: ctx.dst_port, "port"),
    "ft": (_frontend_text, "text"),
    "f": (lambda ctx, rec: ctx.fe.name if ctx.fe is not None else None, "text"),
    "b": (_be_name, "text"),
    "s": (_srv_name, "text"),
    "si": (_srv_addr, "ip"),
    "sp": (_srv_port, "port"),
    "t": (lambda ctx, rec: _clf_date(_accept_t(rec), True, True), "raw"),
    "T": (lambda ctx, rec: _clf_date(_accept_t(rec), False, False), "raw"),
    "Tl": (lambda ctx, rec: _clf_date(_accept_t(rec), True, False), "raw"),
    "Ts": (lambda ctx, rec: int(_accept_t(rec)), "hex8"),
    "ms": (lambda ctx, rec: "%03d" % (int(_accept_t(rec) * 1000) % 1000), "raw"),
    "tr": (lambda ctx, rec: _clf_date(_req_t(rec), True, True), "raw"),
    "trg": (lambda ctx, rec: _clf_date(_req_t(rec), False, False), "raw"),
    "trl": (lambda ctx, rec: _clf_date(_req_t(rec), True, False), "raw"),
    "TR": (_t_req, "int"),
    "Tw": (_tw, "int"),
    "Tc": (_tc, "int"),
    "Tr": (_tr, "int"),
    "Ta": (_ta, "int"),
    "Tt": (_tt, "int"),
    "Th": (_th, "int"),
    "Ti": (_t_idle, "int"),
    "Tq": (_tq, "int"),
    "ST": (_status, "int"),
    "B": (_bytes_out, "int"),
    "U": (_bytes_in, "int"),
    "CC": (lambda ctx, rec: rec.cc if rec is not None else None, "text"),
    "CS": (lambda ctx, rec: rec.cs if rec is not None else None, "text"),
    "hr": (_hdr_braces(False), "none"),
    "hs": (_hdr_braces(True), "none"),
    "hrl": (_hdr_list(False), "none"),
    "hsl": (_hdr_list(True), "none"),
    "r": (_req_line, "text"),
    "HM": (lambda ctx, rec: (_req_parts(ctx, rec) or (None,))[0], "text"),
    "HP": (_uri_path, "text"),
    "HU": (lambda ctx, rec: None if _req_parts(ctx, rec) is None else
           _encode(_req_parts(ctx, rec)[1], _URL_BAD), "text"),
    "HV": (_version, "text"),
    "HQ": (_query, "text"),
    "ts": (_term, "raw"),
    "tsc": (_term_cookie, "raw"),
    "ac": (_conn_counts("ac"), "int"),
    "fc": (_conn_counts("fc"), "int"),
    "bc": (_conn_counts("bc"), "int"),
    "sc": (_conn_counts("sc"), "int"),
    "rc": (lambda ctx, rec: 0, "int"),
    "sq": (lambda ctx, rec: 0, "int"),
    "bq": (lambda ctx, rec: 0, "int"),
    "ID": (_uid, "text"),
    "pid": (lambda ctx, rec: os.getpid(), "int"),
    "H": (_hostname, "text"),
    "rt": (_rt, "int"),
    "lc": (_lc, "int"),
}


# ---------------------------------------------------------------------------- run time

class Record:
    """What a stream's log line needs beyond the Stream and its Context: times (seconds,
    wall clock), the request line as received, captures, the termination cause."""
    __slots__ = ("ctx", "method", "target", "version", "t_accept", "t_begin", "t_queue",
                 "t_connect", "t_resp", "t_end", "term", "req_caps", "res_caps", "uid", "rt",
                 "fl", "conn", "cc", "cs", "applet", "t_req_end", "level")

    def __init__(self, fl, ctx, conn, t_accept, t_begin):
        self.fl, self.ctx, self.conn = fl, ctx, conn
        self.method = self.target = None
        self.version = 11
        self.t_accept, self.t_begin = t_accept, t_begin
        self.t_queue = self.t_connect = self.t_resp = self.t_end = None
        self.term = None          # set where the stream ends on a proxy/local decision
        self.req_caps = self.res_caps = None
        self.cc = self.cs = None          # captured request / response cookie
        self.applet = None                # "<STATS>": the stats page answered
        self.uid = None
        self.rt = 0
        self.t_req_end = None             # the body the rules waited for was there
        self.level = None                 # set-log-level: a syslog level, or -1 (silent)

    def unique_id(self, ctx):
        if self.uid is None:
            f = self.fl.uid_fmt
            self.uid = "" if f is None else render(f, ctx, self)
        return self.uid or None

    def term_state(self, ctx) -> str:
        """HAProxy's two termination characters: who ended the stream, and in which phase."""
        if self.term is not None:
            return self.term
        s = ctx.stream
        if self.t_resp is not None:
            return "--"
        if _unanswered(ctx):
            return "PR"
        if getattr(s, "srv", None) is not None or _backend(ctx) is not None:
            if self.t_connect is None:
                return "SC"
            status = getattr(s, "status", 0)
            return "sH" if status == 504 else "SH"
        return "--"


class FrontendLog:
    """A frontend's logging at run time (see the module's docstring)."""

    def __init__(self, fe, pl: ProxyLog, options):
        self.fe = fe
        self.count = 0                  # lines logged (%lc)
        self.probes = 0                 # silent connections dontlognull dropped (%rt)
        self.targets = [_Sender.get(t) for t in pl.targets]
        fmt = pl.fmt
        if fmt is None:
            if options.httplog:
                fmt = CLF_FORMAT if options.other.get("httplog-clf") else HTTP_FORMAT
            elif options.tcplog:
                fmt = TCP_FORMAT
            else:
                fmt = "%ci:%cp [%t] %ft %b/%s"  # HAProxy's default (no option log): short
        self.line = compile_format(fmt) if self.targets else None
        self.dontlognull = options.dontlognull
        self.separate_errors = bool(options.other.get("log-separate-errors"))
        self.quiet_normal = bool(options.other.get("dontlog-normal"))
        self.tag = pl.tag or "haproxy"
        self.hostname = pl.hostname
        self.req_caps = pl.req_caps
        self.res_caps = pl.res_caps
        self.cookie_cap = pl.cookie_cap
        # the fast path forwards a response unparsed: not for those whose headers we read
        self.reads_response = bool(pl.res_caps or pl.cookie_cap)
        self.uid_fmt = compile_format(pl.uid_fmt) if pl.uid_fmt else None
        self.uid_header = pl.uid_header.lower() if pl.uid_header else None
        self.pid = os.getpid()
        self.monitor_uri = fe.model.monitor_uri if fe is not None else None

    @staticmethod
    def build(fe, model, proc) -> Optional["FrontendLog"]:
        """A frontend's logging, or None when it needs none (no Record per request)."""
        pl = model.log
        if pl is None or not (pl.targets or pl.req_caps or pl.res_caps or pl.uid_fmt
                              or pl.uid_header):
            return None
        return FrontendLog(fe, pl, model.options)

    # ---- the stream's life
    def begin(self, c, req, ctx, stream):
        """A stream starts (its head is parsed): times, request line, header captures."""
        now = time.time()
        rec = Record(self, ctx, c, c.log_t if c.log_t is not None else now, now)
        rec.method, rec.target, rec.version = req.method, req.target, req.version
        rec.rt = _next_rt(self.fe)
        if self.req_caps:
            rec.req_caps = _capture(self.req_caps, req.headers)
        if self.res_caps:
            rec.res_caps = [None] * len(self.res_caps)
        if self.cookie_cap is not None:
            rec.cc = _request_cookie(self.cookie_cap, req.headers)
        stream.log = rec
        return rec

    def response(self, rec, headers):
        """The server's response head arrived (Tr; response header captures)."""
        rec.t_resp = time.time()
        if self.res_caps:
            caps = _capture(self.res_caps, headers)
            old = rec.res_caps
            if old:
                caps = [c if c is not None else o for c, o in zip(caps, old)]
            rec.res_caps = caps
        if self.cookie_cap is not None:
            rec.cs = _response_cookie(self.cookie_cap, headers)

    def add_unique_id(self, rec, req):
        """`unique-id-header`: the id on the request that goes to the server."""
        if self.uid_header is not None and self.uid_fmt is not None:
            req.add(self.uid_header, rec.unique_id(rec.ctx) or "")

    def end(self, stream):
        rec = stream.log
        now = time.time()
        rec.t_end = now
        rec.conn.log_t = now          # the connection's next stream starts its clock here
        if rec.term is None and stream.srv is None and stream.status and _stats_page(rec):
            # HAProxy's stats applet stands for the server: no waits, a local reply
            rec.term, rec.applet = "LR", "<STATS>"
            rec.t_queue = rec.t_connect = rec.t_resp = rec.t_begin
        if self.line is not None and rec.target != self.monitor_uri:   # (never logged)
            self._send(rec, stream.status)
        return now

    def bad_request(self, c, status: int, partial: bool, timeout: bool):
        """A request the multiplexer refused (400/408) or a connection closed without
        one: HAProxy's `<BADREQ>` line, unless dontlognull and nothing came."""
        if self.dontlognull and not partial:
            self.probes += 1            # no stream in HAProxy: no request id either
            return
        if self.line is None:
            return
        from .sample import Context
        now = time.time()
        s = _NoStream(status)
        ctx = Context(c.src, c.src_port, c.dst, c.dst_port, c.ssl, fe=self.fe, stream=s)
        rec = Record(self, ctx, c, c.log_t if c.log_t is not None else now, None)
        rec.t_end = now
        rec.rt = _next_rt(self.fe)
        rec.term = ("cR" if timeout else "PR") if partial or timeout else "CR"
        s.log = rec
        self._send(rec, status)

    def _send(self, rec, status: int):
        level = LEVEL_INFO
        if self.quiet_normal or self.separate_errors:
            # HAProxy's "error" stream: ended worse than a local reply, or a 5xx
            err = rec.term_state(rec.ctx)[0] not in "-L" or status >= 500
            if not err and self.quiet_normal:
                return                  # option dontlog-normal
            if err and self.separate_errors:
                level = LEVEL_ERR
        if rec.level is not None:       # set-log-level, after dontlog-normal as in HAProxy
            if rec.level < 0:
                return
            level = rec.level
        msg = render(self.line, rec.ctx, rec)
        self.count += 1
        now = time.time()
        for t in self.targets:
            t.send(self, msg, level, now)


class _NoStream:
    """Stands for the stream of a refused request (nothing reached the proxy's rules)."""
    __slots__ = ("status", "srv", "be", "bytes_in", "bytes_out", "adj_in", "adj_out", "log")

    def __init__(self, status):
        self.status = status
        self.srv = self.be = self.log = None
        self.bytes_in = self.bytes_out = self.adj_in = self.adj_out = 0


class _Head:
    __slots__ = ("method", "target")


def _stats_page(rec) -> bool:
    """Whether the stats page (of the backend reached, else the frontend) answered."""
    ctx = rec.ctx
    be = ctx.be
    page = be.model.stats if be is not None else ctx.fe.model.stats
    if page is None:
        return False
    head = _Head()
    head.method, head.target = rec.method, rec.target
    return page.matches(head)


def _capture(caps, headers) -> list:
    out: list = [None] * len(caps)
    for i, (name, size) in enumerate(caps):
        if name is None:
            continue
        for h in headers:
            if h[0] == name:
                out[i] = h[1][:size]        # (the last occurrence wins, as in HAProxy)
    return out


def _request_cookie(cap, headers) -> Optional[str]:
    """`capture cookie`: the first request cookie whose name starts with NAME (HAProxy
    compares NAME's length only), as name=value, cut at len."""
    name, size = cap
    for h in headers:
        if h[0] == "cookie":
            for part in h[1].split(";"):
                part = part.strip(" \t")
                if part.startswith(name) and "=" in part:
                    return part[:size]
    return None


def _response_cookie(cap, headers) -> Optional[str]:
    """The first Set-Cookie starting with NAME, the whole header from there, cut at len."""
    name, size = cap
    for h in headers:
        if h[0] == "set-cookie":
            v = h[1].lstrip(" \t")
            if v.startswith(name):
                return v[:size]
    return None


def run_capture(rule, ctx):
    """`http-request capture <expr> len|id`: the value into its slot."""
    rec = getattr(ctx.stream, "log", None)
    if rec is None:
        return
    v = rule.value(ctx)
    if v is None:
        return
    caps = rec.req_caps if not ctx.response else rec.res_caps
    if caps is None:
        return
    idx, size = rule.index, rule.slot
    if idx < len(caps):
        caps[idx] = (str(int(v)) if isinstance(v, bool) else str(v))[:size]


def _next_rt(fe) -> int:
    """HAProxy's global request counter (%rt): requests every frontend has seen so far."""
    n = -1
    for f in fe.proc.frontends:
        n += f.stats.req_tot
        if f.logging is not None:
            n -= f.logging.probes
    return n


# ---------------------------------------------------------------------------- sending

class _Sender:
    """A log target at run time; sockets shared by every target of the process."""
    _socks: dict = {}

    def __init__(self, t: Target):
        self.t = t
        self.seen = 0               # lines offered (`sample`: their place in the period)

    @classmethod
    def get(cls, t: Target) -> "_Sender":
        return cls(t)

    def _sock(self, family):
        s = self._socks.get(family)
        if s is None:
            s = socket.socket(family, socket.SOCK_DGRAM)
            s.setblocking(False)
            self._socks[family] = s
        return s

    def send(self, fl: FrontendLog, msg: str, level: int, now: float):
        t = self.t
        if level > t.level:
            return
        if t.sample is not None:
            picked, size = t.sample
            n = self.seen % size + 1
            self.seen += 1
            if n not in picked:
                return
        if level < t.minlevel:
            level = t.minlevel
        data = frame(t.fmt, t.facility, level, fl.tag, fl.hostname, fl.pid, now, msg)
        raw = data.encode("latin-1", "replace")[:t.maxlen] + b"\n"
        try:
            if t.kind == "udp":
                fam = socket.AF_INET6 if ":" in t.addr[0] else socket.AF_INET
                self._sock(fam).sendto(raw, t.addr)
            elif t.kind == "unix":
                self._sock(socket.AF_UNIX).sendto(raw, t.addr)
            else:
                os.write(t.addr, raw)
        except OSError:
            pass                        # a log server away loses lines, never requests


def frame(fmt: str, facility: int, level: int, tag: str, hostname: Optional[str], pid: int,
          now: float, msg: str) -> str:
    """The syslog header of each `format`, then the message."""
    if fmt == "raw":
        return msg
    prio = facility * 8 + level
    if fmt in ("local", "rfc3164"):
        host = hostname if hostname is not None else ("localhost" if fmt == "rfc3164" else None)
        sec = int(now)
        if _STAMP[0] != sec:
            tm = time.localtime(now)
            _STAMP[:] = [sec, f"{_MONTHS[tm.tm_mon - 1]} {tm.tm_mday:2d} {tm.tm_hour:02d}:"
                              f"{tm.tm_min:02d}:{tm.tm_sec:02d}"]
        stamp = _STAMP[1]
        return f"<{prio}>{stamp} {host + ' ' if host else ''}{tag}[{pid}]: {msg}"
    if fmt == "rfc5424":
        return f"<{prio}>1 {_iso(now)} {hostname or '-'} {tag} {pid} - - {msg}"
    if fmt == "short":
        return f"<{level}>{msg}"
    if fmt == "priority":
        return f"<{prio}>{msg}"
    if fmt == "timed":
        return f"<{level}>{_iso(now)} {msg}"
    return f"{_iso(now)} {msg}"         # iso


_STAMP: list = [None, ""]      # the last second's rfc3164 time stamp


def _iso(now: float) -> str:
    tm = time.localtime(now)
    off = tm.tm_gmtoff // 60
    sign = "+" if off >= 0 else "-"
    off = abs(off)
    return (f"{tm.tm_year:04d}-{tm.tm_mon:02d}-{tm.tm_mday:02d}T{tm.tm_hour:02d}:"
            f"{tm.tm_min:02d}:{tm.tm_sec:02d}.{int(now * 1_000_000) % 1_000_000:06d}"
            f"{sign}{off // 60:02d}:{off % 60:02d}")


# ---------------------------------------------------------------------------- fetches

def _capture_fetch(response: bool):
    def build(args, cfg):
        if len(args) != 1 or not args[0].isdigit():
            raise SampleError("expects a capture slot number")
        idx = int(args[0])

        def value(ctx):
            rec = getattr(ctx.stream, "log", None)
            caps = None if rec is None else (rec.res_caps if response else rec.req_caps)
            if not caps or idx >= len(caps):
                return None
            return caps[idx]
        return value
    return build


def _unique_id_build(args, cfg):
    if args:
        raise SampleError("fetch method 'unique-id' does not take any argument")

    def value(ctx):
        rec = getattr(ctx.stream, "log", None)
        return None if rec is None else rec.unique_id(ctx)
    return value


FETCHES["capture.req.hdr"] = FetchDef("capture.req.hdr", "str", _capture_fetch(False), "str")
FETCHES["capture.res.hdr"] = FetchDef("capture.res.hdr", "str", _capture_fetch(True), "str")
FETCHES["unique-id"] = FetchDef("unique-id", "str", _unique_id_build, "str")
