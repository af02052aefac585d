"""Server state across reloads, as HAProxy 2.6's server_state.c: `show servers state
[<backend>]` (file format version 1), and the state file read at start and at each
reload (`server-state-file`, `server-state-base`, `load-server-state-from-file
global|local|none`, `server-state-file-name`).

A server's state is the administrative flags (forced/config maintenance, drain), the
operational state (running/stopped), the user weight, the health-check status, result
and health counter, and the service and check ports. Operators save it before a reload
(`show servers state > FILE`); the new configuration applies it to the servers it still
has (same backend and server names). HAProxy's rules, src/server_state.c:
- maintenance: a change of the configuration's `disabled` wins; else the file's forced
  maintenance is kept, and a file without it releases a server the configuration
  disables;
- drain is kept unless it came from a configured weight of 0 that is no longer 0;
- the weight set at run time is kept only when the configured weight is unchanged;
- the service port of the file replaces the configuration's (HAProxy does so too);
- a stopped server is DOWN until its checks bring it up (forever without checks).
Edgestick has no NOLB state, and a file's `starting` server does not start a slow start
again: a `starting` or `stopping` server is applied as running, with the health counter
HAProxy would give it.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import time

from edgestick.cfgsyntax import c_atoi, c_strtol

VERSION = 1
FIELD_NAMES = ("be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state "
               "srv_uweight srv_iweight srv_time_since_last_change srv_check_status "
               "srv_check_result srv_check_health srv_check_state srv_agent_state "
               "bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl "
               "srv_check_port srv_check_addr srv_agent_addr srv_agent_port")
MIN_FIELDS, MAX_FIELDS = 20, 25

# enum srv_state, enum srv_admin flags, check state flags, check results
ST_STOPPED, ST_STARTING, ST_RUNNING, ST_STOPPING = range(4)
ADMF_FMAINT, ADMF_IMAINT, ADMF_CMAINT, ADMF_FDRAIN = 0x01, 0x02, 0x04, 0x08
ADMF_IDRAIN, ADMF_RMAINT, ADMF_FQDN_CHANGED = 0x10, 0x20, 0x40
CHK_ST_INPROGRESS, CHK_ST_CONFIGURED, CHK_ST_ENABLED, CHK_ST_PAUSED = 0x01, 0x02, 0x04, 0x08
CHK_ST_AGENT = 0x10
CHK_RES_UNKNOWN, CHK_RES_NEUTRAL, CHK_RES_FAILED, CHK_RES_PASSED, CHK_RES_CONDPASS = range(5)

# enum healthcheck_status: position = code
CHECK_STATUSES = ("UNK", "INI", "START", "CHECKED", "HANA", "SOCKERR", "L4OK", "L4TOUT",
                  "L4CON", "L6OK", "L6TOUT", "L6RSP", "L7TOUT", "L7RSP", "L57DATA", "L7OK",
                  "L7OKC", "L7STS", "PROCERR", "PROCTOUT", "PROCOK")
STATUS_CODE = {name: code for code, name in enumerate(CHECK_STATUSES)}
STATUS_INI = 1
_PASSED = {"L4OK", "L6OK", "L7OK", "PROCOK"}
_ALLOWED_ADMIN = {0, ADMF_FMAINT, ADMF_CMAINT, ADMF_CMAINT | ADMF_FMAINT,
                  ADMF_CMAINT | ADMF_FDRAIN, ADMF_FDRAIN}


def _warn(msg: str) -> None:
    sys.stderr.write(f"[edgestick proxy] [WARNING] {msg}\n")
    sys.stderr.flush()


# ---------------------------------------------------------------------------- the dump

def admin_flags(srv) -> int:
    flags = ADMF_CMAINT if srv.model.disabled else 0
    if getattr(srv, "via_maint", None) is not None:
        flags |= ADMF_IMAINT            # (inherited from the tracked server)
    elif srv.admin_maint:
        flags |= ADMF_FMAINT
    elif getattr(srv, "via_drain", False):
        flags |= ADMF_IDRAIN
    elif srv.admin_drain:
        flags |= ADMF_FDRAIN
    return flags


def op_state(srv) -> int:
    return ST_RUNNING if srv.op_up and not srv.admin_maint else ST_STOPPED


def check_status_code(srv) -> int:
    """The last check's status; INI until one ended (or the state file gave one)."""
    if srv.check_duration is None or not srv.check_status:
        return STATUS_INI
    return STATUS_CODE.get(srv.check_status, STATUS_INI)


