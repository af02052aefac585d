"""HAProxy 2.6 configuration parser for the proxy: lines from `edgestick.cfgsyntax` to
`proxy/model.py` objects, with HAProxy's validation.

Sections owned here: global, defaults, frontend, backend, listen, peers. `shield` sections
belong to the control plane: their lines are kept in `Config.foreign_sections`, unparsed.
Errors raise `ConfigError` (`file:line: 'keyword': message`); things HAProxy only warns
about are collected as warnings in the same format.

Entry point: `load_config(paths) -> (Config, warnings)`.
"""
from __future__ import annotations

import copy
import dataclasses
import os
import re
import socket
import ssl
from typing import Callable, Optional, Sequence

from edgestick.cfgsyntax import ConfigError, Line, read_file

from . import compression, hashes, http1, outbound, tcp_check
from . import server_health
from . import model as m
from . import auth, stats_page
from . import request_body, stream_actions
from . import log as log_mod
from .acl import (Acl, AclError, compile_condition, compile_regex, parse_acl_expr, parse_net,
                  split_condition)
from .maps import REGISTRY
from . import server_state
from .sample import (FETCH_NEEDS, REQUEST_HEADER_FETCHES, RESPONSE_FETCHES, Refs, SampleError,
                     compile_expr)
from .stick_table import parse_table_args, parse_time_err
from . import vars as var_mod
from . import cache as cache_mod

SECTIONS = ("global", "defaults", "frontend", "backend", "listen", "peers")
HAPROXY_VERSION = (2, 6, 12)       # the version edgestick behaves as (.if version_* tests)
FOREIGN_SECTIONS = ("shield",)            # parsed by control/
# HAProxy sections edgestick does not implement: a clear error rather than "unknown"
UNSUPPORTED_SECTIONS = ("program", "ring",
                        "mailers", "fcgi-app", "log-forward", "dynamic-update", "traces")

# statuses HAProxy has a built-in error page for (deny/tarpit/return without payload)
DEFAULT_ERROR_STATUSES = frozenset({200, 400, 401, 403, 404, 405, 407, 408, 410, 413, 421,
                                    422, 425, 429, 500, 501, 502, 503, 504})

# fetches usable before any HTTP data exists (tcp-request connection/session)
_L4_FETCHES = ("src", "src_port", "dst", "dst_port", "always_true", "always_false", "ssl_fc")


def load_config(paths: Sequence[str] | str,
                localpeer: Optional[str] = None) -> tuple[m.Config, list[str]]:
    """Parse and check one or several files (`-f a -f b`); raise ConfigError on the
    first error. Returns the configuration and the list of warnings. `localpeer` is the
    `-L` command-line name (it wins over `localpeer` in global and the host name)."""
    if isinstance(paths, str):
        paths = [paths]
    with REGISTRY.loading():          # map files read again, kept if all goes well
        parser = Parser(localpeer)
        for path in paths:
            if os.path.isdir(path):
                for name in sorted(os.listdir(path)):
                    if name.endswith(".cfg"):
                        parser.feed(read_file(os.path.join(path, name)))
            else:
                parser.feed(read_file(path))
        parser.finish()
    parser.cfg.files = list(paths)
    parser.cfg.warnings = parser.warnings
    return parser.cfg, parser.warnings


def load_config_text(text: str, file: str = "<string>",
                     localpeer: Optional[str] = None) -> tuple[m.Config, list[str]]:
    """Same as load_config for a configuration held in memory (tests, reload from a string)."""
    from edgestick.cfgsyntax import read_lines
    with REGISTRY.loading():
        parser = Parser(localpeer)
        parser.feed(list(read_lines(text, file)))
        parser.finish()
    parser.cfg.files = [file]
    parser.cfg.warnings = parser.warnings
    return parser.cfg, parser.warnings


def _where(line: Line) -> m.Where:
    return m.Where(line.file, line.lineno)


def _int(line: Line, text: str, what: str, lo: int = 0, hi: int = 2**63 - 1) -> int:
    try:
        v = int(text)
    except ValueError:
        raise line.error(f"{what} expects an integer, got '{text}'") from None
    if not lo <= v <= hi:
        raise line.error(f"{what} must be between {lo} and {hi} (got {v})")
    return v


def _time(line: Line, text: str, what: str, warnings: Optional[list] = None) -> int:
    """HAProxy's time parsing (2.6): an unknown unit is an error, characters after a valid
    unit are ignored with a warning ('1m30s' reads 1m, as HAProxy does)."""
    value, err, warning = parse_time_err(text)
    if err == "over":
        raise line.error(f"{what}: timer overflow in argument '{text}' (maximum value is "
                         "2147483647 ms, ~24.8 days)")
    if err is not None:
        raise line.error(f"{what}: unexpected character '{err}' in '{text}' (expects "
                         "<number>[us|ms|s|m|h|d])")
    if warning and warnings is not None:
        warnings.append(str(line.error(warning)))
    return value


