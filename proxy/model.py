"""The parsed configuration: plain data, filled by `proxy/config.py`.

Everything here is what the configuration *says*; runtime state (tables, server health,
connections) lives elsewhere and is built from it. Each object keeps its source location
(`file`, `line`) so later checks and runtime messages can point at the line.

Conditions (`cond`) and sample expressions (`expr`) are compiled at parse time by
`proxy/acl.py` and `proxy/sample.py`: they are callables taking the request context
documented in `proxy/sample.py` (`cond(ctx) -> bool`, `expr(ctx) -> value | None`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

Condition = Callable[[Any], bool]


@dataclass
class Where:
    file: str = "<none>"
    line: int = 0

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


# --------------------------------------------------------------------------- global

@dataclass
class StatsSocket:
    path: str
    mode: Optional[int] = None          # octal permission bits, e.g. 0o600
    level: str = "operator"             # user | operator | admin (HAProxy's default: operator)
    uid: Optional[int] = None
    gid: Optional[int] = None
    expose_fd_listeners: bool = False
    where: Where = field(default_factory=Where)


@dataclass
class Global:
    stats_sockets: list[StatsSocket] = field(default_factory=list)
    stats_timeout_ms: int = 10_000
    stats_maxconn: int = 10
    maxconn: Optional[int] = None
    localpeer: Optional[str] = None
    daemon: bool = False
    nbthread: Optional[int] = None
    pidfile: Optional[str] = None
    user: Optional[str] = None
    group: Optional[str] = None
    chroot: Optional[str] = None
    hard_stop_after_ms: Optional[int] = None
    ssl_server_verify: str = "required"  # servers' `verify` default
    ca_base: Optional[str] = None
    crt_base: Optional[str] = None
    metrics_bind: Optional[tuple[str, int]] = None   # edgestick: `metrics bind ADDR:PORT`
    log: Any = None                      # proxy.log.GlobalLog (`log`, `log-tag`...)
    # keywords accepted for compatibility that change nothing here (log, tune.*, ssl-default-*…)
    ignored: dict[str, tuple[str, ...]] = field(default_factory=dict)


# --------------------------------------------------------------------------- listeners, servers

@dataclass
class Bind:
    host: str                 # "" = every address of the family
    port: int
    family: str               # "ipv4" | "ipv6" | "unix"
    port_last: Optional[int] = None    # `80-85` ranges; None = single port
    ssl: bool = False
    crt: list[str] = field(default_factory=list)
    alpn: Optional[str] = None
    name: Optional[str] = None
    accept_proxy: bool = False
    v4v6: bool = False
    v6only: bool = False
    maxconn: Optional[int] = None
    backlog: Optional[int] = None
    mode: Optional[int] = None          # unix sockets / stats
    level: Optional[str] = None
    ssl_context: Any = None              # ssl.SSLContext built at parse time when ssl is set
    where: Where = field(default_factory=Where)

    @property
    def ports(self) -> range:
        return range(self.port, (self.port_last or self.port) + 1)


@dataclass
class Server:
    name: str
    host: str
    port: Optional[int]                  # None: same port as the client connected to
    family: str = "ipv4"
    fqdn: Optional[str] = None           # the name the address was written as (a host name)
    check: bool = False
    inter_ms: int = 2000
    fastinter_ms: Optional[int] = None
    downinter_ms: Optional[int] = None
    rise: int = 2
    fall: int = 3
    check_port: Optional[int] = None
    check_addr: Optional[str] = None
    weight: int = 1
    cookie: Optional[str] = None
    backup: bool = False
    id: int = 0                          # puid; explicit or 1..n by position (set after parsing)
    explicit_id: bool = False
    disabled: bool = False
    maxconn: int = 0                     # 0 = unlimited
    maxqueue: int = 0
    non_stick: bool = False
    slowstart_ms: int = 0
    ssl: bool = False
    check_ssl: Optional[bool] = None     # None: as `ssl` when the check goes to the server
    send_proxy: int = 0                  # PROXY protocol version sent first (0: none)
    check_send_proxy: Optional[bool] = None
    tls: Any = None                      # outbound.ServerTls (verify, ca-file, sni...)
    resolvers: Optional[str] = None      # a resolvers section's name (checked, not run)
    # proxy/server_health.py: tracking, agent check, observe/on-error, on-marked-*
    track: Optional[str] = None          # `track [<backend>/]<server>` as written
    agent_check: bool = False            # proxy/agent_check.py
    agent_port: Optional[int] = None
    agent_addr: Optional[str] = None
    agent_inter_ms: int = 2000
    agent_send: Optional[str] = None
    observe: Optional[str] = None        # layer4 | layer7 (None: not observed)
    error_limit: int = 10
    on_error: str = "fail-check"         # fastinter | fail-check | sudden-death | mark-down
    on_marked_down: bool = False         # shutdown-sessions
    on_marked_up: bool = False           # shutdown-backup-sessions
    where: Where = field(default_factory=Where)

    @property
    def addr(self) -> str:
        """`addr:port` as HAProxy's `srvkey addr` stores it."""
        host = self.host
        return f"{host}:{self.port}" if self.port is not None else host