def check_result(code: int) -> int:
    if code <= STATUS_INI:
        return CHK_RES_UNKNOWN
    return CHK_RES_PASSED if CHECK_STATUSES[code] in _PASSED else CHK_RES_FAILED


def check_state(srv) -> int:
    if not srv.model.check:
        # (HAProxy pauses the unconfigured check of a server the configuration disables)
        return CHK_ST_PAUSED if srv.model.disabled else 0
    st = CHK_ST_CONFIGURED
    if srv not in CHECK_DISABLED:
        st |= CHK_ST_ENABLED
        if srv.checking:
            st |= CHK_ST_INPROGRESS
    # (a dynamic server's check, never started, is not paused by its maintenance)
    if srv.admin_maint and (st & CHK_ST_ENABLED or srv.model.where.file != "<cli>"):
        st |= CHK_ST_PAUSED
    return st


def agent_state(srv) -> int:
    """The agent check's state (proxy/agent_check.py), 0 without one."""
    agent = getattr(srv, "agent", None)
    if agent is None:
        return 0
    st = CHK_ST_CONFIGURED | CHK_ST_ENABLED | CHK_ST_AGENT     # (maintenance leaves it be)
    if getattr(agent, "checking", False):
        st |= CHK_ST_INPROGRESS
    return st


def server_line(b, srv, now: float) -> str:
    m = srv.model
    code = check_status_code(srv)
    # (a check under way has no result yet, its status is the last one's)
    result = CHK_RES_UNKNOWN if srv.checking else check_result(code)
    # (2.6's `addr` and `port` set the agent's address and port too)
    check_addr = m.check_addr or "-"
    agent_addr, agent_port = getattr(m, "agent_mirror", (m.check_addr, m.check_port))
    agent_addr = getattr(m, "agent_addr", None) or agent_addr    # (agent-check's own)
    agent_port = getattr(m, "agent_port", None) or agent_port
    return (f"{b.iid} {b.name} {srv.id} {srv.name} {_addr(srv)} "
            f"{op_state(srv)} {admin_flags(srv)} {srv.weight} {m.weight} "
            f"{int(now - srv.last_change)} {code} {result} "
            f"{srv.health} {check_state(srv)} {agent_state(srv)} "
            f"{1 if b.model.id is not None else 0} {1 if m.explicit_id else 0} "
            f"{m.fqdn or '-'} {srv.port or 0} - {1 if m.ssl else 0} "
            f"{m.check_port or 0} {check_addr} {agent_addr or '-'} {agent_port or 0}\n")


def show_servers_state(proc, args: list):
    """`show servers state [<backend>]`."""
    name = args[3] if len(args) > 3 else ""
    backends = list(proc.backends.values())
    if name:
        b = proc.backends.get(name)
        if b is None:
            return "Can't find backend.\n"
        backends = [b]
    backends.sort(key=lambda b: _order(proc, b))
    now = time.monotonic()

    def chunks():
        yield f"{VERSION}\n# {FIELD_NAMES}\n"
        for b in backends:
            yield "".join(server_line(b, s, now) for s in b.servers)
    return chunks()


