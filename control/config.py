"""The `shield <name>` section of an HAProxy-style configuration.

One file can hold the proxy's sections and the shield's: this parser reads only
`shield` sections and skips every HAProxy section by name (the proxy does the
reverse). The grammar is documented in docs/shield.md; every error names the file,
the line and the keyword, like HAProxy's own parser.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from edgestick.cfgsyntax import ConfigError, Line, parse_size, parse_time_ms, read_file, read_lines

# Sections owned by the proxy (or by HAProxy features edgestick does not run): skipped.
FOREIGN_SECTIONS = frozenset({
    "global", "defaults", "frontend", "backend", "listen", "peers", "userlist",
    "resolvers", "cache", "program", "http-errors", "ring", "mailers", "log-forward",
    "fcgi-app", "traces", "crt-store", "acme",
})

ATTACH_MODES = ("auto", "native", "generic")
ENFORCE_MODES = ("enforce", "dry-run")
MALFORMED_ACTIONS = ("pass", "drop")
LEVELS = ("user", "operator", "admin")

# What the XDP program counts per source; each is a rate over the period the
# `table ... store` line gives it (HAProxy's two-period rate, events per period).
METRICS = ("conn_rate", "pkt_rate", "byte_rate")
DEFAULT_PERIOD_MS = 1000

# Stick-table data types an `escalate` condition may test in the proxy's table.
PROXY_COUNTERS = frozenset({
    "gpc0", "gpc1", "gpc0_rate", "gpc1_rate", "conn_cnt", "conn_cur", "conn_rate",
    "sess_cnt", "sess_rate", "http_req_cnt", "http_req_rate", "http_err_cnt",
    "http_err_rate", "http_fail_cnt", "http_fail_rate", "bytes_in_cnt", "bytes_in_rate",
    "bytes_out_cnt", "bytes_out_rate", "gpt0",
})

THRESHOLD_MAX = 2**32 - 2          # limits are u32 in the program; all-ones is reserved
DEFAULT_TABLE_SIZE = 65536
DEFAULT_TABLE_EXPIRE_MS = 60_000
DEFAULT_IPV6_PREFIX = 64
DEFAULT_PIN_ROOT = "/sys/fs/bpf/edgestick"
DEFAULT_SOCKET_MODE = 0o600
DEFAULT_METRICS_ADDR = "127.0.0.1"

_NAME = re.compile(r"^[A-Za-z0-9_.:-]+$")
_IFNAME = re.compile(r"^[^\s/]{1,15}$")
_STORE_ITEM = re.compile(r"^([a-z_]+)\(([^()]*)\)$")


@dataclass(frozen=True)
class Interface:
    name: str
    mode: str = "auto"              # auto | native | generic


@dataclass(frozen=True)
class Condition:
    """`{ <metric> gt <value> }`: the only comparison the program makes (an `escalate`
    condition may use any operator of the runtime API's `show table` filters)."""
    metric: str
    value: int
    op: str = "gt"

    def __str__(self) -> str:
        return f"{{ {self.metric} {self.op} {self.value} }}"


@dataclass(frozen=True)
class Ban:
    ttl_ms: int
    condition: Condition


@dataclass(frozen=True)
class Escalate:
    table: str
    ttl_ms: int
    condition: Condition


@dataclass(frozen=True)
class StatsSocket:
    path: str
    mode: int = DEFAULT_SOCKET_MODE
    level: str = "operator"         # HAProxy's default level


@dataclass
class ShieldConfig:
    name: str
    file: str = "<string>"
    line: int = 0
    interfaces: list[Interface] = field(default_factory=list)
    table_size: int = DEFAULT_TABLE_SIZE
    table_expire_ms: int = DEFAULT_TABLE_EXPIRE_MS
    periods_ms: dict[str, int] = field(default_factory=lambda: dict.fromkeys(METRICS, DEFAULT_PERIOD_MS))
    ipv6_prefix: int = DEFAULT_IPV6_PREFIX
    allow: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = field(default_factory=list)
    deny: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = field(default_factory=list)
    drops: dict[str, int] = field(default_factory=dict)      # metric -> limit
    flood_guard: int | None = None                           # new sources per period, per CPU
    bans: dict[str, Ban] = field(default_factory=dict)       # metric -> ban rule
    mode: str = "enforce"
    malformed: str = "pass"
    pin_dir: str = ""
    stats_socket: StatsSocket | None = None
    metrics_bind: tuple[str, int] | None = None
    mirrors: list[str] = field(default_factory=list)
    escalations: list[Escalate] = field(default_factory=list)
    # mirror/escalation (control/bridge.py, docs/bridge.md): per mirrored table, proxy data
    # type -> XDP counter (empty: the native xdp_* types); the proxy's runtime socket.
    mirror_store: dict[str, dict[str, str]] = field(default_factory=dict)
    proxy_socket: str | None = None
    # fleet bans (control/bridge.py, docs/bridge.md): the peers-replicated proxy table
    # every local ban is published into and learned from
    share_bans: str | None = None

    def __post_init__(self) -> None:
        if not self.pin_dir:
            self.pin_dir = f"{DEFAULT_PIN_ROOT}/{self.name}"

    @property
    def period_ms(self) -> int:
        """The one rate period of the table (every stored rate shares it)."""
        return next(iter(self.periods_ms.values()), DEFAULT_PERIOD_MS)

    @property
    def ban_ttl_ms(self) -> int | None:
        """The one duration of automatic bans (every `ban` rule shares it)."""
        return next((b.ttl_ms for b in self.bans.values()), None)


# --- value parsers: each raises ConfigError through line.error ---------------------------

def parse_network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """An address or CIDR; host bits must be zero (a typo there usually means a wrong
    prefix, so it is refused rather than silently masked). Raises ValueError."""
    try:
        return ipaddress.ip_network(text, strict=True)
    except ValueError as e:
        if "has host bits set" in str(e):
            net = ipaddress.ip_network(text, strict=False)
            raise ValueError(f"'{text}' has host bits set (did you mean {net}?)") from None
        raise ValueError(f"'{text}' is not an IPv4/IPv6 address or CIDR") from None


def parse_threshold(text: str) -> int:
    """A non-negative integer limit that fits the program's u32. Raises ValueError."""
    if not text.isdigit():
        raise ValueError(f"'{text}' is not a non-negative integer")
    value = int(text)
    if value > THRESHOLD_MAX:
        raise ValueError(f"'{text}' is too large (max {THRESHOLD_MAX})")
    return value


def _time(line: Line, text: str, what: str, allow_zero: bool = False) -> int:
    try:
        ms = parse_time_ms(text)
    except ValueError as e:
        raise line.error(f"{what}: {e}") from None
    if ms == 0 and not allow_zero:
        raise line.error(f"{what} must be greater than zero")
    return ms


def _condition(line: Line, words: list[str], metrics: tuple[str, ...] | frozenset[str],
               table: ShieldConfig | None, ops: tuple[str, ...] = ("gt",)) -> Condition:
    """Parse `if { <metric> gt <value> }` from the words after the action."""
    usage = "expects 'if { <metric> gt <value> }'"
    if not words or words[0] != "if":
        if words and words[0] == "unless":
            raise line.error("'unless' is not supported, " + usage)
        raise line.error(usage)
    body = words[1:]
    if len(body) < 2 or body[0] != "{" or body[-1] != "}":
        raise line.error(f"{usage} (braces need spaces around them)")
    inner = body[1:-1]
    if len(inner) != 3:
        raise line.error(usage)
    metric, op, value = inner
    if metric not in metrics:
        raise line.error(f"unknown metric '{metric}' (expects one of {', '.join(sorted(metrics))})")
    if op not in ops:
        raise line.error(f"unsupported operator '{op}' (only 'gt')" if ops == ("gt",) else
                         f"unsupported operator '{op}' (expects one of {', '.join(ops)})")
    try:
        limit = parse_threshold(value)
    except ValueError as e:
        raise line.error(f"threshold {e}") from None
    if table is not None and metric not in table.periods_ms:
        raise line.error(f"'{metric}' is not stored in the table (add it to 'table ... store')")
    return Condition(metric, limit, op)


# --- keyword handlers -------------------------------------------------------------------

def _kw_interface(cfg: ShieldConfig, line: Line, args: list[str]) -> None:
    if not args:
        raise line.error("expects an interface name")
    name, rest = args[0], args[1:]
    if not _IFNAME.match(name):
        raise line.error(f"invalid interface name '{name}'")
    mode = "auto"
    if rest:
        if len(rest) != 2 or rest[0] != "mode":
            raise line.error(f"unexpected '{' '.join(rest)}' (expects 'interface <name> [mode native|generic|auto]')")
        mode = rest[1]
        if mode not in ATTACH_MODES:
            raise line.error(f"unknown mode '{mode}' (expects native, generic or auto)")
    if any(i.name == name for i in cfg.interfaces):
        raise line.error(f"interface '{name}' is listed twice")
    cfg.interfaces.append(Interface(name, mode))


def _kw_table(cfg: ShieldConfig, line: Line, args: list[str]) -> None:
    seen: set[str] = set()
    periods: dict[str, int] = {}
    i = 0
    while i < len(args):
        word = args[i]
        if word not in ("type", "size", "expire", "store"):
            raise line.error(f"unknown argument '{word}' (expects type, size, expire or store)")
        if i + 1 >= len(args):
            raise line.error(f"'{word}' expects a value")
        value = args[i + 1]
        if word in seen and word != "store":
            raise line.error(f"'{word}' given twice")
        seen.add(word)
        if word == "type":
            if value != "ip":
                raise line.error(f"unsupported type '{value}' (the shield keys sources by 'ip': "
                                 "IPv4 per address, IPv6 per 'table-ipv6-prefix')")
        elif word == "size":
            try:
                size = parse_size(value)
            except ValueError as e:
                raise line.error(str(e)) from None
            if size <= 0:
                raise line.error("size must be greater than zero")
            cfg.table_size = size
        elif word == "expire":
            cfg.table_expire_ms = _time(line, value, "expire")
        else:
            for item in value.split(","):
                m = _STORE_ITEM.match(item)
                if not m:
                    name = item.split("(")[0]
                    if name in METRICS:
                        raise line.error(f"'{name}' expects a period, e.g. '{name}(1s)'")
                    raise line.error(f"unknown data type '{item}' (expects {', '.join(f'{x}(<period>)' for x in METRICS)})")
                name, period = m.groups()
                if name not in METRICS:
                    raise line.error(f"unknown data type '{name}' (expects {', '.join(METRICS)})")
                if name in periods:
                    raise line.error(f"'{name}' is stored twice")
                periods[name] = _time(line, period, f"period of '{name}'")
                # The program rotates all of a source's rates together: one period.
                first = next(iter(periods))
                if periods[name] != periods[first]:
                    raise line.error(f"all rates share one period: '{item}' differs from "
                                     f"'{first}({periods[first]}ms)'")
        i += 2
    if "type" not in seen:
        raise line.error("missing type (expects 'type ip')")
    if "size" not in seen:
        raise line.error("missing size")
    if periods:
        cfg.periods_ms = periods


def _kw_ipv6_prefix(cfg: ShieldConfig, line: Line, args: list[str]) -> None:
    if len(args) != 1 or not args[0].isdigit() or not 1 <= int(args[0]) <= 128:
        raise line.error("expects a prefix length from 1 to 128")
    cfg.ipv6_prefix = int(args[0])


def _list_kw(attr: str):
    def handler(cfg: ShieldConfig, line: Line, args: list[str]) -> None:
        if not args:
            raise line.error("expects one or more addresses or CIDRs")
        for word in args:
            try:
                net = parse_network(word)
            except ValueError as e:
                raise line.error(str(e)) from None
            entries = getattr(cfg, attr)
            if net in entries:
                raise line.error(f"'{net}' is listed twice")
            other = "deny" if attr == "allow" else "allow"
            if net in getattr(cfg, other):
                raise line.error(f"'{net}' is in both the allow and the deny list")
            entries.append(net)
    return handler


def _kw_drop(cfg: ShieldConfig, line: Line, args: list[str]) -> None:
    cond = _condition(line, args, METRICS, cfg)
    if cond.metric in cfg.drops:
        raise line.error(f"a 'drop' rule on '{cond.metric}' is already set")
    cfg.drops[cond.metric] = cond.value


def _kw_ban(cfg: ShieldConfig, line: Line, args: list[str]) -> None:
    if not args:
        raise line.error("expects 'ban <ttl> if { <metric> gt <value> }'")
    ttl = _time(line, args[0], "ban duration")
    cond = _condition(line, args[1:], METRICS, cfg)
    if cond.metric in cfg.bans:
        raise line.error(f"a 'ban' rule on '{cond.metric}' is already set")
    # The program applies one ban duration, whichever limit was crossed.
    other = next(iter(cfg.bans.values()), None)
    if other is not None and other.ttl_ms != ttl:
        raise line.error(f"every 'ban' rule shares one duration: {args[0]} differs from "
                         f"{other.ttl_ms}ms of the 'ban' on '{other.condition.metric}'")
    cfg.bans[cond.metric] = Ban(ttl, cond)


def _kw_flood_guard(cfg: ShieldConfig, line: Line, args: list[str]) -> None:
    if len(args) != 1:
        raise line.error("expects 'flood-guard <new sources per period>'")
    try:
        cfg.flood_guard = parse_threshold(args[0])
    except ValueError as e:
        raise line.error(f"limit {e}") from None


def _kw_choice(attr: str, choices: tuple[str, ...]):
    def handler(cfg: ShieldConfig, line: Line, args: list[str]) -> None:
        if len(args) != 1 or args[0] not in choices:
            raise line.error(f"expects {' or '.join(choices)}")
        setattr(cfg, attr, args[0])
    return handler


def _kw_pin_dir(cfg: ShieldConfig, line: Line, args: list[str]) -> None:
    if len(args) != 1 or not args[0].startswith("/"):
        raise line.error("expects one absolute path (a folder on bpffs)")
    cfg.pin_dir = args[0].rstrip("/") or "/"


def _kw_stats(cfg: ShieldConfig, line: Line, args: list[str]) -> None:
    if not args or args[0] != "socket":
        raise line.error("expects 'stats socket <path> [mode <octal>] [level user|operator|admin]'")
    if len(args) < 2:
        raise line.error("'stats socket' expects a path")
    if cfg.stats_socket is not None:
        raise line.error("'stats socket' is set twice")
    path, mode, level = args[1], DEFAULT_SOCKET_MODE, "operator"
    rest = args[2:]
    while rest:
        if len(rest) < 2:
            raise line.error(f"'{rest[0]}' expects a value")
        key, value, rest = rest[0], rest[1], rest[2:]
        if key == "mode":
            if not re.match(r"^[0-7]{1,4}$", value):
                raise line.error(f"invalid mode '{value}' (expects octal, e.g. 600)")
            mode = int(value, 8)
        elif key == "level":
            if value not in LEVELS:
                raise line.error(f"unknown level '{value}' (expects user, operator or admin)")
            level = value
        else:
            raise line.error(f"unknown socket option '{key}' (expects mode or level)")
    cfg.stats_socket = StatsSocket(path, mode, level)


def parse_bind(text: str) -> tuple[str, int]:
    """`[ADDR]:PORT`, `[v6]:PORT` or `*:PORT`; no address means loopback. Raises ValueError."""
    addr, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"invalid address '{text}' (expects [<address>]:<port>)")
    if addr.startswith("[") and addr.endswith("]"):
        addr = addr[1:-1]
    if addr == "":
        addr = DEFAULT_METRICS_ADDR
    elif addr == "*":
        addr = "0.0.0.0"
    else:
        try:
            ipaddress.ip_address(addr)
        except ValueError:
            raise ValueError(f"invalid address '{addr}' in '{text}' (expects an IP address)") from None
    return addr, int(port)