def read_errorfile(line: Line, path: str, keyword: Optional[str] = None) -> http1.ErrorPage:
    """An errorfile: a whole HTTP response (status line, headers, body), bytes as they are."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError:
        raise line.error(f"errorfile : error opening file '{path}'.", keyword) from None
    try:
        return http1.ErrorPage.parse(raw)
    except http1.BadMessage:
        raise line.error(f"'{path}': unable to parse headers (not an HTTP response)",
                         keyword) from None


def _one_arg(line: Line) -> None:
    if len(line.words) > 2:
        raise line.error(f"'{line.keyword}' cannot handle unexpected argument "
                         f"'{line.words[2]}'.")


def _arg(line: Line, i: int, what: str) -> str:
    if i >= len(line.words):
        raise line.error(f"missing {what}")
    return line.words[i]


# ---------------------------------------------------------------------------- addresses

def parse_address(text: str, line: Line, kw: str, *, need_port: bool, allow_range: bool = False,
                  resolve: bool = False) -> tuple[str, Optional[int], Optional[int], str]:
    """`[ipv4@|ipv6@|unix@]host[:port[-last]]` -> (host, port, last_port, family).

    host "" means any address; `*` is the IPv4 wildcard, `::` the IPv6 one."""
    family = None
    if text.startswith("/") or text.startswith("unix@"):
        return text.removeprefix("unix@"), None, None, "unix"
    for prefix, fam in (("ipv4@", "ipv4"), ("ipv6@", "ipv6")):
        if text.startswith(prefix):
            family, text = fam, text[len(prefix):]
    if "@" in text:
        raise line.error(f"address family '{text.split('@')[0]}@' is not supported", kw)
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise line.error(f"invalid address '{text}'", kw)
        host, rest = text[1:end], text[end + 1:]
        if rest and not rest.startswith(":"):
            raise line.error(f"invalid address '{text}'", kw)
        port_text = rest[1:] if rest else ""
        has_port = bool(rest)
    elif ":" in text:
        host, _, port_text = text.rpartition(":")
        has_port = True
    else:
        host, port_text, has_port = text, "", False
    if not has_port:
        if need_port:
            raise line.error(f"missing port specification in '{text}'", kw)
        port = last = None
    else:
        first, _, last_text = port_text.partition("-")
        if not first.isdigit() or not 0 < int(first) < 65536:
            if not (not need_port and first == ""):
                raise line.error(f"invalid port '{port_text}'", kw)
        port = int(first) if first else None
        last = None
        if last_text:
            if not allow_range:
                raise line.error(f"port ranges are not allowed here ('{port_text}')", kw)
            if not last_text.isdigit() or not port <= int(last_text) < 65536:
                raise line.error(f"invalid port range '{port_text}'", kw)
            last = int(last_text) if int(last_text) != port else None
    if host in ("", "*"):
        fam = family or "ipv4"
        return ("::" if fam == "ipv6" else "0.0.0.0"), port, last, fam
    for fam_name, af in (("ipv4", socket.AF_INET), ("ipv6", socket.AF_INET6)):
        try:
            socket.inet_pton(af, host)
        except OSError:
            continue
        if family and family != fam_name:
            raise line.error(f"'{host}' is not an {family.upper()} address", kw)
        return host, port, last, fam_name
    if not resolve:
        raise line.error(f"invalid address '{host}'", kw)
    try:
        infos = socket.getaddrinfo(host, None, socket.AF_INET6 if family == "ipv6" else
                                   (socket.AF_INET if family == "ipv4" else socket.AF_UNSPEC),
                                   socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise line.error(f"could not resolve address '{host}'", kw) from None
    af, _, _, _, sa = infos[0]
    return sa[0], port, last, ("ipv6" if af == socket.AF_INET6 else "ipv4")


# ---------------------------------------------------------------------------- parser

class Parser:
    def __init__(self, localpeer: Optional[str] = None):
        self.localpeer = localpeer
        self.cfg = m.Config()
        self.cfg.vars = var_mod.Registry()
        self.warnings: list[str] = []
        self.section: Optional[str] = None
        self.proxy: Optional[m.Proxy] = None
        self.peers: Optional[m.PeersSection] = None
        self.foreign: Optional[list] = None
        self.last_defaults: m.Proxy = m.Proxy("", "defaults")
        self.proxy_where: dict[tuple[str, str], m.Where] = {}
        self.default_server: dict[int, m.Server] = {}    # id(proxy) -> template
        # (proxy, where, table name, what uses it, line keyword), checked at the end
        self.table_refs: list[tuple[m.Proxy, m.Where, str, str, str]] = []
        self.defaults_users: dict[int, set[str]] = {}    # id(defaults) -> proxy kinds
        self.defaults_usage: dict[int, set[str]] = {}    # id(defaults) -> explicit/implicit
        self.check_steps: dict[int, list[str]] = {}      # id(proxy) -> http-check steps
        self.defaults_where: dict[str, list[m.Where]] = {}   # named defaults declarations
        auth.start()
        self.users = auth.SectionParser(self.cfg.userlists, self.warnings, _where)
        self.cache_sections = cache_mod.SectionParser({}, self.warn)
        self.http_errors_name: Optional[str] = None
        self.reply_sections: list = []       # replies naming an http-errors section

    # ------------------------------------------------------------------ helpers
    def warn(self, line: Line, message: str, keyword: Optional[str] = None):
        self.warnings.append(str(line.error(message, keyword)))

    def feed(self, lines: list[Line]):
        # a new file closes the section in progress (HAProxy: each file starts outside)
        self.section = None
        self.proxy = self.peers = self.foreign = None
        blocks: list[tuple[Line, bool, bool]] = []      # .if nesting: (line, active, taken)
        for line in lines:
            kw = line.keyword
            if kw.startswith("."):
                self.directive(line, blocks)
                continue
            if blocks and not blocks[-1][1]:
                continue                                 # inside a false .if branch
            if kw in SECTIONS or kw in FOREIGN_SECTIONS:
                self.open_section(line)
            elif kw == "userlist":
                self.open_section(line)
                self.users.open(line)
            elif kw == "http-errors":
                self.open_section(line)
                self.open_http_errors(line)
            elif kw == "resolvers":
                self.open_section(line)
                self.open_resolvers(line)
            elif kw == "cache":
                self.open_section(line)
                self.cache_sections.open(line)
            elif kw in UNSUPPORTED_SECTIONS:
                raise line.error(f"'{kw}' sections are not supported by edgestick")
            elif self.section is None:
                raise line.error(f"unknown keyword '{kw}' out of section")
            elif self.section == "global":
                self.parse_global(line)
            elif self.section == "peers":
                self.parse_peers(line)
            elif self.section == "userlist":
                self.users.line(line)
            elif self.section == "http-errors":
                self.http_errors_line(line)
            elif self.section == "resolvers":
                self.resolvers_line(line)
            elif self.section == "cache":
                self.cache_sections.line(line)
            elif self.section in FOREIGN_SECTIONS:
                self.foreign.append(line)
            else:
                self.parse_proxy_line(line)
        if blocks:
            raise blocks[0][0].error("non-terminated '.if' block.")

    def directive(self, line: Line, blocks: list):
        """HAProxy 2.6's conditional blocks and messages: .if/.elif/.else/.endif,
        .notice/.diag (ignored), .warning (a warning), .alert (an error)."""
        kw, w = line.keyword, line.words
        outer = all(active for _, active, _ in blocks)
        if kw == ".if":
            ok = outer and self.condition_true(line, w[1:])
            blocks.append((line, ok, ok))
        elif kw in (".elif", ".else"):
            if not blocks:
                raise line.error(f"lone '{kw}' with no matching '.if'.")
            start, _, taken = blocks.pop()
            outer = all(active for _, active, _ in blocks)
            ok = outer and not taken and (kw == ".else" or self.condition_true(line, w[1:]))
            blocks.append((start, ok, taken or ok))
        elif kw == ".endif":
            if not blocks:
                raise line.error("lone '.endif' with no matching '.if'.")
            blocks.pop()
        elif kw in (".notice", ".diag", ".warning", ".alert"):
            if not outer:
                return
            message = " ".join(w[1:])
            if kw == ".warning":
                self.warn(line, message)
            elif kw == ".alert":
                raise line.error(message)
        else:
            raise line.error(f"unknown directive '{kw}'.")

    def condition_true(self, line: Line, words) -> bool:
        """A .if condition: terms joined by && / ||, each `[!]predicate`: a number,
        defined(VAR), feature(NAME), streq(a,b), strneq(a,b), version_atleast(v),
        version_before(v)."""
        result, op = None, None
        for word in words:
            if word in ("&&", "||"):
                op = word
                continue
            value = self.predicate(line, word)
            result = value if result is None else (result and value if op == "&&"
                                                   else result or value)
        return bool(result)

    def predicate(self, line: Line, word: str) -> bool:
        negate = word.startswith("!")
        word = word.lstrip("!")
        name, _, rest = word.partition("(")
        args = [a.strip() for a in rest.rstrip(")").split(",")] if rest else []
        if not rest:
            value = word.lstrip("-").isdigit() and int(word) != 0
        elif name == "defined":
            value = args[0] in os.environ
        elif name == "feature":
            value = args[0] in ("OPENSSL", "LINUX_SPLICE", "TPROXY", "GETADDRINFO")
        elif name in ("streq", "strneq"):
            if len(args) != 2:
                raise line.error(f"'{name}' expects 2 arguments")
            value = (args[0] == args[1]) == (name == "streq")
        elif name in ("version_atleast", "version_before"):
            mine = HAPROXY_VERSION
            theirs = tuple(int(x) for x in re.findall(r"\d+", args[0]))
            value = (mine >= theirs) == (name == "version_atleast")
        else:
            raise line.error(f"unknown conditional expression predicate '{name}'")
        return value != negate

    def open_section(self, line: Line):
        kw = line.keyword
        self.cache_sections.close()
        self.section = kw
        self.proxy = self.peers = self.foreign = None
        if kw == "global":
            if len(line.words) > 1:
                raise line.error("section takes no argument")
            return
        if kw in ("userlist", "http-errors", "resolvers", "cache"):
            return
        if kw in FOREIGN_SECTIONS:
            self.foreign = []
            self.cfg.foreign_sections.append((kw, line.words[1:], self.foreign))
            return
        if kw == "peers":
            if len(line.words) != 2:
                raise line.error("expects <name> as argument")
            name = line.words[1]
            if name in self.cfg.peers:
                raise line.error(f"peers section '{name}' has the same name as another peers "
                                 f"section declared at {self.cfg.peers[name].where}")
            self.peers = m.PeersSection(name, where=_where(line))
            self.cfg.peers[name] = self.peers
            return
        self.open_proxy(line)

    def open_proxy(self, line: Line):
        kw = line.keyword
        args = list(line.words[1:])
        name = ""
        from_name = None
        if kw != "defaults" or (args and args[0] != "from"):
            if not args:
                if kw != "defaults":
                    raise line.error(f"'{kw}' expects <name> as argument")
            else:
                name = args.pop(0)
        if args:
            if args[0] != "from" or len(args) != 2:
                raise line.error(f"unexpected argument '{args[0]}' (expects [from <defaults>])")
            from_name = args[1]
        if kw != "defaults" and name and not all(c.isalnum() or c in "-_.:" for c in name):
            bad = next(c for c in name if not (c.isalnum() or c in "-_.:"))
            raise line.error(f"character '{bad}' is not permitted in {kw} name '{name}'")
        if from_name is not None:
            base = self.cfg.defaults.get(from_name)
            if base is None:
                raise line.error(f"defaults section '{from_name}' not found for {kw} '{name}'")
            if len(self.defaults_where.get(from_name, ())) > 1:
                first, second = self.defaults_where[from_name][:2]
                raise line.error(f"ambiguous defaults section name '{from_name}' referenced by "
                                 f"{kw} '{name}' exists at least at {first} and {second}.")
        elif kw == "defaults":
            base = m.Proxy("", "defaults")      # an anonymous defaults starts afresh
        else:
            base = self.last_defaults
        if kw != "defaults":
            for other_kind in (("frontend", "listen") if kw in ("frontend", "listen") else ()) + \
                    (("backend", "listen") if kw in ("backend", "listen") else ()):
                w = self.proxy_where.get((other_kind, name))
                if w is not None:
                    raise line.error(f"{kw} '{name}' has the same name as {other_kind} '{name}' "
                                     f"declared at {w}")
            self.proxy_where[(kw, name)] = _where(line)
        elif name and name in self.cfg.defaults:
            self.warn(line, f"defaults section '{name}' has the same name as another defaults "
                            "section; the last one wins")
        if base.name:
            # a named defaults section is used either by `from` or as the last one, not both
            usage = self.defaults_usage.setdefault(id(base), set())
            usage.add("explicit" if from_name is not None else "implicit")
            if len(usage) > 1:          # HAProxy 2.6 prints an alert but still accepts it
                self.warn(line, f"defaults section '{base.name}' (declared at {base.where}) is "
                                "explicitly referenced by another proxy and implicitly used "
                                "here. To avoid any ambiguity don't mix both usage. Add a last "
                                "defaults section not explicitly used or always use explicit "
                                "references.")
        if kw != "defaults" and base.name and self._has_rules(base):
            if kw == "listen":
                raise line.error("a listen section cannot inherit from a defaults section "
                                 "defining TCP/HTTP rules.")
            users = self.defaults_users.setdefault(id(base), set())
            users.add(kw)
            if len(users) > 1:
                raise line.error("frontends and backends cannot inherit from the same defaults "
                                 "section if it defines TCP/HTTP rules (defaults section at "
                                 f"{base.where}).")
        proxy = self._inherit(base, name, kw, line)
        proxy.defaults_name = base.name or None
        self.proxy = proxy
        if kw == "defaults":
            self.last_defaults = proxy
            if name:
                self.cfg.defaults[name] = proxy
                self.defaults_where.setdefault(name, []).append(_where(line))
        else:
            self.cfg.proxies.append(proxy)
            if proxy.has_frontend:
                self.cfg.frontends[name] = proxy
            if proxy.has_backend:
                self.cfg.backends[name] = proxy

    @staticmethod
    def _has_rules(p: m.Proxy) -> bool:
        return bool(p.http_request or p.http_response or p.http_after_response
                    or p.tcp_request_connection
                    or p.tcp_request_session or p.tcp_request_content)

    def _inherit(self, base: m.Proxy, name: str, kind: str, line: Line) -> m.Proxy:
        """A new proxy starts as a copy of its defaults section (settings, not binds/servers)."""
        p = m.Proxy(name, kind, where=_where(line))
        p.mode = base.mode
        p.maxconn, p.fullconn = base.maxconn, base.fullconn
        p.timeouts = dict(base.timeouts)
        p.options = copy.deepcopy(base.options)
        p.http_check = copy.deepcopy(base.http_check)
        p.retries = base.retries
        p.balance, p.balance_args, p.hash_type = base.balance, base.balance_args, base.hash_type
        p.hash_balance_factor = base.hash_balance_factor
        p.balance_opts = dict(base.balance_opts)
        p.cookie = copy.copy(base.cookie)
        p.errorfile_refs = list(base.errorfile_refs)
        p.http_reuse = base.http_reuse
        p.tcp_checks = list(base.tcp_checks)
        p.tcp_request_inspect_delay_ms = base.tcp_request_inspect_delay_ms
        p.compression = base.compression        # (`offload` is never in a defaults')
        p.log = log_mod.inherit(base.log)
        if p.has_frontend:
            p.monitor_uri = base.monitor_uri
        p.stats = base.stats            # until the proxy has `stats` lines of its own
        server_state.inherit(self, base, p)
        if kind != "defaults":
            if p.has_frontend:
                p.default_backend = base.default_backend
                p.default_backend_where = base.default_backend_where
            # rules of a named defaults section run before the proxy's own
            p.http_request = list(base.http_request)
            p.http_response = list(base.http_response)
            p.http_after_response = list(base.http_after_response)
            p.tcp_request_connection = list(base.tcp_request_connection)
            p.tcp_request_session = list(base.tcp_request_session)
            p.tcp_request_content = list(base.tcp_request_content)
        else:
            p.default_backend = base.default_backend
            p.default_backend_where = base.default_backend_where
        tmpl = self.default_server.get(id(base))
        if tmpl is not None:
            self.default_server[id(p)] = copy.copy(tmpl)
        return p

    # ------------------------------------------------------------------ global
    GLOBAL_IGNORED = {
        "spread-checks", "max-spread-checks",     # (first checks: within the interval)
        "ulimit-n", "node", "description", "quiet", "zero-warning", "noepoll", "nopoll",
        "nosplice", "nogetaddrinfo", "noreuseport", "busy-polling", "set-dumpable",
        "master-worker", "insecure-fork-wanted", "expose-experimental-directives",
        "maxsslconn", "maxconnrate", "maxsessrate",
        "maxsslrate", "maxpipes", "ssl-dh-param-file", "cpu-map",
        "uid", "gid", "unix-bind", "setenv", "presetenv", "unsetenv", "resetenv",
        "h1-case-adjust", "strict-limits", "numa-cpu-mapping", "pp2-never-send-local",
        "thread-groups", "external-check", "grace", "profiling.tasks", "profiling.memory",
        "ssl-load-extra-files", "ssl-mode-async", "issuers-chain-path", "ssl-skip-self-issued-ca",
    }

    def parse_global(self, line: Line):
        g = self.cfg.global_
        kw, w = line.keyword, line.words
        if kw == "stats":
            sub = _arg(line, 1, "'stats' sub-keyword (socket, timeout, maxconn)")
            if sub == "socket":
                g.stats_sockets.append(self.parse_stats_socket(line))
            elif sub == "timeout":
                g.stats_timeout_ms = _time(line, _arg(line, 2, "timeout value"),
                                           "stats timeout", self.warnings)
                if not g.stats_timeout_ms:
                    raise line.error("'stats timeout' expects a positive value")
            elif sub == "maxconn":
                g.stats_maxconn = _int(line, _arg(line, 2, "value"), "stats maxconn", 1)
            elif sub == "bind-process":
                pass
            else:
                raise line.error(f"'stats' only supports 'socket', 'maxconn', 'bind-process' and "
                                 f"'timeout' in 'global' section (got '{sub}')")
        elif kw == "maxconn":
            g.maxconn = _int(line, _arg(line, 1, "value"), "maxconn", 0)
        elif kw == "localpeer":
            g.localpeer = _arg(line, 1, "<name>")
        elif kw == "daemon":
            if len(w) > 1:
                raise line.error(f"'daemon' cannot handle unexpected argument '{w[1]}'.")
            g.daemon = True
        elif kw == "nbthread":
            g.nbthread = _int(line, _arg(line, 1, "value"), "nbthread", 1, 4096)
        elif kw == "nbproc":
            raise line.error("nbproc is not supported any more since HAProxy 2.5. "
                             "Threads will automatically be used on multi-processor machines "
                             "if available.")
        elif kw == "pidfile":
            g.pidfile = _arg(line, 1, "<file>")
        elif kw == "user":
            g.user = _arg(line, 1, "<user name>")
        elif kw == "group":
            g.group = _arg(line, 1, "<group name>")
        elif kw == "chroot":
            g.chroot = _arg(line, 1, "<directory>")
        elif kw in log_mod.GLOBAL_KEYWORDS:
            log_mod.parse_global(self.cfg, line)
        elif kw == "metrics":
            # edgestick's own: Prometheus /metrics of the proxy (like the shield's)
            if len(w) != 3 or w[1] != "bind":
                raise line.error("expects 'bind <address>:<port>'")
            host, _, port = w[2].rpartition(":")
            if not port.isdigit() or not 0 < int(port) < 65536:
                raise line.error(f"'bind' expects <address>:<port> (got '{w[2]}')")
            g.metrics_bind = (host.strip("[]") or "127.0.0.1", int(port))
        elif kw in ("set-var", "set-var-fmt"):
            self.parse_global_set_var(line)
        elif kw == "ssl-server-verify":
            v = _arg(line, 1, "'none' or 'required'")
            if v not in ("none", "required"):
                raise line.error(f"'ssl-server-verify' expects 'none' or 'required' (got '{v}')")
            g.ssl_server_verify = v
        elif kw in ("ca-base", "crt-base"):
            setattr(g, kw.replace("-", "_"), _arg(line, 1, "a directory"))
        elif kw == "hard-stop-after":
            g.hard_stop_after_ms = _time(line, _arg(line, 1, "time"), "hard-stop-after",
                                         self.warnings)
        elif kw in ("server-state-file", "server-state-base"):
            server_state.kw_global(self, line)
        elif kw in compression.GLOBAL_KEYWORDS:
            compression.check_global(line, self.warn)
            g.ignored[kw] = w[1:]
        elif kw in self.GLOBAL_IGNORED or kw.startswith(("tune.", "ssl-default-", "ssl-engine",
                                                          "51degrees", "wurfl")):
            g.ignored[kw] = w[1:]
        else:
            raise line.error(f"unknown keyword '{kw}' in 'global' section")

    def parse_stats_socket(self, line: Line) -> m.StatsSocket:
        path = _arg(line, 2, "socket address")
        if not (path.startswith("/") or path.startswith("unix@")):
            host, port, _, fam = parse_address(path, line, "stats socket", need_port=True)
            path = f"{'[' + host + ']' if fam == 'ipv6' else host}:{port}"
        sock = m.StatsSocket(path.removeprefix("unix@"), where=_where(line))
        w = line.words
        i = 3
        while i < len(w):
            opt = w[i]
            if opt == "mode":
                try:
                    sock.mode = int(_arg(line, i + 1, "mode value"), 8)
                except ValueError:
                    raise line.error(f"invalid mode '{w[i + 1]}' (expects octal digits)",
                                     "stats socket") from None
                i += 2
            elif opt == "level":
                lvl = _arg(line, i + 1, "level")
                if lvl not in ("user", "operator", "admin"):
                    raise line.error(f"'level' only supports 'user', 'operator', and 'admin' "
                                     f"(got '{lvl}')", "stats socket")
                sock.level = lvl
                i += 2
            elif opt in ("uid", "gid"):
                setattr(sock, opt, _int(line, _arg(line, i + 1, opt), opt))
                i += 2
            elif opt in ("user", "group", "process", "name", "maxconn", "backlog", "nice",
                         "severity-output", "thread"):
                _arg(line, i + 1, f"'{opt}' value")
                i += 2
            elif opt == "expose-fd":
                if _arg(line, i + 1, "'expose-fd' value") != "listeners":
                    raise line.error("'expose-fd' only supports 'listeners'", "stats socket")
                sock.expose_fd_listeners = True
                i += 2
            elif opt in ("accept-netscaler-cip",):
                i += 2
            elif opt in ("transparent", "defer-accept", "accept-proxy", "v4v6", "v6only",
                         "tfo", "quic-force-retry"):
                i += 1
            else:
                raise line.error(f"unknown keyword '{opt}'", "stats socket")
        return sock

    # ------------------------------------------------------------------ peers
    def parse_peers(self, line: Line):
        sec = self.peers
        kw, w = line.keyword, line.words
        if kw == "peer":
            name = _arg(line, 1, "<name> and <addr>[:<port>] as arguments")
            if sec.peer(name):
                raise line.error(f"peer '{name}' already defined in peers section '{sec.name}'")
            if len(w) < 3:              # HAProxy accepts a peer without address
                sec.peers.append(m.Peer(name, None, None, where=_where(line)))
                return
            host, port, _, fam = parse_address(w[2], line, kw, need_port=False, resolve=True)
            self.check_peer_opts(line, w[3:])
            sec.peers.append(m.Peer(name, host, port, fam, _where(line)))
        elif kw == "bind":
            if sec.bind is not None:
                raise line.error(f"One listener per \"peers\" section is authorized but another "
                                 f"is already configured at [{sec.bind.where}].")
            host, port, _, fam = parse_address(_arg(line, 1, "address"), line, kw, need_port=True)
            sec.bind = m.Bind(host, port, fam, where=_where(line))
        elif kw == "server":
            name = _arg(line, 1, "<name>")
            if sec.peer(name):
                raise line.error(f"peer '{name}' already defined in peers section '{sec.name}'")
            if len(w) > 2 and not w[2].startswith("-"):
                host, port, _, fam = parse_address(w[2], line, kw, need_port=False, resolve=True)
                self.check_peer_opts(line, w[3:])
                sec.peers.append(m.Peer(name, host, port, fam, _where(line)))
            else:
                sec.peers.append(m.Peer(name, None, None, where=_where(line)))
        elif kw == "table":
            if len(w) < 2:
                raise line.error("expects <name> and table options")
            if any(t.words[1] == w[1] for t in sec.tables):
                raise line.error(f"table '{w[1]}' already defined in peers section '{sec.name}'")
            words = m.StickTableWords(("stick-table",) + w[2:], _where(line))
            name = f"{sec.name}/{w[1]}"
            decl = self.check_stick_table(line, words, in_peers=True)
            sec.table_decls[name] = decl
            sec.tables.append(m.StickTableWords(w, _where(line)))
            self.cfg.tables.append((name, tuple(w[2:]), decl, True))
        elif kw in ("disabled",):
            sec.disabled = True
        elif kw in ("enabled", "log", "default-bind", "default-server"):
            pass
        else:
            raise line.error(f"unknown keyword '{kw}' in 'peers' section")

    # ------------------------------------------------------------------ stick-table
    def check_stick_table(self, line: Line, words: m.StickTableWords, in_peers: bool = False):
        """Parse the declaration with the tables' own grammar (proxy/stick_table.py)."""
        try:
            decl, warnings = parse_table_args(words.words[1:], in_peers_section=in_peers)
        except ValueError as e:
            raise line.error(str(e)) from None
        for msg in warnings:
            self.warn(line, msg)
        return decl

    # ------------------------------------------------------------------ proxies
    def parse_proxy_line(self, line: Line):
        p = self.proxy
        kw = line.keyword
        handler = PROXY_KEYWORDS.get(kw)
        if handler is None:
            if kw in UNSUPPORTED_PROXY_KEYWORDS:
                raise line.error(f"'{kw}' is not supported by edgestick")
            raise line.error(f"unknown keyword '{kw}' in '{p.kind}' section")
        cap, fn = handler
        if kw == "bind" and len(line.words) < 2:       # checked before the capability
            raise line.error("'bind' expects {<path>|[addr1]:port1[-end1]}{,[addr]:port[-end]}"
                             "... as arguments.")
        if cap == "fe" and not p.has_frontend:
            if kw == "bind":             # HAProxy still checks the line's options
                self.kw_bind(m.Proxy(p.name, "frontend"), line)
            self.warn(line, f"'{kw}' ignored because backend '{p.name}' has no frontend capability")
            return
        if cap == "be" and not p.has_backend:
            self.warn(line, f"'{kw}' ignored because frontend '{p.name}' has no backend capability")
            return
        if cap == "be!" and not p.has_backend:
            raise line.error(f"'{kw}' not allowed because frontend '{p.name}' has no backend "
                             "capability")
        if cap == "fe!" and not p.has_frontend:
            raise line.error(f"'{kw}' not allowed because backend '{p.name}' has no frontend "
                             "capability")
        fn(self, p, line)

    # bind ------------------------------------------------------------
    def kw_bind(self, p: m.Proxy, line: Line):
        if p.kind == "defaults":
            raise line.error("'bind' not allowed in 'defaults' section")
        addrs = _arg(line, 1, "address")
        binds = []
        for text in addrs.split(","):
            host, port, last, fam = parse_address(text, line, "bind", need_port=True,
                                                  allow_range=True, resolve=True)
            binds.append(m.Bind(host, port, fam, port_last=last, where=_where(line)))
        w = line.words
        i = 2
        opts: dict = {"crt": []}
        while i < len(w):
            opt = w[i]
            if opt in BIND_UNSUPPORTED:
                raise line.error(f"bind option '{opt}' is not supported by edgestick", "bind")
            if opt in BIND_NO_EFFECT:
                self.warn(line, f"bind option '{opt}' has no effect in edgestick (ignored)",
                          "bind")
            if opt in BIND_FLAGS:
                opts[opt] = True
                i += 1
            elif opt in BIND_VALUED:
                val = _arg(line, i + 1, f"'{opt}' value")
                if opt == "crt":
                    opts["crt"].append(val)
                else:
                    opts[opt] = val
                i += 2
            else:
                raise line.error(f"'bind {addrs}' in section '{p.kind}': unknown keyword '{opt}'",
                                 "bind")
        ctx = None
        if opts.get("ssl"):
            if not opts["crt"] and "crt-list" not in opts:
                raise line.error(f"'bind {addrs}' : no SSL certificate specified for bind "
                                 f"'{addrs}' ('crt' is required with 'ssl')", "bind")
            ctx = self.load_ssl(line, opts)
        elif opts["crt"]:
            self.warn(line, f"'crt' is set on 'bind {addrs}' without 'ssl': ignored", "bind")
        for b in binds:
            b.ssl = bool(opts.get("ssl"))
            b.crt = list(opts["crt"])
            b.alpn = opts.get("alpn")
            b.name = opts.get("name")
            b.accept_proxy = bool(opts.get("accept-proxy"))
            b.v4v6, b.v6only = bool(opts.get("v4v6")), bool(opts.get("v6only"))
            if "maxconn" in opts:
                b.maxconn = _int(line, opts["maxconn"], "bind maxconn", 0)
            if "backlog" in opts:
                b.backlog = _int(line, opts["backlog"], "bind backlog", 0)
            if "mode" in opts:
                try:
                    b.mode = int(opts["mode"], 8)
                except ValueError:
                    raise line.error(f"invalid mode '{opts['mode']}'", "bind") from None
            if "level" in opts:
                b.level = opts["level"]
            b.ssl_context = ctx
        p.binds.extend(binds)

    def ssl_bind_defaults(self) -> dict:
        """Options from global `ssl-default-bind-ciphers` / `ssl-default-bind-options`."""
        g = self.cfg.global_.ignored
        out: dict = {}
        if "ssl-default-bind-ciphers" in g and g["ssl-default-bind-ciphers"]:
            out["ciphers"] = g["ssl-default-bind-ciphers"][0]
        words = list(g.get("ssl-default-bind-options", ()))
        i = 0
        while i < len(words):
            if words[i] in ("ssl-min-ver", "ssl-max-ver") and i + 1 < len(words):
                out[words[i]] = words[i + 1]
                i += 2
            else:
                out[words[i]] = True
                i += 1
        return out

    def load_ssl(self, line: Line, opts: dict) -> ssl.SSLContext:
        """Build the TLS context now so a bad certificate fails at check time."""
        opts = {**self.ssl_bind_defaults(), **opts}
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        if opts.get("no-tls-tickets"):
            ctx.options |= ssl.OP_NO_TICKET
        for flag, option in (("no-tlsv12", ssl.OP_NO_TLSv1_2), ("no-tlsv13", ssl.OP_NO_TLSv1_3)):
            if opts.get(flag):
                ctx.options |= option
        for flag, version in (("force-tlsv12", ssl.TLSVersion.TLSv1_2),
                              ("force-tlsv13", ssl.TLSVersion.TLSv1_3)):
            if opts.get(flag):
                ctx.minimum_version = ctx.maximum_version = version
        base = self.cfg.global_.crt_base
        crts = list(opts["crt"])
        if "crt-list" in opts:
            crts += self.read_crt_list(line, opts["crt-list"])
        for crt in crts:
            path = crt if os.path.isabs(crt) or not base else os.path.join(base, crt)
            if os.path.isdir(path):
                files = sorted(os.path.join(path, f) for f in os.listdir(path)
                               if f.endswith((".pem", ".crt")))
            else:
                files = [path]
            if not files:
                raise line.error(f"unable to load SSL certificate from directory '{crt}'", "bind")
            for f in files:
                if not os.path.exists(f):
                    raise line.error(f"unable to stat SSL certificate from file '{f}' : "
                                     "No such file or directory.", "bind")
                key = f + ".key" if os.path.exists(f + ".key") else None
                try:
                    ctx.load_cert_chain(f, key)
                except (ssl.SSLError, OSError) as e:
                    raise line.error(f"unable to load SSL certificate and private key from "
                                     f"'{f}': {e}", "bind") from None
        versions = {"SSLv3": ssl.TLSVersion.SSLv3, "TLSv1.0": ssl.TLSVersion.TLSv1,
                    "TLSv1.1": ssl.TLSVersion.TLSv1_1, "TLSv1.2": ssl.TLSVersion.TLSv1_2,
                    "TLSv1.3": ssl.TLSVersion.TLSv1_3}
        for opt, attr in (("ssl-min-ver", "minimum_version"), ("ssl-max-ver", "maximum_version")):
            if opt in opts:
                if opts[opt] not in versions:
                    raise line.error(f"'{opt}' : unknown version '{opts[opt]}' (expects one of "
                                     f"{', '.join(versions)})", "bind")
                try:
                    setattr(ctx, attr, versions[opts[opt]])
                except (ValueError, ssl.SSLError) as e:
                    raise line.error(f"'{opt} {opts[opt]}' : {e}", "bind") from None
        if "ciphers" in opts:
            try:
                ctx.set_ciphers(opts["ciphers"])
            except ssl.SSLError:
                raise line.error(f"'ciphers' : no usable cipher in '{opts['ciphers']}'",
                                 "bind") from None
        if opts.get("verify") not in (None, "none", "optional", "required"):
            raise line.error(f"'verify' expects 'none', 'optional' or 'required' (got "
                             f"'{opts['verify']}')", "bind")
        if opts.get("verify") in ("optional", "required") or "ca-file" in opts:
            if "ca-file" not in opts:
                raise line.error("'verify' needs 'ca-file' to check client certificates",
                                 "bind")
            try:
                ctx.load_verify_locations(opts["ca-file"])
            except (ssl.SSLError, OSError) as e:
                raise line.error(f"unable to load ca-file '{opts['ca-file']}': {e}",
                                 "bind") from None
            ctx.verify_mode = {"optional": ssl.CERT_OPTIONAL, "none": ssl.CERT_NONE}.get(
                opts.get("verify"), ssl.CERT_REQUIRED)
        alpn = opts.get("alpn")
        if alpn:
            protos = [a for a in alpn.split(",") if a]
            if any(a not in ("http/1.1", "http/1.0") for a in protos):
                self.warn(line, f"ALPN '{alpn}': edgestick speaks HTTP/1.1 only", "bind")
            ctx.set_alpn_protocols([a for a in protos if a.startswith("http/1")] or ["http/1.1"])
        return ctx

    @staticmethod
    def read_crt_list(line: Line, path: str) -> list[str]:
        """Certificates named by a crt-list file (first word of each line; SNI filters and
        per-certificate options are not used here)."""
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except OSError as e:
            raise line.error(f"cannot open crt-list '{path}': {e.strerror}", "bind") from None
        out = []
        for raw in text.splitlines():
            raw = raw.split("#", 1)[0].strip()
            if raw:
                crt = raw.split()[0]
                out.append(crt if os.path.isabs(crt) else
                           os.path.join(os.path.dirname(path), crt))
        if not out:
            raise line.error(f"crt-list '{path}' names no certificate", "bind")
        return out

    # simple settings -------------------------------------------------
    def kw_mode(self, p, line):
        mode = _arg(line, 1, "mode (http, tcp)")
        _one_arg(line)
        if mode not in ("http", "tcp"):
            if mode == "health":
                raise line.error("'mode health' doesn't exist anymore. Please use "
                                 "'http-request return status 200' instead.")
            raise line.error(f"'mode' expects one of 'http', 'tcp' (got '{mode}')")
        p.mode = mode

    def kw_maxconn(self, p, line):
        if not p.has_frontend:
            self.warn(line, f"'maxconn' ignored because backend '{p.name}' has no frontend "
                            "capability. Maybe you want 'fullconn' instead ?")
            return
        p.maxconn = _int(line, _arg(line, 1, "integer value"), "maxconn", 0)
        _one_arg(line)

    def kw_fullconn(self, p, line):
        if not p.has_backend:
            self.warn(line, f"'fullconn' ignored because frontend '{p.name}' has no backend "
                            "capability. Maybe you want 'maxconn' instead ?")
            return
        p.fullconn = _int(line, _arg(line, 1, "integer value"), "fullconn", 0)
        _one_arg(line)

    def kw_timeout(self, p, line):
        name = _arg(line, 1, "timeout name")
        if name in ("clitimeout", "contimeout", "srvtimeout"):
            raise line.error(f"the '{name}' directive is not supported anymore")
        if name not in m.TIMEOUT_NAMES:
            raise line.error("'timeout' supports 'client', 'server', 'connect', 'check', 'queue',"
                             " 'http-keep-alive', 'http-request', 'tunnel', 'tarpit', "
                             f"'client-fin' and 'server-fin' (got '{name}')")
        value = _time(line, _arg(line, 2, f"'timeout {name}' value"), f"timeout {name}",
                      self.warnings)
        if len(line.words) > 3:
            raise line.error(f"'timeout {name}' expects only one argument")
        fe_only = ("client", "http-keep-alive", "client-fin")    # (http-request: both)
        be_only = ("server", "connect", "check", "queue", "tunnel", "server-fin")
        if name in fe_only and not p.has_frontend:
            self.warn(line, f"'timeout {name}' will be ignored because backend '{p.name}' has no "
                            "frontend capability")
            return
        if name in be_only and not p.has_backend:
            self.warn(line, f"'timeout {name}' will be ignored because frontend '{p.name}' has "
                            "no backend capability")
            return
        p.timeouts[name] = value

    def kw_default_backend(self, p, line):
        if len(line.words) != 2:
            raise line.error("expects a backend name")
        p.default_backend = line.words[1]
        p.default_backend_where = _where(line)

    def kw_use_backend(self, p, line):
        if p.kind == "defaults":
            raise line.error("'use_backend' not allowed in 'defaults' section")
        words, cond_words = split_condition(line.words[1:])
        if len(words) != 1:
            raise line.error("expects a backend name")
        if "%[" in words[0]:            # a dynamic name, resolved per request
            self.check_log_format(p, line, words[0], "use_backend")
        cond = self.condition(p, line, cond_words) if cond_words else None
        p.use_backends.append(m.UseBackend(words[0], cond, _where(line)))

    def kw_retries(self, p, line):
        p.retries = _int(line, _arg(line, 1, "integer value"), "retries", 0)
        _one_arg(line)

    def kw_balance(self, p, line):
        algo = line.words[1] if len(line.words) > 1 else "roundrobin"
        base, paren, inner = algo.partition("(")
        args = line.words[2:]
        if base not in ("roundrobin", "static-rr", "leastconn", "source", "first", "uri",
                        "url_param", "random", "rdp-cookie") and not (base == "hdr" and paren):
            raise line.error("balance only supports 'roundrobin', 'static-rr', 'leastconn', "
                             "'source', 'uri', 'url_param', 'hdr(name)' and 'rdp-cookie(name)' "
                             "options.")
        if base == "rdp-cookie":
            raise line.error(f"'balance {algo}' is not supported by edgestick (it reads an RDP "
                             "cookie in the TCP payload)")
        opts: dict = {}
        if base == "uri":
            i = 0
            while i < len(args):
                a = args[i]
                if a in ("len", "depth"):
                    v = args[i + 1] if i + 1 < len(args) else ""
                    if not v.isdigit() or int(v) <= 0:
                        raise line.error(f"balance uri : '{a}' expects a positive integer "
                                         f"(got '{v}').")
                    opts[a] = int(v)
                    i += 2
                elif a in ("whole", "path-only"):
                    opts[a] = True
                    i += 1
                else:
                    raise line.error("balance uri only accepts parameters 'len', 'depth', "
                                     f"'path-only', and 'whole' (got '{a}').")
        elif base == "url_param":
            if not args:
                raise line.error("balance url_param requires an URL parameter name.")
            opts["param"] = args[0]
            if len(args) > 1:
                if args[1] != "check_post":
                    raise line.error("balance url_param only accepts 'check_post' modifier "
                                     f"(got '{args[1]}').")
                self.warn(line, "'check_post' has no effect in edgestick: only the query "
                                "string is hashed, a POST body never is")
        elif base == "hdr":
            name = inner[:-1] if inner.endswith(")") else inner
            if not name:
                raise line.error("balance hdr requires an http header field name.")
            opts["header"] = name.lower()
            if args:
                if args[0] != "use_domain_only":
                    raise line.error(f"balance {algo} only accepts 'use_domain_only' modifier "
                                     f"(got '{args[0]}').")
                opts["domain_only"] = True
        elif base == "random":
            draws = 2
            if paren:
                text = inner[:-1] if inner.endswith(")") else inner
                digits = len(text) - len(text.lstrip("0123456789"))
                if digits < len(text):
                    raise line.error("balance random : unexpected character "
                                     f"'{text[digits]}' after argument.")
                draws = int(text or 0)
                if draws < 1:
                    raise line.error("balance random : number of draws must be at least 1.")
            opts["draws"] = draws
        p.balance, p.balance_args, p.balance_opts = base, tuple(args), opts

    def kw_hash_type(self, p, line):
        w = line.words[1:]
        if not w or w[0] not in ("map-based", "consistent"):
            raise line.error("'hash-type' only supports 'consistent' and 'map-based'.")
        fn = w[1] if len(w) > 1 else "sdbm"
        if fn not in hashes.BY_NAME:
            raise line.error("'hash-type' only supports 'sdbm', 'djb2', 'crc32', or 'wt6' "
                             "hash functions.")
        if len(w) > 2 and w[2] != "avalanche":
            raise line.error("'hash-type' only supports 'avalanche' as a modifier for hash "
                             "functions.")
        # `consistent` alone implies avalanche (HAProxy keeps its older default)
        p.hash_type = (w[0], fn, len(w) > 2 or (w[0] == "consistent" and len(w) == 1))

    def kw_hash_balance_factor(self, p, line):
        if len(line.words) < 2:
            raise line.error("'hash-balance-factor' expects an integer argument.")
        factor = server_health.atol(line.words[1])
        if factor != 0 and factor <= 100:
            raise line.error("'hash-balance-factor' must be 0 or greater than 100.")
        p.hash_balance_factor = factor

    def kw_persist_rule(self, p, line):
        """`force-persist` / `ignore-persist` if|unless <condition>."""
        kw = line.words[0]
        if p.kind == "defaults":
            raise line.error(f"'{kw}' not allowed in 'defaults' section.")
        if len(line.words) < 3 or line.words[1] not in ("if", "unless"):
            raise line.error(f"'{kw}' requires either 'if' or 'unless' followed by a "
                             "condition.")
        refs = self._refs(p, line)
        try:
            cond = compile_condition(line.words[1:], p.acls, refs)
        except (AclError, SampleError) as e:
            raise line.error(f"error detected while parsing a '{kw}' rule : {e}") from None
        p.persist_rules.append((kw.partition("-")[0], cond))

    def kw_option(self, p, line, negate: bool = False):
        w = line.words[1:] if not negate else line.words[2:]
        if not w:
            raise line.error("expects an option name")
        name = w[0]
        o = p.options
        if name in ("ssl-hello-chk", "smtpchk", "pgsql-check", "mysql-check", "ldap-check",
                    "redis-check", "spop-check", "external-check"):
            what = "a non-HTTP health check; use plain 'check' or 'option httpchk'"
            raise line.error(f"'option {name}' ({what}) is not supported by edgestick",
                             "option")
        be = ("redispatch", "httpchk", "persist", "abortonclose", "allbackups", "tcp-check",
              "log-health-checks", "checkcache", "http-pretend-keepalive", "prefer-last-server",
              "srvtcpka", "tcp-smart-connect")
        fe = ("http-ignore-probes", "dontlognull", "httplog", "tcplog", "clitcpka",
              "dontlog-normal", "log-separate-errors", "logasap", "accept-invalid-http-request",
              "http-use-proxy-header", "socket-stats", "contstats",
              "idle-close-on-response", "nolinger", "splice-auto", "tcp-smart-accept",
              "http-restrict-req-hdr-names")
        known = be + fe + ("forwardfor", "http-server-close", "httpclose", "http-keep-alive",
                           "http-buffer-request",
                           "tcpka", "originalto", "http-no-delay", "independent-streams",
                           "splice-request", "splice-response", "transparent",
                           "accept-invalid-http-response", "h1-case-adjust-bogus-client",
                           "h1-case-adjust-bogus-server", "disable-h2-upgrade")
        if name not in known:
            raise line.error(f"unknown option '{name}'.", "option")
        if name in be and not p.has_backend:
            self.warn(line, f"'{name}' ignored because frontend '{p.name}' has no backend "
                            "capability")
            return
        if name in fe and not p.has_frontend:
            self.warn(line, f"'{name}' ignored because backend '{p.name}' has no frontend "
                            "capability")
            return
        args = w[1:]
        value = not negate
        if value and name in OPTIONS_NO_EFFECT:
            self.warn(line, f"'option {name}' has no effect in edgestick (ignored)", "option")
        if name == "forwardfor":
            if negate:
                raise line.error("'no option forwardfor' is not supported")
            o.forwardfor = True
            i = 0
            while i < len(args):
                a = args[i]
                if a in ("except", "header"):
                    v = args[i + 1] if i + 1 < len(args) else None
                    if v is None:
                        raise line.error(f"'option forwardfor {a}' expects a value", "option")
                    if a == "except":
                        try:
                            parse_net(v)
                        except AclError as e:
                            raise line.error(f"'option forwardfor except': {e}", "option") from None
                        o.forwardfor_except = v
                    else:
                        o.forwardfor_header = v
                    i += 2
                elif a == "if-none":
                    o.forwardfor_if_none = True
                    i += 1
                else:
                    raise line.error("'option forwardfor' only supports optional values "
                                     f"'except', 'header' and 'if-none' (got '{a}')", "option")
            return
        if name == "originalto":
            if negate:
                raise line.error("negation/default is not supported for option 'originalto'.")
            o.originalto = True
            i = 0
            while i < len(args):
                a = args[i]
                v = args[i + 1] if i + 1 < len(args) else None
                if a == "except":
                    try:
                        if v is None or "." not in v and ":" not in v:
                            raise AclError(v)
                        parse_net(v)
                    except AclError:
                        raise line.error("'option originalto except' expects "
                                         "<address>[/mask] as argument.") from None
                    o.originalto_except = v
                elif a == "header":
                    if v is None:
                        raise line.error("'option originalto header' expects <header_name> "
                                         "as argument.")
                    o.originalto_header = v
                else:
                    raise line.error("'option originalto' only supports optional values: "
                                     "'except' and 'header'.")
                i += 2
            return
        if name == "httpchk":
            if negate:
                o.httpchk = False
                return
            o.httpchk = True
            hc = p.http_check
            if len(args) == 1:
                hc.uri = args[0]
            elif len(args) >= 2:
                if len(args) > 3:
                    raise line.error(f"'option httpchk' cannot handle unexpected argument "
                                     f"'{args[3]}'.", "option")
                hc.method, hc.uri = args[0], args[1]
                if len(args) == 3:
                    # may hold extra header lines the old way: "HTTP/1.1\r\nHost:\ x"
                    hc.version = args[2]
            return
        if name == "httplog":           # (proxy/log.py reads the clf choice)
            o.other["httplog-clf"] = tuple(args) == ("clf",)
            if o.other["httplog-clf"]:
                args = []
        if name in ("httplog", "tcplog") and not negate and p.log is not None:
            p.log.fmt = None            # the last of log-format / option httplog wins
        if name == "http-restrict-req-hdr-names":
            if len(args) != 1 or args[0] not in ("preserve", "delete", "reject"):
                raise line.error("'option http-restrict-req-hdr-names' expects 'preserve', "
                                 "'delete' or 'reject'", "option")
            o.other[name] = args[0]
            return
        if args:
            raise line.error(f"'option {name}' does not take any argument")
        attr = name.replace("-", "_")
        if hasattr(o, attr) and attr != "other":
            setattr(o, attr, value)
            if name in ("http-server-close", "httpclose") and value:
                o.http_keep_alive = False
            if name == "http-keep-alive" and value:
                o.http_server_close = o.httpclose = False
        else:
            o.other[name] = value

    def kw_no(self, p, line):
        if len(line.words) >= 2 and line.words[1] == "log":
            return log_mod.kw_no_log(self, p, line)
        if len(line.words) < 2 or line.words[1] != "option":
            raise line.error("'no' must be followed by 'option'")
        self.kw_option(p, line, negate=True)

    def kw_http_check(self, p, line):
        sub = _arg(line, 1, "http-check sub-keyword")
        w = line.words
        hc = p.http_check
        steps = self.check_steps.setdefault(id(p), [])
        # steps run in order: [connect] send expect... [connect send expect...]
        prev = steps[-1] if steps else None
        if sub in ("connect", "send", "expect"):
            steps.append(sub)
        if sub == "connect" and prev is not None:
            if steps[0] != "connect":
                raise line.error("'http-check connect' : first step MUST also be a 'connect', "
                                 "optionally preceded by a 'set-var', an 'unset-var' or a "
                                 "'comment', when there is a 'connect' step in the tcp-check "
                                 "ruleset.")
            if prev != "expect":
                raise line.error(f"'http-check connect' : unable to add http-check connect "
                                 f"rule at step {len(steps)} (missing expect rule).")
        if sub == "expect" and prev == "connect":
            raise line.error(f"'http-check expect' : unable to add http-check expect rule at "
                             f"step {len(steps)} (missing send rule).")
        if sub == "send":
            if prev is not None and prev != "connect":
                raise line.error(f"'http-check send' : unable to add http-check send rule at "
                                 f"step {len(steps)} (missing connect rule).")
            i = 2
            while i < len(w):
                if w[i] == "meth":
                    hc.method = _arg(line, i + 1, "method")
                elif w[i] == "uri":
                    hc.uri = _arg(line, i + 1, "uri")
                elif w[i] == "ver":
                    hc.version = _arg(line, i + 1, "version")
                elif w[i] == "hdr":
                    hc.headers.append((_arg(line, i + 1, "header name"),
                                       _arg(line, i + 2, "header value")))
                    i += 1
                elif w[i] == "body":
                    hc.body = _arg(line, i + 1, "body")
                else:
                    raise line.error(f"'http-check send' : unknown parameter '{w[i]}'")
                i += 2
        elif sub == "expect":
            args = [a for a in w[2:] if a != "!"]
            if len(args) < 2:
                raise line.error("'http-check expect' expects <match> and <pattern>")
            if args[0] not in ("status", "rstatus", "string", "rstring", "hdr", "fhdr"):
                raise line.error(f"'http-check expect' : unknown match '{args[0]}'")
            if args[0] == "status":
                for part in args[1].split(","):
                    for code in part.split("-", 1):
                        if not code.isdigit():
                            bad = next((c for c in code if not c.isdigit()), "")
                            raise line.error(f"'http-check expect' : invalid character '{bad}' "
                                             "in the list of status codes.")
            hc.expect = (args[0], args[1])
        elif sub == "connect":
            i = 2
            while i < len(w):
                if w[i] in ("comment", "port", "addr", "sni", "alpn", "proto"):
                    _arg(line, i + 1, f"'{w[i]}' value")
                    i += 2
                elif w[i] in ("send-proxy", "via-socks4", "ssl", "linger", "default"):
                    i += 1
                else:
                    raise line.error("'http-check connect' : expects 'comment', 'port', 'addr', "
                                     "'send-proxy', 'ssl', 'sni', 'alpn' or 'via-socks4', "
                                     f"'linger', 'default' but got '{w[i]}' as argument.")
        elif sub in ("disable-on-404", "send-state", "comment", "set-var", "unset-var"):
            pass
        else:
            raise line.error(f"'http-check' only supports 'disable-on-404', 'send-state', "
                             f"'comment', 'connect', 'send', 'expect' (got '{sub}')")

    def kw_cookie(self, p, line):
        w = line.words
        if len(w) < 2:
            raise line.error("'cookie' expects <cookie_name> as argument.")
        c = m.CookieConfig(w[1], where=_where(line))
        i = 2
        modes = 0
        while i < len(w):
            a = w[i]
            if a in ("rewrite", "insert", "prefix"):
                c.mode = a
                modes += 1
            elif a in ("indirect", "nocache", "postonly", "httponly", "secure", "preserve",
                       "dynamic"):
                setattr(c, a, True)
            elif a == "domain":
                d = _arg(line, i + 1, "domain value")
                if not d.startswith("."):
                    self.warn(line, f"domain '{d}' does not start with a dot, any RFC-compliant "
                                    "client will ignore it", "cookie")
                c.domains.append(d)
                i += 1
            elif a in ("maxidle", "maxlife"):
                setattr(c, f"{a}_ms", _time(line, _arg(line, i + 1, f"'{a}' value"), a,
                                            self.warnings))
                i += 1
            elif a == "attr":
                v = _arg(line, i + 1, "'attr' value")
                if any(ch in v for ch in ";\r\n"):
                    raise line.error("'attr' value must not contain ';' or line breaks", "cookie")
                c.attrs.append(v)
                i += 1
            else:
                raise line.error("'cookie' supports 'rewrite', 'insert', 'prefix', 'indirect', "
                                 "'nocache', 'postonly', 'domain', 'maxidle', 'dynamic', "
                                 "'maxlife' and 'attr' options.")
            i += 1
        if modes > 1:
            raise line.error("'rewrite', 'insert' and 'prefix' modes are mutually exclusive.")
        if c.mode == "prefix" and c.indirect:
            raise line.error("'prefix' and 'indirect' are mutually exclusive.")
        if (c.maxidle_ms or c.maxlife_ms) and c.mode != "insert":
            self.warn(line, "cookie 'maxidle' and 'maxlife' are only supported in 'insert' mode",
                      "cookie")
        p.cookie = c

    # servers -----------------------------------------------------------
    def kw_server(self, p, line):
        if p.kind == "defaults":
            raise line.error("'server' not allowed in 'defaults' section.")
        w = line.words
        if len(w) < 3:
            raise line.error("expects <name> and <addr>[:<port>] as arguments")
        self.add_server(p, line, w[1], w[2], w[3:])

    def add_server(self, p, line, name: str, addr: str, opts) -> m.Server:
        for s in p.servers:
            if s.name == name:
                raise line.error(f"backend '{p.name}', another server named '{name}' was already "
                                 f"defined at line {s.where.line}, please use distinct names.")
        kw = f"server {p.name}/{name}"
        host, port, _, fam = parse_address(addr, line, kw, need_port=False, resolve=True)
        tmpl = self.default_server.get(id(p))
        srv = copy.copy(tmpl) if tmpl else m.Server(name, host, port)
        srv.name, srv.host, srv.port, srv.family, srv.where = name, host, port, fam, _where(line)
        srv.fqdn = None if host in addr else (addr.rpartition(":")[0] or addr)
        if srv.tls is not None:             # (default-server's settings are a template)
            srv.tls = dataclasses.replace(srv.tls)
        self.apply_server_opts(line, srv, opts, kw)
        self.check_server_tls(p, line, srv, kw)
        p.servers.append(srv)
        return srv

    def check_server_tls(self, p, line, srv: m.Server, kw: str):
        """HAProxy's checks of a server's TLS settings (check_config_validity), and its
        sni expression compiled."""
        if srv.tls is None and (srv.ssl or srv.check_ssl):
            srv.tls = outbound.ServerTls()
        tls = srv.tls
        if tls is None:
            return
        g = self.cfg.global_
        for attr, base in (("ca_file", g.ca_base), ("crt", g.crt_base)):
            path = getattr(tls, attr)
            if path and base and not os.path.isabs(path):
                setattr(tls, attr, os.path.join(base, path))
        if tls.sni and tls.sni_expr is None:
            tls.sni_expr = self.expression(line, tls.sni, "sni", p=p)
        if not (srv.ssl or srv.check_ssl):
            return
        # global ssl-default-server-ciphers / -options fill what the line leaves unset
        ciphers = g.ignored.get("ssl-default-server-ciphers")
        if ciphers and tls.ciphers is None:
            tls.ciphers = ciphers[0]
        words = list(g.ignored.get("ssl-default-server-options", ()))
        for opt, attr in (("ssl-min-ver", "min_ver"), ("ssl-max-ver", "max_ver")):
            if opt in words[:-1] and getattr(tls, attr) is None:
                value = words[words.index(opt) + 1]
                err = outbound.check_tls_option(opt, value)
                if err:
                    raise line.error(f"global 'ssl-default-server-options': {err}", kw)
                setattr(tls, attr, value)
        tls.verify = tls.verify or g.ssl_server_verify
        if tls.verify == "required" and not tls.ca_file:
            raise line.error(
                "verify is enabled by default but no CA file specified. If you're "
                "running on a LAN where you're certain to trust the server's certificate, "
                "please set an explicit 'verify none' statement on the 'server' line, or use "
                "'ssl-server-verify none' in the global section to disable server-side "
                "verifications by default.", kw)
        if tls.ca_file and (err := outbound.readable(tls.ca_file)):
            raise line.error(f"Couldn't open the ca-file '{tls.ca_file}' ({err}).", kw)
        if tls.crt and (err := outbound.readable(tls.crt)):
            raise line.error("unable to stat SSL certificate from file "
                             f"'{tls.crt}' : {err}.", kw)
        if tls.ciphers:
            try:
                ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).set_ciphers(tls.ciphers)
            except ssl.SSLError:
                raise line.error(f"unable to set SSL cipher list to '{tls.ciphers}'.",
                                 kw) from None
        try:
            outbound.client_context(tls)
        except (OSError, ValueError) as e:
            raise line.error(f"SSL settings refused: {e}", kw) from None

    _TEMPLATE_RANGE = re.compile(r"([0-9]+)(?:-([0-9]+))?")

    def kw_server_template(self, p, line):
        """`server-template <prefix> <num | first-last> <fqdn>[:<port>] [params*]`: servers
        prefix1..prefixN (or prefixFIRST..prefixLAST), each as a `server` line with that
        address (a name resolved once, now, as HAProxy does without `resolvers`). An `id`
        numbers the first one only; the others take the free ids."""
        if p.kind == "defaults":
            raise line.error("'server-template' not allowed in 'defaults' section.")
        w = line.words
        if len(w) < 4:
            raise line.error("'server-template' expects <prefix> <nb | range> "
                             "<addr>[:<port>] as arguments.")
        got = self._TEMPLATE_RANGE.fullmatch(w[2])
        first, last = (1, int(got.group(1))) if got and got.group(2) is None else (
            (int(got.group(1)), int(got.group(2))) if got else (1, 0))
        if not got or last < 1 or first > last:
            raise line.error(f"Wrong server-template number or range arg '{w[2]}'.")
        opts = list(w[4:])
        for i in range(first, last + 1):
            self.add_server(p, line, f"{w[1]}{i}", w[3], opts)
            opts = _without_id(opts)     # only the first one takes an explicit id

    def kw_default_server(self, p, line):
        srv = copy.copy(self.default_server.get(id(p))) or m.Server("", "", None)
        self.apply_server_opts(line, srv, line.words[1:], "default-server")
        self.default_server[id(p)] = srv

    def check_peer_opts(self, line: Line, words: Sequence[str]):
        """Peer lines take server options; they are checked, then unused."""
        self.apply_server_opts(line, m.Server("", "", None), words, "peer")

    def apply_server_opts(self, line: Line, srv: m.Server, words: Sequence[str], kw: str):
        i = 0
        while i < len(words):
            opt = words[i]
            if opt in SERVER_UNSUPPORTED:
                # they change what goes on the wire: running without them would be wrong
                raise line.error(f"server option '{opt}' is not supported by edgestick", kw)
            if opt in SERVER_NO_EFFECT:
                self.warn(line, f"server option '{opt}' has no effect in edgestick (ignored)",
                          kw)
            if opt in SERVER_SWITCHES:      # options without an argument
                if opt in SERVER_FLAGS:
                    setattr(srv, *SERVER_FLAGS[opt])
                i += 1
                continue
            if i + 1 >= len(words):
                if opt in SERVER_VALUED:
                    raise line.error(server_health.missing_argument(opt)
                                     or f"'{opt}' expects an argument", kw)
                raise line.error(f"unknown keyword '{opt}'.", f"{kw}")
            val = words[i + 1]
            if opt in ("inter", "fastinter", "downinter"):
                t = _time(line, val, opt, self.warnings)
                if t == 0:
                    raise line.error(f"invalid value 0 for argument '{opt}'", kw)
                setattr(srv, {"inter": "inter_ms", "fastinter": "fastinter_ms",
                              "downinter": "downinter_ms"}[opt], t)
            elif opt in ("rise", "fall"):
                v = _int(line, val, opt, 1)
                setattr(srv, opt, v)
            elif opt == "weight":
                try:
                    wv = int(val)
                except ValueError:
                    raise line.error(f"invalid weight '{val}'", kw) from None
                if not 0 <= wv <= 256:
                    raise line.error(f"weight of server {srv.name} is not within 0 and 256 "
                                     f"({wv}).", kw)
                srv.weight = wv
            elif opt == "cookie":
                srv.cookie = val
            elif opt == "id":
                v = _int(line, val, "id", 1)
                srv.id, srv.explicit_id = v, True
            elif opt == "maxconn":
                srv.maxconn = _int(line, val, "maxconn", 0)
            elif opt == "maxqueue":
                srv.maxqueue = _int(line, val, "maxqueue", 0)
            elif opt == "port":
                srv.check_port = _int(line, val, "port", 1, 65535)
            elif opt == "addr":
                srv.check_addr = val
            elif opt == "resolvers":
                srv.resolvers = val
            elif opt in SERVER_TLS_VALUED:
                err = outbound.check_tls_option(opt, val)
                if err:
                    raise line.error(err, kw)
                if srv.tls is None:
                    srv.tls = outbound.ServerTls()
                setattr(srv.tls, SERVER_TLS_VALUED[opt], val)
                if opt == "sni":
                    srv.tls.sni_expr = None     # compiled once the server line is read
            elif opt in server_health.OPTIONS:
                server_health.parse_option(line, srv, opt, val, kw)
            elif opt in SERVER_VALUED:
                pass   # accepted, no effect here (ssl details, resolvers, agent...)
            else:
                raise line.error(f"unknown keyword '{opt}'.", kw)
            i += 2

    # stick tables and stick rules --------------------------------------
    def kw_stick_table(self, p, line):
        if p.kind == "defaults":
            raise line.error("'stick-table' is not supported in 'defaults' section.")
        if p.stick_table_words is not None:
            raise line.error(f"only one stick-table per proxy is allowed (already declared at "
                             f"{p.stick_table_words.where})")
        words = m.StickTableWords(line.words, _where(line))
        p.stick_table = self.check_stick_table(line, words)
        p.stick_table_words = words
        self.cfg.tables.append((p.name, tuple(line.words[1:]), p.stick_table, False))

    def kw_stick(self, p, line):
        if p.kind == "defaults":
            raise line.error("'stick' not allowed in 'defaults' section.")
        words, cond_words = split_condition(line.words[1:])
        if not words:
            raise line.error("'stick' expects 'on', 'match', 'store-request' or "
                             "'store-response'")
        kind = words[0]
        if kind not in ("on", "match", "store-request", "store-response"):
            raise line.error(f"'stick' expects 'on', 'match', 'store-request' or "
                             f"'store-response' (got '{kind}')")
        if len(words) < 2:
            raise line.error(f"'stick {kind}' expects a fetch method")
        expr = self.expression(line, words[1], f"stick {kind}",
                               response=(kind == "store-response"))
        table = None
        rest = words[2:]
        if rest:
            if rest[0] != "table" or len(rest) != 2:
                raise line.error(f"'stick {kind}' : unexpected word '{rest[0]}'")
            table = rest[1]
        cond = (self.condition(p, line, cond_words, response=(kind == "store-response"))
                if cond_words else None)
        p.stick_rules.append(m.StickRule(kind, expr, words[1], table, cond, _where(line)))
        self.table_refs.append((p, _where(line), table or p.name, f"stick {kind}", "stick"))

    # ACLs, rules ---------------------------------------------------------
    def kw_acl(self, p, line):
        if p.kind == "defaults" and not p.name:
            raise line.error("'acl' not allowed in anonymous 'defaults' section.")
        w = line.words
        if len(w) < 3:
            raise line.error("expects an ACL name and a fetch method")
        name = w[1]
        if not all(c.isalnum() or c in "-_.:" for c in name):
            raise line.error(f"invalid characters in ACL name '{name}'")
        try:
            expr = parse_acl_expr(w[2:], self._refs(p, line))
        except (AclError, SampleError) as e:
            raise line.error(f"error detected while parsing ACL '{name}' : {e}") from None
        p.acls.setdefault(name, Acl(name)).exprs.append(expr)

    def _refs(self, p, line) -> Refs:
        refs = Refs()
        refs.table_refs = _RefList(self, p, line)
        refs.where = (line.file, line.lineno)
        refs.vars = self.cfg.vars
        return refs

    def condition(self, p: m.Proxy, line: Line, cond_words: Sequence[str],
                  response: bool = False):
        refs = self._refs(p, line)
        refs.response = response
        try:
            cond = compile_condition(cond_words, p.acls, refs)
        except (AclError, SampleError) as e:
            raise line.error(f"error detected while parsing a '{' '.join(line.words[:2])}' "
                             f"condition : {e}") from None
        self.warn_unavailable_fetches(p, line, cond_words, response)
        return cond

    @staticmethod
    def unavailable(p: m.Proxy, name: str, response: bool) -> Optional[str]:
        """What fetch `name` needs that a rule of `p` does not have yet ('HTTP response',
        'server', 'backend'), or None. Response rules have them all; a request rule has
        the backend only in a backend or listen."""
        if response:
            return "HTTP request headers" if name in REQUEST_HEADER_FETCHES else None
        if name in RESPONSE_FETCHES:
            return "HTTP response"
        need = FETCH_NEEDS.get(name)
        if need == "backend" and p.kind != "frontend":
            return None
        return need

    def warn_unavailable_fetches(self, p: m.Proxy, line: Line, cond_words: Sequence[str],
                                 response: bool):
        """HAProxy warns when a condition uses data its rule runs before (never matches)."""
        for w in cond_words:
            w = w.lstrip("!")
            names = ([e.fetch for e in p.acls[w].exprs] if w in p.acls else
                     [w.split(",")[0].split("(")[0]])
            for name in names:
                if self.unavailable(p, name, response):
                    who = f"acl '{w}'" if w in p.acls else "anonymous acl"
                    kind = "backend" if p.kind == "backend" else "frontend"
                    rule = _RULE_NAMES.get(line.keyword, line.keyword)
                    within = ""
                    if line.keyword == "tcp-request":
                        rule = " ".join(line.words[:2])
                        within = f" in '{rule}'"
                    self.warn(line, f"{who} will never match{within} because it uses keyword "
                                    f"'{name}' which is incompatible with '{kind} {rule} rule'")
                    return

    def expression(self, line: Line, text: str, what: str, level: str = "http",
                   response: bool = False, p: Optional[m.Proxy] = None):
        try:
            expr = compile_expr(text, self._refs(p or self.proxy, line))
        except SampleError as e:
            raise line.error(f"'{what}' : {e}") from None
        name = expr.fetch.name
        if name in RESPONSE_FETCHES and not (response or level == "response"):
            raise line.error(f"'{what}' : fetch method '{text}' extracts information from "
                             "'HTTP response headers', none of which is available here")
        if level in ("connection", "session") and not (
                name in _L4_FETCHES or name in var_mod.NO_TRAFFIC_FETCHES or name.startswith((
                    "sc_", "sc0_", "sc1_", "sc2_", "src_", "table_"))):
            raise line.error(f"'{what}' : fetch method '{text}' extracts information from "
                             "'HTTP request headers', none of which is available here")
        return expr

    def kw_tcp_request(self, p, line):
        w = line.words
        level = _arg(line, 1, "'connection', 'session', 'content' or 'inspect-delay'")
        if level == "inspect-delay":
            p.tcp_request_inspect_delay_ms = _time(line, _arg(line, 2, "delay"),
                                                   "tcp-request inspect-delay", self.warnings)
            return
        if level not in ("connection", "session", "content"):
            raise line.error("'tcp-request' expects 'connection', 'session', 'content' or "
                             f"'inspect-delay' (got '{level}')")
        if level in ("connection", "session") and not p.has_frontend:
            raise line.error(f"tcp-request {level} is not allowed because backend {p.name} is "
                             "not a frontend")
        if p.kind == "defaults" and not p.name:
            raise line.error("'tcp-request' not allowed in anonymous 'defaults' section.")
        rule = self.parse_rule(p, line, w[2:], f"tcp-request {level}", level)
        getattr(p, f"tcp_request_{level}").append(rule)

    def kw_http_request(self, p, line):
        if p.kind == "defaults" and not p.name:
            raise line.error("'http-request' not allowed in anonymous 'defaults' section.")
        self.warn_if_unreachable(p.http_request, line)
        p.http_request.append(self.parse_rule(p, line, line.words[1:], "http-request", "http"))

    FINAL_ACTIONS = frozenset({"deny", "tarpit", "return", "reject", "allow", "redirect",
                               "use-service", "silent-drop"})

    def warn_if_unreachable(self, rules: list, line: Line):
        if rules and rules[-1].cond is None and rules[-1].action in self.FINAL_ACTIONS:
            self.warnings.append(f"{line.file}:{line.lineno}: '{line.keyword}': previous "
                                 f"'{line.keyword}' action is final and has no condition "
                                 "attached, further entries are NOOP.")

    def kw_redirect(self, p, line):
        """`redirect ...`: as `http-request redirect`, evaluated after the http-request
        rules (even after an `allow`)."""
        if p.kind == "defaults":
            raise line.error("'redirect' not allowed in 'defaults' section.")
        words, cond_words = split_condition(line.words[1:])
        rule = m.Rule("redirect", where=_where(line))
        rule.redirect = self.parse_redirect(p, line, words, "redirect", "redirect")
        self.check_log_format(p, line, rule.redirect["value"], "redirect")
        if cond_words:
            rule.cond = self.condition(p, line, cond_words)
        p.redirects.append(rule)

    def kw_monitor_uri(self, p, line):
        w = line.words
        if len(w) < 2:
            raise line.error("'monitor-uri' expects an URI.")
        if len(w) > 2:
            raise line.error(f"'monitor-uri' cannot handle unexpected argument '{w[2]}'.")
        p.monitor_uri = w[1]

    def kw_monitor(self, p, line):
        if p.kind == "defaults":
            raise line.error("'monitor' not allowed in 'defaults' section.")
        w = line.words
        if len(w) < 2 or w[1] != "fail":
            raise line.error("'monitor' only supports 'fail'.")
        if len(w) < 3 or w[2] not in ("if", "unless"):
            raise line.error("'monitor fail' requires either 'if' or 'unless' followed by a "
                             "condition.")
        p.monitor_fail.append(self.condition(p, line, w[2:]))

    def kw_http_response(self, p, line):
        if p.kind == "defaults" and not p.name:
            raise line.error("'http-response' not allowed in anonymous 'defaults' section.")
        self.warn_if_unreachable(p.http_response, line)
        p.http_response.append(self.parse_rule(p, line, line.words[1:], "http-response",
                                               "response"))

    AFTER_RESPONSE_ACTIONS = ("add-header", "allow", "capture", "del-header", "replace-header",
                              "replace-value", "set-header", "set-status", "strict-mode",
                              "set-var-fmt", "set-var", "unset-var")

    def kw_http_after_response(self, p, line):
        """Rules for every response, the ones produced here included (deny pages,
        errors, redirects), after the http-response rules."""
        if p.kind == "defaults" and not p.name:
            raise line.error("'http-after-response' not allowed in anonymous 'defaults' "
                             "section.")
        words = line.words[1:]
        action = words[0].split("(")[0] if words else ""
        if action not in self.AFTER_RESPONSE_ACTIONS:
            raise line.error("'http-after-response' expects 'ot-group', 'add-header', "
                             "'allow', 'capture', 'del-header', 'replace-header', "
                             "'replace-value', 'set-header', 'set-status', 'strict-mode', "
                             "'set-var-fmt(*)', 'set-var(*)', 'unset-var(*)', but got "
                             f"'{words[0] if words else ''}'.")
        self.warn_if_unreachable(p.http_after_response, line)
        if action == "strict-mode":     # rewrite failures never fail here: nothing to switch
            words_, cond_words = split_condition(words)
            if len(words_) != 2 or words_[1] not in ("on", "off"):
                raise line.error("'http-after-response strict-mode' expects 'on' or 'off'.")
            return
        p.http_after_response.append(self.parse_rule(p, line, words, "http-after-response",
                                                     "response"))

    def parse_rule(self, p: m.Proxy, line: Line, words: Sequence[str], where: str,
                   level: str) -> m.Rule:
        words, cond_words = split_condition(words)
        if not words:
            raise line.error(f"'{where}' expects an action")
        action = words[0]
        args = words[1:]
        rule = m.Rule(action, where=_where(line))
        ctx_what = f"{where} {action}"
        tcp = where.startswith("tcp-request")
        if action.startswith("track-sc"):
            slot_text = action[len("track-sc"):]
            if not slot_text.isdigit():
                raise line.error(f"'{where}': unknown action '{action}'")
            slot = int(slot_text)
            if slot > 2:
                raise line.error(f"error detected in {p.kind} '{p.name}' while parsing "
                                 f"'{where} {action}' rule : {slot} track-sc number exceeding 2 "
                                 "(MAX_SESS_STKCTR-1) value.")
            if not args:
                raise line.error(f"'{ctx_what}' expects a fetch method")
            expr = self.expression(line, args[0], ctx_what, level)
            table = None
            rest = args[1:]
            if rest:
                if rest[0] != "table" or len(rest) != 2:
                    raise line.error(f"'{ctx_what}' : unexpected word '{rest[0]}' (expects "
                                     "'table <name>')")
                table = rest[1]
            rule.action = "track-sc"
            rule.slot = slot
            rule.track = m.Track(slot, expr, args[0], table)
            self.table_refs.append((p, _where(line), table or p.name, f"track-sc{slot}",
                                    line.keyword))
        elif action in ("accept", "reject", "allow"):
            if action == "allow" and tcp:
                raise line.error(f"'{where}': unknown action 'allow'")
            if action == "accept" and not tcp:
                raise line.error(f"'{where}': unknown action 'accept'")
            if args:
                raise line.error(f"'{ctx_what}' does not take any argument (got '{args[0]}')")
        elif action in ("deny", "tarpit", "return") and not tcp:
            if action == "tarpit" and level == "response":
                raise line.error(f"'{where}': unknown action 'tarpit'")
            rule.reply = self.parse_reply(p, line, action, args, where)
        elif action == "deny" and tcp:
            raise line.error(f"'{where}': unknown action 'deny' (use 'reject')")
        elif action.startswith(("sc-inc-gpc", "sc-clr-gpc", "sc-set-gpt")):
            self.parse_sc_action(p, line, rule, action, args, where, level)
        elif action in ("set-src", "set-src-port", "set-dst", "set-dst-port") and (
                level != "response"):
            if len(args) != 1:
                raise line.error(f"'{ctx_what}' expects exactly 1 argument.")
            rule.value = self.expression(line, args[0], ctx_what, level, p=p)
        elif action.split("(")[0] in ("set-map", "del-map", "add-acl", "del-acl") and not tcp:
            base, paren, rest = action.partition("(")
            acl = base.endswith("acl")          # (HAProxy takes an empty ACL file name)
            if not paren or not rest.endswith(")") or not (rest[:-1] or acl):
                raise line.error(f"'{where} {base}' expects a file name between parentheses.")
            need = 2 if base == "set-map" else 1
            if acl and len(args) > need:
                raise line.error(f"'{where} {action}' expects either 'if' or 'unless' "
                                 f"followed by a condition but found '{args[need]}'.")
            if len(args) != need:
                raise line.error(f"error detected in {p.kind} '{p.name}' while parsing "
                                 f"'{ctx_what}' rule : expects exactly {need} "
                                 f"argument{'s' if need > 1 or acl else ''}.")
            for fmt in args:
                self.check_log_format(p, line, fmt, ctx_what)
            rule.header, rule.args = rest[:-1], tuple(args)   # the file, key [value] formats
            rule.value = (REGISTRY.acl_action_ref if acl else REGISTRY.action_ref)(rest[:-1])
        elif action == "silent-drop" and level != "response":
            if args:
                raise line.error(f"'{ctx_what}' does not expect any argument.")
        elif action == "set-status" and level == "response":
            err = f"error detected in {p.kind} '{p.name}' while parsing '{ctx_what}' rule : "
            code = args[0] if args else ""
            if not code.isdigit() or not 100 <= int(code) <= 999:
                raise line.error(err + "expects an integer status code between 100 and 999.")
            rule.status = int(code)
            if len(args) > 1:
                if args[1] != "reason" or len(args) != 3:
                    raise line.error(err + "expects 'reason' keyword followed by a reason.")
                rule.fmt = args[2]
        elif action in ("set-header", "add-header") and not tcp:
            if len(args) != 2:
                raise line.error(f"'{ctx_what}' expects exactly 2 arguments.")
            rule.header, rule.fmt = args[0], args[1]
            self.check_log_format(p, line, rule.fmt, ctx_what)
        elif action in REWRITE_ACTIONS and (where == "http-request" or action in (
                "replace-header", "replace-value")) and not tcp:
            # set-path/-pathq/-query/-uri/-method <fmt>; replace-path/-pathq/-uri <regex>
            # <fmt>; replace-header/-value <name> <regex> <fmt>
            need = REWRITE_ACTIONS[action]
            err = f"error detected in {p.kind} '{p.name}' while parsing '{ctx_what}' rule : "
            if len(args) != need:
                raise line.error(err + {1: "expects exactly 1 argument <format>.",
                                        2: "expects exactly 2 arguments <match-regex> and "
                                           "<replace-format>.",
                                        3: "expects exactly 3 arguments."}[need])
            if need == 3:
                rule.header, args = args[0], args[1:]
            if need > 1:
                try:
                    rule.regex = compile_regex(args[0])
                except AclError as e:
                    raise line.error(err + ("failed to parse the regex : " if need == 2 else "")
                                     + str(e) + ".") from None
            rule.fmt = args[-1]
            self.check_log_format(p, line, rule.fmt, ctx_what)
        elif action == "del-header" and not tcp:
            if not args:
                raise line.error(f"'{ctx_what}' expects at least 1 argument.")
            rule.header = args[0]
            rule.args = tuple(args[1:])
            if rule.args and (rule.args[0] != "-m" or len(rule.args) != 2 or
                              rule.args[1] not in ("str", "beg", "end", "sub", "reg")):
                raise line.error(f"'{ctx_what}' : expects an optional '-m <method>'")
        elif action == "redirect" and not tcp:
            rule.redirect = self.parse_redirect(p, line, args, ctx_what)
            self.check_log_format(p, line, rule.redirect["value"], ctx_what)
        elif action == "capture" and not tcp:
            # logging only: the expression and length are checked, the action does nothing
            if len(args) != 3 or args[1] not in ("len", "id") or not args[2].isdigit():
                raise line.error(f"'{ctx_what}' expects <expression> 'len' <length> or 'id' "
                                 "<idx>.")
            rule.value = self.expression(line, args[0], ctx_what, level)
            rule.args = tuple(args)
            rule.index, rule.slot = log_mod.capture_slot(p, line, args, level == "response",
                                                         ctx_what)
        elif action.split("(")[0] in var_mod.ACTIONS:
            rule.action, rule.var = self.parse_var_action(p, line, action, args, where, level)
        elif action == "auth" and not tcp and level == "http":
            rule.fmt = auth.parse_auth_action(line, p, args)     # the realm (None: default)
        elif action == ("cache-use" if level == "http" else "cache-store") and not tcp:
            cache_mod.parse_action(p, line, action, args, where, rule)
        elif action == "use-service" and not tcp and level == "http":
            if len(args) != 1:
                raise line.error(f"'{ctx_what}' expects a service name")
            if args[0] != "prometheus-exporter":
                raise line.error(f"'{ctx_what}' : unknown service '{args[0]}'")
            rule.service = args[0]
        elif action in stream_actions.ACTIONS and stream_actions.allowed(where, action):
            stream_actions.parse(self, p, line, rule, action, args, where)
        elif (action.split("(")[0] in HTTP_ACTIONS_KNOWN and not tcp) or (
                tcp and action.split("(")[0] in TCP_ACTIONS_KNOWN):
            raise line.error(f"'{where} {action}' is not supported by edgestick")
        else:
            if tcp:
                raise line.error(f"'{where}' expects 'accept', 'reject', 'track-sc0', "
                                 "'track-sc1', 'track-sc2', 'sc-inc-gpc0', 'sc-inc-gpc1', "
                                 f"'sc-set-gpt0' ... but got '{action}'")
            raise line.error(f"'{where}' expects 'allow', 'deny', 'tarpit', 'return', "
                             "'redirect', 'track-sc0', 'track-sc1', 'track-sc2', 'sc-inc-gpc0',"
                             " 'sc-inc-gpc1', 'sc-inc-gpc', 'sc-set-gpt0', 'set-header', "
                             f"'add-header', 'del-header' ... but got '{action}'.")
        if cond_words:
            rule.cond = self.condition(p, line, cond_words, response=(level == "response"))
            rule.cond_text = " ".join(cond_words)
        return rule

    def parse_var_action(self, p, line, action, args, where, level):
        """set-var(<scope>.<name>[,<cond>...]) <expr>, set-var-fmt(...) <fmt>,
        unset-var(<scope>.<name>): (action name, vars.VarAction)."""
        err = f"error detected in {p.kind} '{p.name}' while parsing '{where} {action}' rule : "
        try:
            kind, scope, name, conds = var_mod.parse_action_word(action)
        except var_mod.VarError as e:
            raise line.error(err + f"{e}" + ("" if str(e).endswith(".") else ".")) from None
        self.cfg.vars.mention(scope, name)
        need = 0 if kind == "unset-var" else 1
        if len(args) > need:
            raise line.error(f"'{where} {action}' expects either 'if' or 'unless' followed by "
                             f"a condition but found '{args[need]}'.")
        act = var_mod.VarAction(kind, scope, name, conds)
        if kind == "set-var":
            if not args:
                raise line.error(err + "missing fetch method.")
            act.expr = self.expression(line, args[0], f"{where} {action}",
                                       "response" if level == "response" else level,
                                       response=(level == "response"), p=p)
        elif kind == "set-var-fmt":
            act.fmt = args[0] if args else ""
            self.check_log_format(p, line, act.fmt, f"{where} {action}")
        return kind, act

    def parse_global_set_var(self, line: Line):
        """`set-var proc.<name> <expr>` / `set-var-fmt proc.<name> <fmt>` in global:
        evaluated once, now (expressions that need no traffic)."""
        kw, w = line.keyword, line.words
        if len(w) != 3:
            raise line.error(f"'{kw}' expects a variable name and an "
                             f"{'expression' if kw == 'set-var' else 'format string'}.")
        try:
            scope, name = var_mod.parse_name(w[1])
        except var_mod.VarError as e:
            raise line.error(f"{e}.") from None
        if scope != "proc":
            raise line.error(f"'{kw}': cannot set variable '{w[1]}', only scope 'proc' is "
                             "supported in the global section.")
        refs = Refs()
        refs.vars = self.cfg.vars
        try:
            if kw == "set-var":
                expr = compile_expr(w[2], refs)
                fetches = [expr.fetch.name]

                def value_of(ctx):
                    v = expr(ctx)
                    return None if v is None else var_mod.typed(v, expr.out)
            else:
                from .frontend import log_format
                fetches = [compile_expr(t, refs).fetch.name
                           for t in re.findall(r"%\[([^\]]+)\]", w[2])]
                value_of = lambda ctx: log_format(w[2], ctx)  # noqa: E731
        except SampleError as e:
            raise line.error(f"failed to parse sample expression : {e}.") from None
        for f in fetches:
            if f not in var_mod.NO_TRAFFIC_FETCHES:
                raise line.error(f"fetch method '{kw}({w[1]})' extracts information from "
                                 f"'{f}', none of which is available here")
        var_mod.global_set(self.cfg.vars, kw, scope, name, value_of)

    def check_log_format(self, p: m.Proxy, line: Line, text: str, what: str):
        """Compile the `%[expr]` parts of a log-format string now, so a bad fetch is a
        configuration error (the engine renders the string per request)."""
        i = 0
        while True:
            i = text.find("%", i)
            if i < 0 or i + 1 >= len(text):
                return
            j = i + 1
            if text[j] == "%":
                i = j + 1
                continue
            if text[j] == "{":
                k = text.find("}", j)
                if k < 0:
                    raise line.error(f"error detected in {p.kind} '{p.name}' while parsing "
                                     f"'{what}' rule : missing '}}' in log-format '{text}'.")
                j = k + 1
            if j < len(text) and text[j] == "[":
                end = text.find("]", j)
                if end < 0:
                    raise line.error(f"error detected in {p.kind} '{p.name}' while parsing "
                                     f"'{what}' rule : missing ']' after '{text[j + 1:]}'.")
                expr = text[j + 1:end]
                try:
                    compiled = compile_expr(expr, self._refs(p, line))
                except SampleError as e:
                    raise line.error(f"error detected in {p.kind} '{p.name}' while parsing "
                                     f"'{what}' rule : failed to parse sample expression "
                                     f"<{expr}> : {e}.") from None
                need = self.unavailable(p, compiled.fetch.name,
                                        what.startswith(("http-response", "http-after-response")))
                if need:
                    raise line.error(f"error detected in {p.kind} '{p.name}' while parsing "
                                     f"'{what}' rule : sample fetch <{text[j + 1:]}> may not be "
                                     f"reliably used here because it needs '{need}' which is "
                                     "not available here.")
                i = end + 1
            else:
                i = j

    def parse_sc_action(self, p, line, rule, action, args, where, level):
        base, paren, rest = action.partition("(")
        if base not in ("sc-inc-gpc0", "sc-inc-gpc1", "sc-inc-gpc", "sc-clr-gpc0",
                        "sc-clr-gpc1", "sc-clr-gpc", "sc-set-gpt0", "sc-set-gpt"):
            raise line.error(f"'{where}': unknown action '{action}'")
        if not paren or not rest.endswith(")"):
            raise line.error(f"'{where} {action}' : missing stick counter ID, "
                             f"expects '{base}(<sc-id>)'")
        inner = [x.strip() for x in rest[:-1].split(",")]
        arrays = base in ("sc-inc-gpc", "sc-clr-gpc", "sc-set-gpt")
        if arrays:
            if len(inner) != 2 or not inner[0].isdigit():
                raise line.error(f"'{where} {action}' : expects '{base}(<idx>,<sc-id>)'")
            idx = int(inner[0])
            if idx >= 100:
                raise line.error(f"'{where} {action}' : invalid array index '{idx}' (max 99)")
            rule.index = idx
            sc = inner[1]
        else:
            if len(inner) != 1:
                raise line.error(f"'{where} {action}' : expects '{base}(<sc-id>)'")
            sc = inner[0]
        if not sc.isdigit():
            raise line.error(f"'{where} {action}' : invalid stick table track ID '{sc}'")
        if int(sc) > 2:
            raise line.error(f"error detected in {p.kind} '{p.name}' while parsing '{where} "
                             f"{action}' rule : invalid stick table track ID. The max allowed ID "
                             "is 2.")
        rule.slot = int(sc)
        rule.action = base
        if base.startswith("sc-set-gpt"):
            if len(args) != 1:
                raise line.error(f"'{where} {action}' expects exactly one value or expression")
            try:
                rule.value = int(args[0])
            except ValueError:
                rule.value = self.expression(line, args[0], f"{where} {action}", level)
        elif args:
            raise line.error(f"'{where} {action}' does not take any argument (got '{args[0]}')")

    def parse_reply(self, p, line, action, args, where) -> m.Reply:
        """deny/tarpit/return options, with HAProxy's checks on status and payload."""
        status = 200 if action == "return" else (500 if action == "tarpit" else 403)
        reply = m.Reply(status)
        i = 0
        what = f"{where} {action}"
        while i < len(args):
            a = args[i]

            def val(name=a):
                if i + 1 >= len(args):
                    raise line.error(f"error detected in {p.kind} '{p.name}' while parsing "
                                     f"'{what}' rule : '{name}' expects <value> as argument.")
                return args[i + 1]
            if a in ("deny_status", "status"):
                if a == "deny_status" and action == "return":
                    raise line.error(f"'{what}' : unknown keyword 'deny_status'")
                v = val()
                if not v.isdigit() or not 200 <= int(v) <= 599:
                    raise line.error(f"error detected in {p.kind} '{p.name}' while parsing "
                                     f"'{what}' rule : Unexpected status code '{v}'.")
                reply.status = int(v)
                i += 2
            elif a == "content-type":
                reply.content_type = val()
                i += 2
            elif a == "default-errorfiles":
                reply.body_kind = a
                i += 1
            elif a in ("errorfile", "errorfiles", "file", "lf-file", "string", "lf-string"):
                if reply.body_kind is not None:
                    raise line.error(f"'{what}' : only one payload option may be set")
                v = val()
                reply.body_kind = a
                if a == "errorfile":
                    reply.body = read_errorfile(line, v)
                elif a in ("file", "lf-file"):
                    try:
                        with open(v, encoding="latin-1") as f:
                            reply.body = f.read()
                    except OSError as e:
                        raise line.error(f"'{what}' : cannot read file '{v}': "
                                         f"{e.strerror}") from None
                elif a == "errorfiles":
                    reply.body = v          # the section's name (resolved in finish_proxy)
                    self.reply_sections.append((reply, v, _where(line)))
                else:
                    reply.body = v
                i += 2
            elif a == "hdr":
                if i + 2 >= len(args):
                    raise line.error(f"error detected in {p.kind} '{p.name}' while parsing "
                                     f"'{what}' rule : 'hdr' expects <name> and <value> as "
                                     "arguments.")
                reply.headers.append((args[i + 1], args[i + 2]))
                i += 3
            else:
                raise line.error(f"error detected in {p.kind} '{p.name}' while parsing "
                                 f"'{what}' rule : unknown keyword '{a}'.")
        if reply.body_kind in ("lf-string", "lf-file") and reply.body:
            self.check_log_format(p, line, reply.body, what)
        for _, fmt in reply.headers:
            self.check_log_format(p, line, fmt, what)
        rule_err = f"error detected in {p.kind} '{p.name}' while parsing '{what}' rule : "
        if reply.body_kind in ("string", "lf-string") and reply.body == "":
            raise line.error(f"{rule_err}'{reply.body_kind}' expects <str> as argument.")
        if reply.body_kind in ("lf-string", "lf-file") and not reply.content_type:
            raise line.error(f"{rule_err}a content type must be defined with a log-format "
                             "payload.")
        if reply.body_kind in ("string", "file") and reply.body and not reply.content_type:
            raise line.error(f"{rule_err}a content type must be defined when non-empty payload "
                             "is configured.")
        errorfile = reply.body_kind in ("errorfile", "default-errorfiles") or (
            reply.body_kind is None and action != "return")
        if errorfile and reply.content_type:
            self.warn(line, f"content-type '{reply.content_type}' ignored by the http reply "
                            "because neither errorfile nor payload defined."
                      if reply.body_kind is None else
                      f"content-type '{reply.content_type}' ignored by the http reply when "
                      "used with an errorfile.")
        if reply.body_kind in ("errorfile", "default-errorfiles") and reply.headers:
            self.warn(line, "hdr parameters ignored by the http reply when used with an "
                            "errorfile.")
        if errorfile and reply.body_kind != "errorfile":
            if reply.status not in DEFAULT_ERROR_STATUSES:
                raise line.error(f"error detected in {p.kind} '{p.name}' while parsing '{what}' "
                                 f"rule : status code '{reply.status}' not handled by default "
                                 "with 'default-errorfiles' argument..")
        return reply

    def parse_redirect(self, p, line: Line, args: Sequence[str], what: str,
                       label: str | None = None) -> dict:
        """`redirect` options in any order, as HAProxy reads them (a repeated one: the
        last wins); its messages (`label`: how they name the rule, '<what>' if None)."""
        err = (f"error detected in {p.kind} '{p.name}' while parsing "
               f"{label or repr(what)} rule : ")
        r = {"type": None, "value": None, "code": 302, "drop_query": False,
             "append_slash": False, "set_cookie": None, "clear_cookie": None}
        i = 0
        while i < len(args):
            a = args[i]
            if a in ("location", "prefix", "scheme", "code", "set-cookie", "clear-cookie"):
                if i + 1 >= len(args):
                    raise line.error(err + f"missing argument for '{a}'.")
                v = args[i + 1]
                if a == "code":
                    if v not in ("301", "302", "303", "307", "308"):
                        raise line.error(err + f"'code': unsupported HTTP code '{v}' (must be "
                                         "one of 301, 302, 303, 307 or 308).")
                    r["code"] = int(v)
                elif a in ("set-cookie", "clear-cookie"):
                    r[a.replace("-", "_")] = v
                else:
                    r["type"], r["value"] = a, v
                i += 2
            elif a in ("drop-query", "append-slash"):
                r[a.replace("-", "_")] = True
                i += 1
            elif a == "ignore-empty":
                raise line.error(f"'{what}': 'ignore-empty' is not supported by edgestick")
            else:
                raise line.error(err + "expects 'code', 'prefix', 'location', 'scheme', "
                                 "'set-cookie', 'clear-cookie', 'drop-query', 'ignore-empty' or "
                                 "'append-slash'")
        if r["type"] is None:
            raise line.error(err + "redirection type expected ('prefix', 'location', or "
                             "'scheme').")
        return r

    # misc accepted keywords ----------------------------------------------
    def kw_ignored(self, p, line):
        pass

    def kw_description(self, p, line):
        p.description = " ".join(line.words[1:])

    def kw_id(self, p, line):
        if p.kind == "defaults":
            raise line.error("'id' not allowed in 'defaults' section")
        p.id = _int(line, _arg(line, 1, "id value"), "id", 1)

    def kw_disabled(self, p, line):
        p.disabled = True

    def kw_enabled(self, p, line):
        p.disabled = False

    def kw_stats(self, p, line):
        stats_page.parse_line(self, p, line, _where(line))

    # error pages: errorfile, errorloc*, errorfiles and http-errors sections. A proxy's
    # lines apply in order (the last one for a status wins, as in HAProxy), sections by
    # name once the whole configuration is read (finish_proxy)
    def kw_errorfile(self, p, line):
        code = _arg(line, 1, "status code")
        path = _arg(line, 2, "file")
        if not code.isdigit() or int(code) not in DEFAULT_ERROR_STATUSES:
            raise line.error(f"status code '{code}' cannot be customized")
        p.errorfile_refs.append((int(code), read_errorfile(line, path)))

    def kw_tcp_check(self, p, line):
        """`tcp-check` steps, run by `option tcp-check` health checks (proxy/tcp_check.py)."""
        p.tcp_checks.append(tcp_check.parse_line(line, line.words[1:]))

    def kw_http_reuse(self, p, line):
        mode = line.words[1] if len(line.words) > 1 else ""
        if mode not in ("never", "safe", "aggressive", "always"):
            raise line.error("'http-reuse' only supports 'never', 'safe', 'aggressive', "
                             "'always'.")
        p.http_reuse = mode

    def kw_errorloc(self, p, line):
        kw = line.keyword
        if len(line.words) < 3:
            raise line.error(f"{kw} : expects <status_code> and <url> as arguments.")
        code = line.words[1]
        if not code.isdigit() or int(code) not in DEFAULT_ERROR_STATUSES:
            raise line.error(f"{kw} : status code '{code}' not handled.")
        redirect = 303 if kw == "errorloc303" else 302
        p.errorfile_refs.append((int(code), http1.ErrorPage.redirect(redirect, line.words[2])))

    def kw_errorfiles(self, p, line):
        if len(line.words) < 2:
            raise line.error("errorfiles : expects <name> as argument.")
        codes = []
        for c in line.words[2:]:
            if not c.isdigit() or int(c) not in DEFAULT_ERROR_STATUSES:
                raise line.error(f"errorfiles : status code '{c}' not handled.")
            codes.append(int(c))
        p.errorfile_refs.append((line.words[1], tuple(codes), _where(line)))

    def open_http_errors(self, line: Line):
        if len(line.words) < 2:
            raise line.error("missing name for http-errors section.")
        name = line.words[1]
        if name in self.cfg.http_errors:
            raise line.error(f"http-errors section '{name}' already exists (declared at "
                             f"{self.cfg.http_errors[name][0]}).")
        self.cfg.http_errors[name] = (_where(line), {})
        self.http_errors_name = name

    # resolvers sections: checked and named, not run (a server's name is resolved once,
    # at start, as HAProxy does without them; the warning says so)
    RESOLVERS_KEYWORDS = {"nameserver": 2, "parse-resolv-conf": 0, "accepted_payload_size": 1,
                          "resolve_retries": 1, "timeout": 2, "hold": 2,
                          "resolution_pool_size": 1}

    def open_resolvers(self, line: Line):
        if len(line.words) < 2:
            raise line.error("missing name for resolvers section.")
        name = line.words[1]
        if name in self.cfg.resolvers:
            raise line.error(f"resolvers section '{name}' has the same name as another "
                             f"resolvers section declared at {self.cfg.resolvers[name]}.")
        self.cfg.resolvers[name] = _where(line)
        self.warn(line, f"resolvers section '{name}' has no effect in edgestick: server "
                        "names are resolved once, at start")

    def resolvers_line(self, line: Line):
        kw = line.keyword
        need = self.RESOLVERS_KEYWORDS.get(kw)
        if need is None:
            raise line.error(f"unknown keyword '{kw}' in 'resolvers' section")
        if len(line.words) - 1 < need:
            if kw == "nameserver":
                raise line.error("'nameserver' expects <name> and <addr>[:<port>] as "
                                 "arguments.")
            raise line.error(f"'{kw}' expects {need} argument{'s' if need > 1 else ''}.")
        if kw in ("timeout", "hold"):
            _time(line, line.words[2], f"{kw} {line.words[1]}", self.warnings)

    def http_errors_line(self, line: Line):
        if line.keyword != "errorfile":
            raise line.error(f"unknown keyword '{line.keyword}' in 'http-errors' section")
        code = _arg(line, 1, "status code")
        if not code.isdigit() or int(code) not in DEFAULT_ERROR_STATUSES:
            raise line.error(f"errorfile : status code '{code}' not handled.")
        self.cfg.http_errors[self.http_errors_name][1][int(code)] = \
            read_errorfile(line, _arg(line, 2, "file"))

    def resolve_error_pages(self, p: m.Proxy):
        """p.errorfiles from its lines in order (an http-errors section's pages where it
        was named)."""
        pages: dict = {}
        for ref in p.errorfile_refs:
            if isinstance(ref[0], int):
                pages[ref[0]] = ref[1]
                continue
            name, codes, where = ref
            section = self.cfg.http_errors.get(name)
            if section is None:
                raise ConfigError(f"proxy '{p.name}': unknown http-errors section '{name}' "
                                  f"(at {where}).", where.file, where.line, "errorfiles")
            for code in codes or section[1]:
                if code not in section[1]:
                    self.warnings.append(f"config: proxy '{p.name}' : status '{code}' not "
                                         f"declared in http-errors section '{name}' (at "
                                         f"{where}).")
                    continue
                pages[code] = section[1][code]
        p.errorfiles = pages

    # ------------------------------------------------------------------ checks
    def finish(self):
        cfg = self.cfg
        self.cache_sections.close()
        cache_mod.check(cfg, self.cache_sections.caches)
        for p in cfg.proxies:
            self.finish_proxy(p)
        for reply, name, where in self.reply_sections:     # `deny|return ... errorfiles N`
            section = cfg.http_errors.get(name)
            if section is None:
                raise ConfigError(f"unknown http-errors section '{name}' (at {where}).",
                                  where.file, where.line, "errorfiles")
            reply.body = section[1].get(reply.status)      # None: the default page
        server_health.finish(cfg, self.warnings)
        self.check_peers()
        self.check_table_refs()
        auth.finish(cfg, cfg.userlists)
        stats_page.finish(cfg, self.warnings)
        compression.finish(cfg)
        log_mod.finish(cfg, self.warnings)
        request_body.finish(cfg, self.warnings)
        stream_actions.finish(cfg)
        if cfg.vars.used:          # contexts of every frontend carry variable scopes
            for p in cfg.frontends.values():
                p.vars = cfg.vars

    def finish_proxy(self, p: m.Proxy):
        self.resolve_error_pages(p)
        for srv in p.servers:
            if srv.resolvers is not None and srv.resolvers not in self.cfg.resolvers:
                raise ConfigError(f"backend '{p.name}', server '{srv.name}': unable to find "
                                  f"required resolvers '{srv.resolvers}'", srv.where.file,
                                  srv.where.line, "server")
        # server ids: explicit ones first, then the free numbers by position
        used = {s.id for s in p.servers if s.explicit_id}
        if len(used) != sum(1 for s in p.servers if s.explicit_id):
            seen = set()
            for s in p.servers:
                if s.explicit_id:
                    if s.id in seen:
                        raise ConfigError(f"server '{s.name}' has the same id {s.id} as another "
                                          f"server of backend '{p.name}'", s.where.file,
                                          s.where.line, "server")
                    seen.add(s.id)
        nxt = 1         # (HAProxy's counter moves on past every server, numbered or not)
        for s in p.servers:
            if not s.explicit_id:
                while nxt in used:
                    nxt += 1
                s.id = nxt
                used.add(nxt)
            nxt += 1
        if p.has_frontend:
            names = [p.default_backend] if p.default_backend else []
            for ub in p.use_backends:
                if ub.backend not in self.cfg.backends and "%[" not in ub.backend:
                    raise ConfigError(f"Proxy '{p.name}': unable to find required use_backend: "
                                      f"'{ub.backend}'.", ub.where.file, ub.where.line,
                                      "use_backend")
            for name in names:
                if name not in self.cfg.backends:
                    w = p.default_backend_where
                    raise ConfigError(f"Proxy '{p.name}': unable to find required "
                                      f"default_backend: '{name}'.", w.file, w.line,
                                      "default_backend")
                self.check_modes(p, self.cfg.backends[name], p.default_backend_where,
                                 "default_backend", "as its default backend")
            for ub in p.use_backends:
                be = self.cfg.backends.get(ub.backend)
                if be is not None:
                    self.check_modes(p, be, ub.where, "use_backend", "in a 'use_backend' rule")
            if p.binds and p.mode != "http" and (p.http_request or p.http_response):
                self.warnings.append(f"{p.where}: '{p.kind}': 'http-request' rules ignored for "
                                     f"{p.kind} '{p.name}' as they require HTTP mode.")
            if p.binds and p.mode == "http":
                for r in p.tcp_request_content:
                    if r.action == "track-sc" and r.track.expr.fetch.name in _L4_FETCHES:
                        self.warnings.append(
                            f"{r.where}: 'tcp-request': {p.kind} '{p.name}' : a 'tcp-request "
                            "content track-sc*' rule not depending on request contents for an "
                            "HTTP frontend should be executed at the session level, using a "
                            "'tcp-request session' rule (mandatory to track invalid HTTP "
                            "requests).")
                        break
        if p.has_backend and p.mode != "http" and p.balance in ("uri", "url_param", "hdr"):
            # no HTTP request to hash in a TCP stream
            self.warnings.append(f"{p.where}: 'balance': Layer 7 hash not possible for proxy "
                                 f"'{p.name}' (needs 'mode http'). Falling back to round robin.")
            p.balance = "roundrobin"
        if p.cookie is not None and p.mode != "http":
            self.warnings.append(f"{p.cookie.where}: 'cookie': cookie will be ignored for "
                                 f"{p.kind} '{p.name}' (needs 'mode http').")
        missing = []
        if p.has_frontend and p.binds and "client" not in p.timeouts:
            missing = ["client"]
        if p.has_backend and p.servers and ("connect" not in p.timeouts or
                                            "server" not in p.timeouts):
            missing = ["client", "connect", "server"]
        if missing and p.mode in ("http", "tcp"):
            self.warnings.append(f"{p.where}: '{p.kind}': missing timeouts for {p.kind} "
                                 f"'{p.name}'. While not properly invalid, you will certainly "
                                 "encounter various problems with such a configuration. To fix "
                                 "this, please ensure that all following timeouts are set to a "
                                 "non-zero value: 'client', 'connect', 'server'.")
        if p.stick_table is not None and p.stick_table.peers is not None:
            name = p.stick_table.peers
            if name not in self.cfg.peers:
                w = p.stick_table_words.where
                raise ConfigError(f"Proxy '{p.name}': unable to find sync peers '{name}'.",
                                  w.file, w.line, "stick-table")

    @staticmethod
    def check_modes(fe: m.Proxy, be: m.Proxy, where: m.Where, kw: str, how: str):
        if fe.mode == "http" and be.mode != "http":
            raise ConfigError(f"http {fe.kind} '{fe.name}' ({fe.where}) tries to use "
                              f"incompatible {be.mode} backend '{be.name}' ({be.where}) {how} "
                              "(see 'mode').", where.file, where.line, kw)
        if fe.mode == "tcp" and be.mode != "tcp":
            # HAProxy upgrades such a stream to HTTP; edgestick does not
            raise ConfigError(f"tcp {fe.kind} '{fe.name}' ({fe.where}) uses {be.mode} backend "
                              f"'{be.name}' ({be.where}) {how}: upgrading a TCP stream to "
                              "HTTP is not supported by edgestick (see 'mode').",
                              where.file, where.line, kw)

    def check_peers(self):
        local = self.localpeer or self.cfg.global_.localpeer or socket.gethostname()
        for sec in self.cfg.peers.values():
            if sec.peer(local) is None and not sec.disabled:
                self.warnings.append(f"{sec.where}: 'peers': Removing incomplete section "
                                     f"'peers {sec.name}' (no peer named '{local}').")

    def check_table_refs(self):
        tables = set(self.cfg.table_names())
        for p, where, table, user, keyword in self.table_refs:
            if table not in tables:
                if user.startswith("stick"):
                    msg = (f"Proxy '{p.name}': unable to find stick-table '{table}'.")
                else:
                    msg = (f"Proxy '{p.name}': unable to find table '{table}' referenced by "
                           f"{user}.")
                raise ConfigError(msg, where.file, where.line, keyword)