def show_servers_conn(proc, args: list):
    """`show servers conn [<backend>]`: each server's connections (HAProxy's columns;
    one thread: edgestick runs one event loop; the idle pool's purge delay and size
    limit are HAProxy's defaults, 5 s and unlimited)."""
    name = args[3] if len(args) > 3 else ""
    backends = sorted(proc.backends.values(), key=lambda b: _order(proc, b))
    if name:
        b = proc.backends.get(name)
        if b is None:
            return "Can't find backend.\n"
        backends = [b]
    out = ["# bkname/svname bkid/svid addr port - purge_delay used_cur used_max need_est "
           "unsafe_nb safe_nb idle_lim idle_cur idle_per_thr[1]\n"]
    for b in backends:
        for srv in b.servers:
            idle = len(srv.idle)
            safe = sum(1 for c in srv.idle if c.reused)
            out.append(f"{b.name}/{srv.name} {b.iid}/{srv.id} {_addr(srv)} {srv.port or 0} - "
                       f"5000 {len(srv.all_conns) - idle} {srv.max_used} {srv.max_used} "
                       f"{idle - safe} {safe} -1 {idle} {idle}\n")
    return "".join(out)


def _addr(srv) -> str:
    m = srv.model
    return "-" if m.family == "unix" or (m.fqdn and srv.host == m.fqdn) else srv.host


def _order(proc, b) -> tuple:
    """HAProxy lists proxies in configuration order."""
    files = list(proc.cfg.files)
    w = b.model.where
    return (files.index(w.file) if w.file in files else len(files), w.line)


# ---------------------------------------------------------------------------- transitions

def enter_maint(srv) -> None:
    """Forced maintenance (`set server ... state maint`, `disable server`, the state
    file): no traffic, checks paused, the health counter at 0. Nothing changes for a
    server in maintenance already."""
    if srv.admin_maint:
        return
    srv.admin_maint, srv.admin_drain = True, False
    srv.health = 0
    srv.last_change = time.monotonic()
    srv.drop_idle()
    srv.backend.recalc()


def leave_maint(srv) -> None:
    """Back from maintenance: a checked server is UP and falls at its first failed
    check (health at `rise`), as HAProxy's srv_update_status."""
    if not srv.admin_maint or getattr(srv, "via_maint", None) is not None:
        return                          # (a tracked server's maintenance is not ours to end)
    srv.admin_maint = False
    if srv.model.check and srv not in CHECK_DISABLED:
        srv.health = srv.model.rise
        srv.op_up = True
    srv.last_change = time.monotonic()
    srv.backend.recalc()


def set_admin_state(srv, state: str) -> None:
    """`set server <bk>/<srv> state ready|drain|maint`."""
    if state == "maint":
        if not srv.admin_maint:
            enter_maint(srv)
        return
    leave_maint(srv)
    drain = state == "drain" or getattr(srv, "via_drain", False)    # (inherited: stays)
    if srv.admin_drain != drain:
        srv.admin_drain = drain
        srv.last_change = time.monotonic()
        srv.backend.recalc()


# ---------------------------------------------------------------------------- configuration

class Settings:
    """The state-file keywords of a configuration: the global ones, and per backend
    the mode and file name (defaults sections pass theirs on)."""

    def __init__(self):
        self.file: str | None = None
        self.base: str | None = None
        self.mode: dict[str, str] = {}          # proxy name -> global | local | none
        self.names: dict[str, str] = {}         # proxy name -> server-state-file-name


def settings(cfg) -> Settings:
    s = getattr(cfg, "server_state", None)
    if s is None:
        s = cfg.server_state = Settings()
    return s


def kw_global(parser, line) -> None:
    """`server-state-file <path>`, `server-state-base <dir>` (global)."""
    w = line.words
    s = settings(parser.cfg)
    if line.keyword == "server-state-file":
        if len(w) != 2:
            raise line.error("'server-state-file' expect one argument: a file path.")
        s.file = w[1]
    else:
        if len(w) != 2:
            raise line.error("'server-state-base' expects one argument: a directory path.")
        s.base = w[1]


def kw_load_server_state_from_file(parser, p, line) -> None:
    w = line.words
    mode = w[1] if len(w) > 1 else ""
    if mode not in ("global", "local", "none"):
        raise line.error(f"'load-server-state-from-file' expects 'global', 'local' or "
                         f"'none'. Got '{mode}'")
    settings(parser.cfg).mode[_key(p)] = mode