def _kw_metrics(cfg: ShieldConfig, line: Line, args: list[str]) -> None:
    if len(args) != 2 or args[0] != "bind":
        raise line.error("expects 'metrics bind [<address>]:<port>'")
    if cfg.metrics_bind is not None:
        raise line.error("'metrics bind' is set twice")
    try:
        cfg.metrics_bind = parse_bind(args[1])
    except ValueError as e:
        raise line.error(str(e)) from None


def _table_name(line: Line, name: str) -> str:
    if not _NAME.match(name):
        raise line.error(f"invalid table name '{name}'")
    return name


# What a `mirror` line may store: the XDP counters, and the proxy data types that receive
# them. edgestick stores xdp_* natively; a real HAProxy 2.6 only takes them in the tag and
# counter slots its CLI can write (`set table ... data.gpt1` is refused there: arrays are
# written at element 0 only, hence gpt/gpc/gpc_rate mean element 0).
# `escalate` conditions are `show table` filters (control/bridge.py asks the proxy).
SHOW_TABLE_OPS = ("eq", "ne", "le", "ge", "lt", "gt")
MIRROR_COUNTERS = ("xdp_conn_rate", "xdp_pkt_rate", "xdp_byte_rate", "xdp_drops")
MIRROR_SLOTS = ("gpt0", "gpc0", "gpc1", "gpc0_rate", "gpc1_rate", "gpt", "gpc", "gpc_rate")