# HAProxy's names of the rule sets, in its configuration warnings
_RULE_NAMES = {"http-request": "http-request header", "http-response": "http-response header",
               "http-after-response": "http-response header", "use_backend": "use-backend"}


def _without_id(opts: list) -> list:
    """Server options without `id N` (an `id` that is not another option's value)."""
    out, i = [], 0
    while i < len(opts):
        if opts[i] == "id" and not (out and out[-1] in SERVER_VALUED):
            i += 2
            continue
        out.append(opts[i])
        i += 1
    return out


class _RefList(list):
    """Table names referenced by fetches, recorded with the proxy and line using them."""

    def __init__(self, parser: Parser, proxy: m.Proxy, line: Line):
        super().__init__()
        self.parser, self.proxy, self.line = parser, proxy, line

    def append(self, item):
        name, fetch = item
        self.parser.table_refs.append((self.proxy, _where(self.line), name or self.proxy.name,
                                       fetch, self.line.keyword))


BIND_FLAGS = {"ssl", "accept-proxy", "v4v6", "v6only", "transparent", "defer-accept", "tfo",
              "strict-sni", "no-sslv3", "no-tlsv10", "no-tlsv11", "no-tlsv12", "no-tlsv13",
              "force-tlsv12", "force-tlsv13", "allow-0rtt", "prefer-client-ciphers",
              "no-ca-names", "no-tls-tickets", "generate-certificates", "quic-force-retry",
              "ssl-reuse", "tls-tickets", "expose-fd"}