@dataclass
class CookieConfig:
    name: str
    mode: str = "rewrite"               # insert | rewrite | prefix
    indirect: bool = False
    nocache: bool = False
    httponly: bool = False
    secure: bool = False
    postonly: bool = False
    preserve: bool = False
    domains: list[str] = field(default_factory=list)
    maxidle_ms: int = 0
    maxlife_ms: int = 0
    attrs: list[str] = field(default_factory=list)
    dynamic: bool = False
    where: Where = field(default_factory=Where)


@dataclass
class HttpCheck:
    method: str = "OPTIONS"
    uri: str = "/"
    version: str = "HTTP/1.0"
    headers: list[tuple[str, str]] = field(default_factory=list)   # from `http-check send hdr`
    body: Optional[str] = None
    expect: Optional[tuple[str, str]] = None     # ("status", "200") / ("rstatus", "^2") ...


# --------------------------------------------------------------------------- rules

@dataclass
class Track:
    """`track-scN <key> [table T]` in tcp-request / http-request / http-response rules."""
    slot: int
    expr: Any                            # sample expression: expr(ctx) -> key value | None
    expr_text: str
    table: Optional[str] = None          # None: the table of the proxy holding the rule


@dataclass
class Reply:
    """What deny / return / tarpit answer: status, headers, body source."""
    status: int
    content_type: Optional[str] = None
    # None (the built-in error page) | string | lf-string | file | lf-file | errorfile |
    # default-errorfiles
    body_kind: Optional[str] = None
    body: Optional[str] = None           # the string/format, or the file contents for file kinds
    headers: list[tuple[str, str]] = field(default_factory=list)   # (name, log-format text)


@dataclass
class Rule:
    """One `tcp-request`, `http-request`, `http-response` rule.

    action: accept, reject, track-sc, deny, tarpit, return, allow, sc-inc-gpc0, sc-inc-gpc1,
    sc-inc-gpc, sc-set-gpt0, sc-set-gpt, sc-clr-gpc0... (see `proxy/config.py`),
    set-header, add-header, del-header, redirect, use-service, set-var..."""
    action: str
    cond: Optional[Condition] = None
    cond_text: str = ""
    track: Optional[Track] = None
    reply: Optional[Reply] = None
    slot: Optional[int] = None           # sc-inc-gpc0(<slot>), sc-set-gpt0(<slot>)
    index: Optional[int] = None          # sc-inc-gpc(<idx>,<slot>)
    value: Any = None                    # sc-set-gpt0 value (int or sample expression)
    header: Optional[str] = None         # set-header / add-header / del-header name
    status: Optional[int] = None         # set-status code (its reason: fmt)
    fmt: Optional[str] = None            # header value / redirect target (log-format text)
    redirect: Optional[dict] = None      # {"type": location|prefix|scheme, "code": 302, ...}
    service: Optional[str] = None
    regex: Any = None                    # replace-path/-uri/-header/-value match
    args: tuple[str, ...] = ()           # remaining words of rules kept verbatim
    var: Any = None                      # set-var/set-var-fmt/unset-var: vars.VarAction
    where: Where = field(default_factory=Where)