def _kw_mirror(cfg: ShieldConfig, line: Line, args: list[str]) -> None:
    if len(args) not in (1, 3) or (len(args) == 3 and args[1] != "store"):
        raise line.error("expects 'mirror <table>'" if not args else
                         "expects 'mirror <table> [store <xdp counter>|<slot>=<xdp counter>,...]'")
    name = _table_name(line, args[0])
    if name in cfg.mirrors:
        raise line.error(f"table '{name}' is mirrored twice")
    store: dict[str, str] = {}
    for item in args[2].split(",") if len(args) == 3 else ():
        slot, sep, counter = item.partition("=")
        if not sep:
            slot = counter = item
        if counter not in MIRROR_COUNTERS:
            raise line.error(f"unknown XDP counter '{counter}' (expects one of {', '.join(MIRROR_COUNTERS)})")
        if sep and slot not in MIRROR_SLOTS:
            raise line.error(f"cannot store into '{slot}' (expects one of {', '.join(MIRROR_SLOTS)}, "
                             "or the counter's own name on edgestick)")
        if slot in store:
            raise line.error(f"'{slot}' is stored twice")
        store[slot] = counter
    cfg.mirrors.append(name)
    if store:
        cfg.mirror_store[name] = store


def _kw_proxy_socket(cfg: ShieldConfig, line: Line, args: list[str]) -> None:
    from edgestick.control.runtime_client import parse_address
    if len(args) != 1:
        raise line.error("expects 'proxy-socket <path>|ipv4@<host>:<port>'")
    if cfg.proxy_socket is not None:
        raise line.error("'proxy-socket' is set twice")
    try:
        parse_address(args[0])
    except ValueError as e:
        raise line.error(str(e)) from None
    cfg.proxy_socket = args[0]