BIND_VALUED = {"crt", "crt-list", "alpn", "name", "maxconn", "backlog", "mode", "level", "id",
               "interface", "mss", "nice", "process", "thread", "uid", "gid", "user", "group",
               "ciphers", "ciphersuites", "ca-file", "verify", "curves", "ecdhe", "ssl-min-ver",
               "ssl-max-ver", "npn", "crl-file", "namespace", "severity-output", "tcp-ut",
               "accept-netscaler-cip", "sigalgs", "client-sigalgs", "ca-verify-file"}
# `option` words accepted, but the engine does not change its behaviour for them: warned
OPTIONS_NO_EFFECT = {"checkcache", "http-pretend-keepalive", "prefer-last-server", "srvtcpka",
                     "clitcpka", "tcpka", "tcp-smart-accept", "tcp-smart-connect",
                     "idle-close-on-response", "nolinger", "splice-auto",
                     "splice-request", "splice-response", "independent-streams",
                     "http-no-delay", "transparent", "disable-h2-upgrade",
                     "h1-case-adjust-bogus-client", "h1-case-adjust-bogus-server",
                     "http-restrict-req-hdr-names", "accept-invalid-http-request",
                     "accept-invalid-http-response", "http-use-proxy-header"}

# bind options edgestick cannot honour (on-the-fly certificates, CRLs...)
BIND_UNSUPPORTED = {"accept-netscaler-cip", "generate-certificates", "npn",
                    "quic-force-retry", "ca-verify-file", "crl-file", "ca-sign-file",
                    "ca-sign-pass", "ca-ignore-err", "crt-ignore-err"}