def kw_server_state_file_name(parser, p, line) -> None:
    w = line.words
    if len(w) > 2:
        raise line.error(f"'server-state-file-name' cannot handle unexpected argument "
                         f"'{w[2]}'.")
    name = w[1] if len(w) > 1 else ""
    settings(parser.cfg).names[_key(p)] = "" if name in ("", "use-backend-name") else name


def _key(p) -> str:
    return f"defaults:{id(p)}" if p.kind == "defaults" else p.name


def inherit(parser, base, p) -> None:
    """A proxy takes its defaults section's settings."""
    s = getattr(parser.cfg, "server_state", None)
    if s is None:
        return
    for table in (s.mode, s.names):
        k = _key(base)
        if k in table and _key(p) not in table:
            table[_key(p)] = table[k]


# ---------------------------------------------------------------------------- the state file

def _path(s: Settings, name: str) -> str:
    if name.startswith("/") or not s.base:
        return name
    return s.base + ("" if s.base.endswith("/") else "/") + name


def _read(path: str, what: str, px_name: str | None = None):
    """(version, lines) of a state file, or (0, []) after a warning."""
    try:
        f = open(path, "rb")
    except OSError as e:
        _warn(f"{what}Can't open {'global ' if px_name is None else ''}server state file "
              f"'{path}': {os.strerror(e.errno)}")
        return 0, []
    with f:
        data = f.read().decode("latin-1")
    lines = data.splitlines(keepends=True)
    if not lines:
        _warn(f"{what}Empty server state file '{path}'.")
        return 0, []
    head = lines[0]
    try:
        vsn = int(head[:-1]) if head.endswith("\n") and head[:-1].strip() == head[:-1] else 0
    except ValueError:
        vsn = 0
    if vsn != VERSION:
        _warn(f"{what}Can't get version of the server state file '{path}'.")
        return 0, []
    return vsn, lines[1:]


def _fields(line: str):
    """The fields of one line: None to skip it, False when it is corrupt."""
    if not line.endswith("\n"):
        return False
    body = line[:-1].lstrip(" \t")
    if not body or body.startswith("#"):
        return None
    params = body.replace("\t", " ").split()[:MAX_FIELDS]
    if not MIN_FIELDS <= len(params) <= MAX_FIELDS:
        return False
    return params


def _parse(lines, path: str, what: str, b=None) -> dict | None:
    """(backend name, server name) -> params; None when the file is corrupt."""
    entries: dict = {}
    for n, line in enumerate(lines, 1):
        params = _fields(line)
        if params is None:
            continue
        if params is False:
            _warn(f"{what}corrupted server state file '{path}' at line {n}.")
            return None
        be_name = params[1]
        if b is not None:
            same_id = c_atoi(params[0]) == b.iid
            same_name = params[1] == b.name
            if not same_id and not same_name:
                continue
            if not same_id:
                _warn(f"Proxy '{b.name}': backend ID mismatch: from server state file: "
                      f"'{params[0]}', from running config '{b.iid}'")
            elif not same_name:
                _warn(f"Proxy '{b.name}': backend name mismatch: from server state file: "
                      f"'{params[1]}', from running config '{b.name}'")
                if not c_atoi(params[15]) & 1:
                    continue
            be_name = b.name
        entries.setdefault((be_name, params[3]), params)    # duplicates: the first
    return entries



def apply(cfg, backends: dict) -> int:
    """Apply the state files to `backends` (at start and at each reload); the number of
    servers updated."""
    live = {srv for b in backends.values() for srv in b.servers}
    CHECK_DISABLED.intersection_update(live)        # (a reload's new servers: checks on)
    s = getattr(cfg, "server_state", None)
    if s is None:
        return 0
    global_entries = None
    updated = 0
    for b in backends.values():
        mode = s.mode.get(b.name, "none")
        if mode == "none" or not b.servers or b.model.disabled:
            continue
        if mode == "global":
            if s.file is None:
                continue
            if global_entries is None:
                path = _path(s, s.file)
                vsn, lines = _read(path, "config: ")
                global_entries = (_parse(lines, path, "config: ") if vsn else None) or {}
            entries = global_entries
        else:
            path = _path(s, s.names.get(b.name) or b.name)
            what = f"Proxy '{b.name}': "
            vsn, lines = _read(path, what, b.name)
            entries = _parse(lines, path, what, b) if vsn else None
            if entries is None:
                continue
            entries = dict(entries)
        with _one_recalc(b):
            for srv in list(b.servers):
                params = entries.pop((b.name, srv.name), None)
                if params is not None:
                    apply_line(srv, params[4:])
                    updated += 1
        if mode == "local":
            for (_, srv_name) in entries:
                _warn(f"Proxy '{b.name}': can't find server '{srv_name}' in backend '{b.name}'")
    return updated