def _kw_escalate(cfg: ShieldConfig, line: Line, args: list[str]) -> None:
    usage = "expects 'escalate <table> ban <ttl> if { <data type> <op> <value> }'"
    if len(args) < 3 or args[1] != "ban":
        raise line.error(usage)
    table = _table_name(line, args[0])
    ttl = _time(line, args[2], "ban duration")
    cond = _condition(line, args[3:], PROXY_COUNTERS, None, ops=SHOW_TABLE_OPS)
    cfg.escalations.append(Escalate(table, ttl, cond))


_SHARED_TABLE = re.compile(r"^[A-Za-z0-9_.:-]+(/[A-Za-z0-9_.:-]+)?$")


def _kw_share_bans(cfg: ShieldConfig, line: Line, args: list[str]) -> None:
    # a `table` line of a peers section is addressed as <section>/<table>
    if len(args) != 1:
        raise line.error("expects 'share-bans <table>' (a table replicated by a peers section)")
    if not _SHARED_TABLE.match(args[0]):
        raise line.error(f"invalid table name '{args[0]}'")
    if cfg.share_bans is not None:
        raise line.error("'share-bans' is set twice")
    cfg.share_bans = args[0]


KEYWORDS = {
    "interface": _kw_interface,
    "table": _kw_table,
    "table-ipv6-prefix": _kw_ipv6_prefix,
    "allow": _list_kw("allow"),
    "deny": _list_kw("deny"),
    "drop": _kw_drop,
    "ban": _kw_ban,
    "flood-guard": _kw_flood_guard,
    "mode": _kw_choice("mode", ENFORCE_MODES),
    "malformed": _kw_choice("malformed", MALFORMED_ACTIONS),
    "pin-dir": _kw_pin_dir,
    "stats": _kw_stats,
    "metrics": _kw_metrics,
    "mirror": _kw_mirror,
    "proxy-socket": _kw_proxy_socket,
    "escalate": _kw_escalate,
    "share-bans": _kw_share_bans,
}