# bind options without effect here (socket tuning, names, unix socket owners, old TLS
# versions Python's ssl refuses anyway): accepted with a warning
BIND_NO_EFFECT = {"name", "id", "nice", "process", "thread", "interface", "mss", "tfo",
                  "defer-accept", "transparent", "namespace", "maxconn", "mode", "level",
                  "uid", "gid", "user", "group", "severity-output", "tcp-ut", "no-ca-names",
                  "prefer-client-ciphers", "ssl-reuse", "tls-tickets", "allow-0rtt",
                  "strict-sni", "expose-fd", "curves", "ecdhe", "sigalgs", "client-sigalgs",
                  "ciphersuites"}

# Server options without an argument; SERVER_FLAGS: the ones that set a Server attribute
# (those in SERVER_UNSUPPORTED are refused before, the rest are accepted as they are).
SERVER_FLAGS = {"check": ("check", True), "no-check": ("check", False),
                "backup": ("backup", True), "no-backup": ("backup", False),
                "disabled": ("disabled", True), "enabled": ("disabled", False),
                "non-stick": ("non_stick", True), "stick": ("non_stick", False),
                "ssl": ("ssl", True), "no-ssl": ("ssl", False),
                "check-ssl": ("check_ssl", True), "no-check-ssl": ("check_ssl", False),
                "send-proxy": ("send_proxy", 1), "send-proxy-v2": ("send_proxy", 2),
                "no-send-proxy": ("send_proxy", 0), "no-send-proxy-v2": ("send_proxy", 0),
                "check-send-proxy": ("check_send_proxy", True),
                "agent-check": ("agent_check", True), "no-agent-check": ("agent_check", False)}