@contextlib.contextmanager
def _one_recalc(b):
    """The servers' lists are rebuilt once for a whole file, not at each server's change
    (a backend of 1000 servers: 1000 rebuilds of 1000)."""
    b.recalc = _no_recalc
    try:
        yield
    finally:
        del b.recalc
        b.recalc()


def _no_recalc():
    pass


def apply_line(srv, params: list) -> None:
    """srv_state_srv_update(): one server's fields (from srv_addr on)."""
    params = params + [None] * (21 - len(params))
    errors = []

    def number(i, name, ok=lambda v: True):
        v = c_strtol(params[i])[0]
        if v is None or not ok(v):
            errors.append(f", invalid {name} value '{params[i]}'")
        return v

    op = number(1, "srv_op_state", lambda v: 0 <= v <= 3)
    admin = number(2, "srv_admin_state")
    if admin is not None:
        admin &= ~(ADMF_IDRAIN | ADMF_IMAINT | ADMF_RMAINT | ADMF_FQDN_CHANGED)
        if admin not in _ALLOWED_ADMIN:
            errors.append(f", invalid srv_admin_state value '{params[2]}'")
    uweight = number(3, "srv_uweight", lambda v: 0 <= v <= 256)
    iweight = number(4, "srv_iweight", lambda v: 0 <= v <= 256)
    since = number(5, "srv_last_time_change")
    status = number(6, "srv_check_status", lambda v: 0 <= v < len(CHECK_STATUSES))
    number(7, "srv_check_result", lambda v: 0 <= v <= 4)
    health = number(8, "srv_check_health")
    number(9, "srv_check_state", lambda v: not v & ~0x1F)
    number(10, "srv_agent_state", lambda v: not v & ~0x1F)
    number(11, "bk_f_forced_id", lambda v: v in (0, 1))
    number(12, "srv_f_forced_id", lambda v: v in (0, 1))
    port = None
    if params[14] is not None:
        port = c_atoi(params[14]) if params[14][:1].isdigit() else 0
        if port > 65535:
            errors.append(f", invalid srv_port value '{params[14]}'")
            port = None
    if errors:
        _warn(f"server-state application failed for server '{srv.backend.name}/{srv.name}'"
              + "".join(errors))
        return
    m = srv.model
    rise, fall = m.rise, m.fall
    # the operational state
    if op == ST_STOPPED or (op == ST_STOPPING and fall == 1):
        srv.health = 0
        srv.set_state(False)
    elif op == ST_RUNNING or (op == ST_STARTING and rise == 1):
        srv.health = rise + fall - 1
        srv.set_state(True)
    elif op == ST_STARTING:
        srv.health = health if 1 <= health < rise else rise - 1
        srv.set_state(True)
    else:
        srv.health = health if rise <= health <= rise + fall - 2 else rise
        srv.set_state(True)
    # maintenance: a change of the configuration wins, else the file's forced state
    conf_maint = bool(m.disabled)
    if bool(admin & ADMF_CMAINT) != conf_maint:
        if conf_maint:
            enter_maint(srv)
        else:
            leave_maint(srv)
    elif admin & ADMF_FMAINT and not conf_maint:
        enter_maint(srv)
    elif not admin & ADMF_FMAINT and conf_maint:
        leave_maint(srv)
    if not srv.admin_maint and admin & ADMF_FDRAIN and (iweight > 0 or m.weight == 0):
        set_admin_state(srv, "drain")
    srv.last_change = time.monotonic() - since
    if status > STATUS_INI:
        srv.check_status = CHECK_STATUSES[status]
        srv.check_duration = 0
    if iweight == m.weight:
        srv.weight = uweight
    if port:
        set_address(srv, srv.host, port)
    if params[16] is not None and m.ssl and c_strtol(params[16])[0] == 0:
        replace_model(srv, ssl=False)       # (TLS can be turned off, not on)
        srv.tls_ctx = None
    srv.backend.recalc()