# Keywords that depend on the table's stored metrics are applied after the `table` line,
# wherever it appears in the section.
_AFTER_TABLE = ("drop", "ban")


def _finish(cfg: ShieldConfig, header: Line, lines: list[Line]) -> None:
    tables = [ln for ln in lines if ln.keyword == "table"]
    if len(tables) > 1:
        raise tables[1].error("the shield has one table: 'table' is set twice")
    # drop/ban test metrics the table stores, wherever the table line appears.
    ordered = tables + [ln for ln in lines if ln.keyword not in _AFTER_TABLE + ("table",)] \
        + [ln for ln in lines if ln.keyword in _AFTER_TABLE]
    for line in ordered:
        KEYWORDS[line.keyword](cfg, line, list(line.words[1:]))
    if not cfg.interfaces:
        raise header.error(f"shield '{cfg.name}' lists no 'interface'")
    for line in lines:
        if line.keyword != "ban":
            continue
        metric = line.words[line.words.index("{") + 1]
        ban, limit = cfg.bans[metric], cfg.drops.get(metric)
        if limit is not None and ban.condition.value <= limit:
            raise line.error(f"ban threshold {ban.condition.value} on '{metric}' must be above "
                             f"the drop threshold {limit} (a ban is the harsher step)")


def parse_lines(lines) -> list[ShieldConfig]:
    """All `shield` sections of a configuration, in file order."""
    shields: list[ShieldConfig] = []
    current: tuple[ShieldConfig, Line, list[Line]] | None = None
    in_foreign = False
    for line in lines:
        kw = line.keyword
        if kw == "shield" or kw in FOREIGN_SECTIONS:
            if current:
                _finish(*current)
                current = None
            in_foreign = kw != "shield"
            if kw == "shield":
                if len(line.words) != 2:
                    raise line.error("expects 'shield <name>'")
                name = line.words[1]
                if not _NAME.match(name):
                    raise line.error(f"invalid shield name '{name}'")
                if any(s.name == name for s in shields):
                    raise line.error(f"shield '{name}' is declared twice")
                cfg = ShieldConfig(name, file=line.file, line=line.lineno)
                shields.append(cfg)
                current = (cfg, line, [])
            continue
        if in_foreign:
            continue
        if current is None:
            raise line.error("keyword outside of any section")
        if kw not in KEYWORDS:
            raise line.error(f"unknown keyword in shield '{current[0].name}' "
                             f"(expects one of: {', '.join(KEYWORDS)})")
        current[2].append(line)
    if current:
        _finish(*current)
    return shields


def parse_text(text: str, file: str = "<string>") -> list[ShieldConfig]:
    return parse_lines(read_lines(text, file))


def load(paths: str | list[str], name: str | None = None) -> ShieldConfig:
    """The shield section to run from one or more files (read in order, like HAProxy's
    repeated -f): the one named, or the only one.

    Whole-file errors carry the path in the message: ConfigError formats `file:line`
    only when there is a line."""
    paths = [paths] if isinstance(paths, str) else list(paths)
    where = ", ".join(paths)
    shields = parse_lines([line for path in paths for line in read_file(path)])
    if name is not None:
        for s in shields:
            if s.name == name:
                return s
        raise ConfigError(f"{where}: no shield section named '{name}'")
    if not shields:
        raise ConfigError(f"{where}: no shield section")
    if len(shields) > 1:
        raise ConfigError(f"{where}: {len(shields)} shield sections "
                          f"({', '.join(s.name for s in shields)}): choose one with --name")
    return shields[0]