# server TLS options with a value -> outbound.ServerTls attribute
SERVER_TLS_VALUED = {"verify": "verify", "ca-file": "ca_file", "crt": "crt", "sni": "sni",
                     "verifyhost": "verifyhost", "alpn": "alpn", "ssl-min-ver": "min_ver",
                     "ssl-max-ver": "max_ver", "ciphers": "ciphers"}
SERVER_SWITCHES = set(SERVER_FLAGS) | {
    "send-proxy", "send-proxy-v2", "ssl", "check-send-proxy", "check-ssl", "no-ssl",
    "agent-check", "no-agent-check", "tfo", "allow-0rtt", "no-send-proxy", "no-tfo",
    "check-via-socks4", "no-check-ssl", "ssl-reuse", "no-ssl-reuse", "tls-tickets",
    "no-tls-tickets", "force-sslv3", "force-tlsv10", "force-tlsv11", "force-tlsv12",
    "force-tlsv13", "no-sslv3", "no-tlsv10", "no-tlsv11", "no-tlsv12", "no-tlsv13"}
SERVER_VALUED = {"inter", "fastinter", "downinter", "rise", "fall", "weight", "cookie", "id",
                 "maxconn", "maxqueue", "minconn", "port", "addr", "slowstart", "sni", "verify",
                 "ca-file", "crt", "alpn", "check-sni", "check-alpn", "resolvers",
                 "resolve-prefer", "init-addr", "observe", "error-limit", "on-error",
                 "on-marked-down", "on-marked-up", "agent-port", "agent-inter", "agent-addr",
                 "agent-send", "pool-max-conn", "pool-purge-delay", "max-reuse", "source",
                 "track", "redir", "ciphers", "ciphersuites", "ssl-min-ver", "ssl-max-ver",
                 "proto", "namespace", "tcp-ut", "socks4", "shard", "log-proto",
                 "resolve-net", "resolve-opts", "check-proto", "proxy-v2-options",
                 "ws", "usesrc", "verifyhost", "crl-file", "curves", "sigalgs"}