@dataclass
class StickRule:
    kind: str                            # match | store-request | store-response | on
    expr: Any
    expr_text: str
    table: Optional[str] = None          # None: the backend's own table
    cond: Optional[Condition] = None
    where: Where = field(default_factory=Where)


@dataclass
class UseBackend:
    backend: str
    cond: Optional[Condition] = None
    where: Where = field(default_factory=Where)


@dataclass
class StickTableWords:
    """A `stick-table` line as written, for the table engineer's parser."""
    words: tuple[str, ...]
    where: Where = field(default_factory=Where)


# --------------------------------------------------------------------------- proxies

TIMEOUT_NAMES = ("client", "server", "connect", "http-request", "http-keep-alive", "check",
                 "tarpit", "queue", "tunnel", "client-fin", "server-fin")


@dataclass
class Options:
    forwardfor: bool = False
    forwardfor_header: str = "X-Forwarded-For"
    forwardfor_except: Optional[str] = None
    forwardfor_if_none: bool = False
    originalto: bool = False             # X-Original-To: the address the client reached
    originalto_header: str = "X-Original-To"
    originalto_except: Optional[str] = None
    redispatch: bool = False
    httpchk: bool = False
    persist: bool = False
    http_ignore_probes: bool = False
    httplog: bool = False
    tcplog: bool = False
    dontlognull: bool = False
    http_server_close: bool = False
    httpclose: bool = False
    http_keep_alive: bool = True
    abortonclose: bool = False
    # `option <name>` words accepted and ignored (logging switches...)
    other: dict[str, bool] = field(default_factory=dict)


@dataclass
class Proxy:
    """A frontend, backend, listen or defaults section."""
    name: str
    kind: str                            # frontend | backend | listen | defaults
    where: Where = field(default_factory=Where)
    defaults_name: Optional[str] = None  # the defaults section it inherited from
    vars: Any = None                     # frontends: the configuration's vars.Registry when
                                         # it uses variables (contexts get scopes), else None
    mode: str = "tcp"
    maxconn: Optional[int] = None
    fullconn: Optional[int] = None
    timeouts: dict[str, int] = field(default_factory=dict)     # ms, names of TIMEOUT_NAMES
    binds: list[Bind] = field(default_factory=list)
    default_backend: Optional[str] = None
    default_backend_where: Where = field(default_factory=Where)
    use_backends: list[UseBackend] = field(default_factory=list)
    options: Options = field(default_factory=Options)
    http_check: HttpCheck = field(default_factory=HttpCheck)
    retries: int = 3
    balance: str = "roundrobin"          # roundrobin static-rr leastconn source first uri
    balance_args: tuple[str, ...] = ()   # url_param hdr random (their arguments: balance_opts)
    balance_opts: dict[str, Any] = field(default_factory=dict)
    hash_type: tuple[str, str, bool] = ("map-based", "sdbm", False)   # method, function, avalanche
    hash_balance_factor: int = 0         # bounded loads of consistent hashing (0: off)
    persist_rules: list = field(default_factory=list)   # ("force"|"ignore", cond) in order
    servers: list[Server] = field(default_factory=list)
    cookie: Optional[CookieConfig] = None
    stick_table_words: Optional[StickTableWords] = None
    stick_table: Any = None              # the table engineer's parsed declaration
    stick_rules: list[StickRule] = field(default_factory=list)
    tcp_request_connection: list[Rule] = field(default_factory=list)
    tcp_request_session: list[Rule] = field(default_factory=list)
    tcp_request_content: list[Rule] = field(default_factory=list)
    tcp_request_inspect_delay_ms: Optional[int] = None
    http_request: list[Rule] = field(default_factory=list)
    http_response: list[Rule] = field(default_factory=list)
    http_after_response: list[Rule] = field(default_factory=list)
    redirects: list[Rule] = field(default_factory=list)       # `redirect` (after http-request)
    monitor_uri: Optional[str] = None    # answered 200 before any rule (503 on monitor fail)
    monitor_fail: list[Any] = field(default_factory=list)     # `monitor fail` conditions
    acls: dict[str, Any] = field(default_factory=dict)   # name -> proxy.acl.Acl
    stats: Any = None                    # proxy.stats_page.StatsPage (`stats ...` lines)
    stats_own: bool = False              # False: `stats` inherited from the defaults
    disabled: bool = False
    id: Optional[int] = None
    description: Optional[str] = None
    errorfiles: dict[int, Any] = field(default_factory=dict)     # status -> http1.ErrorPage
    http_reuse: str = "safe"             # never: a server connection serves one client
    tcp_checks: list = field(default_factory=list)   # tcp_check.Step (`tcp-check` lines)
    errorfile_refs: list = field(default_factory=list)   # in line order: (status, page) or
                                                         # (http-errors name, statuses, where)
    compression: Any = None              # proxy.compression.Compression (`compression` lines)
    cache_filters: list = field(default_factory=list)   # proxy/cache.py: (kind, name, where)
    caching: bool = False                # the configuration has `cache` sections
    log: Any = None                      # proxy.log.ProxyLog (log targets, formats, captures)

    @property
    def has_frontend(self) -> bool:
        return self.kind in ("frontend", "listen", "defaults")

    @property
    def has_backend(self) -> bool:
        return self.kind in ("backend", "listen", "defaults")

    @property
    def table_name(self) -> Optional[str]:
        """The name of the table this proxy declares (its own name), or None."""
        return self.name if self.stick_table_words is not None else None

    def timeout(self, name: str, default: Optional[int] = None) -> Optional[int]:
        return self.timeouts.get(name, default)