def replace_model(srv, **changes) -> None:
    """A server's settings changed at run time: its model is copied (the configuration's
    stays as it was), so what reads the model (show stat's addr, checks) follows. The
    agent's address and port keep mirroring the configuration's check ones (2.6)."""
    old = srv.model
    mirror = getattr(old, "agent_mirror", (old.check_addr, old.check_port))
    srv.model = dataclasses.replace(old, **changes)
    srv.model.agent_mirror = mirror


def set_address(srv, host: str, port) -> None:
    """A server's new address and port; its idle connections go."""
    replace_model(srv, host=host, port=port)
    srv.host, srv.port = host, port
    srv.drop_idle()


# servers whose configured check does not run: dynamic servers until `enable health`,
# and `disable health`
CHECK_DISABLED: set = set()


def enable_health(srv, enable: bool) -> None:
    """`enable health` / `disable health` on a server with a check."""
    if not srv.model.check:
        return
    b = srv.backend
    if enable and srv in CHECK_DISABLED:
        CHECK_DISABLED.discard(srv)
        _start_check(b, srv)
    elif not enable and srv not in CHECK_DISABLED:
        CHECK_DISABLED.add(srv)
        srv.checking = False
        for t in list(b.check_tasks):
            if _checks_of(t) is srv:
                t.cancel()
                b.check_tasks.remove(t)


def _checks_of(task):
    """The server whose health-check loop (backend._check_loop) `task` runs, if any."""
    srv = getattr(task, "server", None)
    if srv is not None:
        return srv
    coro = task.get_coro()
    frame = getattr(coro, "cr_frame", None)
    if frame is None or coro.cr_code.co_name != "_check_loop":
        return None
    return frame.f_locals.get("srv")


def _start_check(b, srv) -> None:
    import asyncio
    from . import backend as backend_mod
    t = asyncio.get_running_loop().create_task(
        backend_mod._check_loop(b, srv, 0.0, b.model.timeouts))
    t.server = srv
    b.check_tasks.append(t)


def force_health(srv, up: bool) -> None:
    """`set server ... health up|stopping|down`: the check's verdict forced."""
    m = srv.model
    srv.health = m.rise + m.fall - 1 if up else 0
    srv.set_state(up)


# ---------------------------------------------------------------------------- dynamic servers

_NOT_DYNAMIC = ("cookie", "redir", "init-addr", "resolvers", "resolve-prefer", "resolve-net",
                "resolve-opts", "track", "agent-check", "namespace", "usesrc")