# server options that change the wire protocol (TLS, PROXY protocol, h2, tracking another
# server, redirects, agents): refused rather than silently dropped
SERVER_UNSUPPORTED = {"crl-file", "check-sni", "check-alpn",
                      "proxy-v2-options", "proto", "ws", "socks4",
                      "check-via-socks4", "redir", "usesrc", "source",
                      "ciphersuites", "allow-0rtt", "force-sslv3", "force-tlsv10", "force-tlsv11",
                      "force-tlsv12", "force-tlsv13", "curves", "sigalgs", "check-proto"}
# options that only tune load, queues, DNS or logs: accepted with a warning
SERVER_NO_EFFECT = {"maxqueue", "minconn", "non-stick", "init-addr", "resolvers",
                    "resolve-prefer", "resolve-net", "resolve-opts", "pool-max-conn",
                    "pool-purge-delay", "max-reuse", "tfo", "namespace", "tcp-ut", "shard",
                    "log-proto"}

# http-request actions that rewrite the request: how many arguments each takes
REWRITE_ACTIONS = {"set-path": 1, "set-pathq": 1, "set-query": 1, "set-uri": 1, "set-method": 1,
                   "replace-path": 2, "replace-pathq": 2, "replace-uri": 2,
                   "replace-header": 3, "replace-value": 3}