# --------------------------------------------------------------------------- peers

@dataclass
class Peer:
    name: str
    host: Optional[str]                  # None without address (`server NAME`, `peer NAME`)
    port: Optional[int]
    family: str = "ipv4"
    where: Where = field(default_factory=Where)


@dataclass
class PeersSection:
    name: str
    peers: list[Peer] = field(default_factory=list)
    bind: Optional[Bind] = None          # 2.x form: `bind ADDR:PORT` + `server NAME [ADDR:PORT]`
    tables: list[StickTableWords] = field(default_factory=list)   # `table NAME type ...` lines
    table_decls: dict[str, Any] = field(default_factory=dict)     # "<section>/<name>" -> decl
    disabled: bool = False
    where: Where = field(default_factory=Where)

    def peer(self, name: str) -> Optional[Peer]:
        for p in self.peers:
            if p.name == name:
                return p
        return None


# --------------------------------------------------------------------------- whole configuration

@dataclass
class Config:
    files: list[str] = field(default_factory=list)
    global_: Global = field(default_factory=Global)
    defaults: dict[str, Proxy] = field(default_factory=dict)      # named defaults sections
    frontends: dict[str, Proxy] = field(default_factory=dict)     # frontend + listen
    backends: dict[str, Proxy] = field(default_factory=dict)      # backend + listen
    proxies: list[Proxy] = field(default_factory=list)            # non-defaults, in file order
    peers: dict[str, PeersSection] = field(default_factory=dict)
    userlists: dict[str, Any] = field(default_factory=dict)       # name -> auth.Userlist
    http_errors: dict[str, tuple] = field(default_factory=dict)   # name -> (where, pages)
    resolvers: dict[str, Where] = field(default_factory=dict)      # sections, by name
    # sections owned by other components (`shield`): their lines, for them to parse
    foreign_sections: list[tuple[str, tuple[str, ...], list]] = field(default_factory=list)
    request_body: bool = False          # a rule may read the body (proxy/request_body.py)
    warnings: list[str] = field(default_factory=list)
    caches: dict[str, Any] = field(default_factory=dict)          # name -> cache.CacheSpec

    # every stick table in declaration order (HAProxy's `show table` lists them newest
    # first): (global name, the declaration words after the name, parsed declaration,
    # declared in a peers section)
    tables: list[tuple[str, tuple[str, ...], Any, bool]] = field(default_factory=list)
    vars: Any = None                     # vars.Registry: the variables it mentions, proc store

    def table_names(self) -> list[str]:
        """Every stick table, in declaration order: proxies' tables under their name,
        peers tables as section/name."""
        return [t[0] for t in self.tables]

    def proxy(self, name: str) -> Optional[Proxy]:
        for p in self.proxies:
            if p.name == name:
                return p
        return None