def add_server(proc, args: list) -> str:
    """`add server <bk>/<srv> <addr>[:<port>] [<option>]*`: a server created in forced
    maintenance (HAProxy 2.6.12 needs no experimental-mode for it), without the
    default-server settings, its check off until `enable health`."""
    from edgestick.cfgsyntax import ConfigError, Line
    from . import config as config_mod
    from . import model as model_mod
    from .backend import ServerState
    target = args[2] if len(args) > 2 else ""
    bk, _, name = target.partition("/")
    if not bk or not name:
        return "Require 'backend/server'."
    b = proc.backends.get(bk)
    if b is None:
        return "No such backend."
    from .server_cli import _dynamic_lb
    if not _dynamic_lb(b):
        return "Backend must use a dynamic load balancing to support dynamic servers."
    words = list(args[3:])
    if not words or not words[0]:
        return "'server' expects <name> and <addr>[:<port>] as arguments.\n"
    if name in b.by_name:
        return "Already exists a server with the same name in backend.\n"
    opts = [w for w in words[1:] if w]
    for opt in opts:
        if opt in _NOT_DYNAMIC:
            return f"'{opt}' option is not accepted for dynamic server\n"
    line = Line("<cli>", 0, ("server", name, *words))
    parser = config_mod.Parser()
    parser.cfg.global_ = proc.cfg.global_
    try:
        host, port, _, fam = config_mod.parse_address(words[0], line, "server",
                                                      need_port=False)
        fqdn = None
    except ConfigError as e:
        if not e.message.startswith("invalid address"):
            return f"{e.message}\n"
        # (2.6 resolves no name given at run time: the server has no address)
        fqdn = words[0].rpartition(":")[0] if ":" in words[0] else words[0]
        tail = words[0].rpartition(":")[2] if ":" in words[0] else ""
        host, port, fam = fqdn, int(tail) if tail.isdigit() else None, "ipv4"
    model = model_mod.Server(name, host, port, fam, where=model_mod.Where("<cli>", 0))
    model.fqdn = fqdn
    try:
        parser.apply_server_opts(line, model, opts, f"server {bk}/{name}")
        parser.check_server_tls(b.model, line, model, f"server {bk}/{name}")
    except ConfigError as e:
        # (HAProxy ends a keyword's own message with one more period)
        dot = "" if e.message.startswith("unknown keyword") else "."
        return f"{e.message}{dot}\n"
    if model.explicit_id:
        for s in b.servers:
            if s.id == model.id:
                w = s.model.where
                return (f"'id' : custom id {model.id} already used at {w.file}:{w.line} "
                        f"('server {s.name}').\n")
    else:
        used = {s.id for s in b.servers}
        model.id = next(i for i in range(1, len(used) + 2) if i not in used)
    srv = ServerState(b, model)
    if fqdn is not None:
        srv.host = fqdn
    srv.admin_maint, srv.health = True, 0
    b.servers.append(srv)
    b.by_name[name] = srv
    b.by_id[srv.id] = srv
    if srv.cookie:
        b.by_cookie[srv.cookie] = srv
    if model.check:
        CHECK_DISABLED.add(srv)
    b._limited = any(s.maxconn for s in b.servers)
    b.recalc()
    _forget_plans(proc, b)
    sys.stderr.write(f"[edgestick proxy] 'server {bk}/{name}' : New server registered.\n")
    return "New server registered.\n"


def del_server(proc, args: list) -> str:
    """`del server <bk>/<srv>`: only a server in maintenance with no connection left."""
    target = args[2] if len(args) > 2 else ""
    bk, _, name = target.partition("/")
    if not bk or not name:
        return "Require 'backend/server'."
    b = proc.backends.get(bk)
    if b is None:
        return "No such backend."
    srv = b.by_name.get(name)
    if srv is None:
        return "No such server."
    if srv in getattr(b, "tracked", ()):    # (tracked in the configuration: for good)
        return ("This server cannot be removed at runtime due to other configuration "
                "elements pointing to it.")
    if not srv.admin_maint:
        return "Only servers in maintenance mode can be deleted."
    if srv.cur or srv.queue or srv.all_conns:
        srv.drop_idle()
        if srv.cur or srv.queue or srv.all_conns:
            return "Server still has connections attached to it, cannot remove it."
    enable_health(srv, False)
    CHECK_DISABLED.discard(srv)
    tracked = getattr(srv, "track", None)
    if tracked is not None and srv in tracked.trackers:     # (proxy/server_health.py)
        tracked.trackers.remove(srv)
    b.servers.remove(srv)
    del b.by_name[name]
    if b.by_id.get(srv.id) is srv:
        del b.by_id[srv.id]
    if srv.cookie and b.by_cookie.get(srv.cookie) is srv:
        del b.by_cookie[srv.cookie]
    b._limited = any(s.maxconn for s in b.servers)
    b._fwrr = None
    b.recalc()
    _forget_plans(proc, b)
    return "Server deleted."


def _forget_plans(proc, b) -> None:
    for fe in proc.frontends:
        plans = getattr(fe, "_forward_plans", None)
        if plans is not None:
            plans.pop(b, None)