HTTP_ACTIONS_KNOWN = {"wait-for-handshake", "set-log-level", "set-nice", "send-spoe-group",
                      "auth", "disable-l7-retry", "early-hint",
                      "normalize-uri", "replace-header", "replace-value",
                      "strict-mode", "set-timeout", "wait-for-body",
                      "set-mark", "set-tos", "set-priority-class", "set-priority-offset",
                      "do-resolve"}
TCP_ACTIONS_KNOWN = {"expect-proxy", "expect-netscaler-cip", "capture",
                     "set-mark", "set-tos", "set-log-level",
                     "switch-mode", "use-service", "do-resolve", "set-priority-class",
                     "set-priority-offset", "send-spoe-group", "attach-srv"}

UNSUPPORTED_PROXY_KEYWORDS = {
    "rate-limit", "email-alert", "dispatch", "source",
    "external-check", "persist", "http-error",
    "use-server",
    "max-keep-alive-queue",
    "http-send-name-header", "orgto", "appsession", "rspadd", "reqadd", "block", "reqrep",
    "rsprep", "reqdel", "rspdel", "reqallow", "reqdeny", "reqtarpit", "reqpass", "reqirep",
    "reqidel", "reqiallow", "reqideny", "reqitarpit", "reqipass", "rspdeny", "rspidel",
    "rspideny", "rspirep", "bind-process", "clitcpka-cnt", "clitcpka-idle", "clitcpka-intvl",
    "srvtcpka-cnt", "srvtcpka-idle", "srvtcpka-intvl", "log-format-sd", "error-log-format",
    "guid", "hash-key",
}

# keyword -> (capability, handler). Capability: "any"; "fe"/"be" warn and ignore when the
# proxy lacks it; "fe!"/"be!" are errors then (as HAProxy does for each keyword).
PROXY_KEYWORDS: dict[str, tuple[str, Callable]] = {
    "bind": ("fe", Parser.kw_bind),
    "mode": ("any", Parser.kw_mode),
    "maxconn": ("any", Parser.kw_maxconn),
    "fullconn": ("any", Parser.kw_fullconn),
    "backlog": ("fe", Parser.kw_ignored),
    "timeout": ("any", Parser.kw_timeout),
    "default_backend": ("fe", Parser.kw_default_backend),
    "use_backend": ("fe", Parser.kw_use_backend),
    "retries": ("be", Parser.kw_retries),
    "balance": ("be", Parser.kw_balance),
    "hash-type": ("be", Parser.kw_hash_type),
    "hash-balance-factor": ("any", Parser.kw_hash_balance_factor),
    "force-persist": ("be", Parser.kw_persist_rule),
    "ignore-persist": ("be", Parser.kw_persist_rule),
    "option": ("any", Parser.kw_option),
    "no": ("any", Parser.kw_no),
    "http-check": ("be", Parser.kw_http_check),
    "cookie": ("be", Parser.kw_cookie),
    "server": ("be!", Parser.kw_server),
    "server-template": ("be!", Parser.kw_server_template),
    "default-server": ("be!", Parser.kw_default_server),
    "load-server-state-from-file": ("be", server_state.kw_load_server_state_from_file),
    "server-state-file-name": ("be", server_state.kw_server_state_file_name),
    "stick-table": ("any", Parser.kw_stick_table),
    "stick": ("be", Parser.kw_stick),
    "acl": ("any", Parser.kw_acl),
    "tcp-request": ("any", Parser.kw_tcp_request),
    "http-request": ("any", Parser.kw_http_request),
    "http-response": ("any", Parser.kw_http_response),
    "http-after-response": ("any", Parser.kw_http_after_response),
    "log": ("any", log_mod.kw_log),
    "log-format": ("any", log_mod.kw_log_format),
    "log-tag": ("any", log_mod.kw_log_tag),
    "unique-id-format": ("any", log_mod.kw_unique_id_format),
    "unique-id-header": ("any", log_mod.kw_unique_id_header),
    "description": ("any", Parser.kw_description),
    "id": ("any", Parser.kw_id),
    "disabled": ("any", Parser.kw_disabled),
    "enabled": ("any", Parser.kw_enabled),
    "errorfile": ("any", Parser.kw_errorfile),
    "http-reuse": ("be", Parser.kw_http_reuse),
    "tcp-check": ("be", Parser.kw_tcp_check),
    "errorfiles": ("any", Parser.kw_errorfiles),
    "errorloc": ("any", Parser.kw_errorloc),
    "errorloc302": ("any", Parser.kw_errorloc),
    "errorloc303": ("any", Parser.kw_errorloc),
    "capture": ("fe", log_mod.kw_capture),
    "declare": ("any", log_mod.kw_declare),
    "grace": ("any", Parser.kw_ignored),
    "redirect": ("any", Parser.kw_redirect),
    "monitor-uri": ("fe", Parser.kw_monitor_uri),
    "monitor": ("fe", Parser.kw_monitor),
    "stats": ("any", Parser.kw_stats),
    "compression": ("any", compression.kw_compression),
    "filter": ("any", cache_mod.kw_filter_any),
}
