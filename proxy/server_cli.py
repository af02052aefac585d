"""Runtime API commands that manage servers, backends and limits (HAProxy 2.6's
server.c, proxy.c and cli.c commands): `show servers state|conn`, `show backend`,
`show version`, `get weight`, `set weight`, `set server` (state, weight, addr, health,
agent, check-addr, check-port...), `enable/disable server`, `set maxconn
server|frontend|global`, `shutdown sessions server`, and dynamic servers (`add server`,
`del server`).

Replies are HAProxy 2.6.12's, byte for byte: an error HAProxy prints without a final
newline is returned without one (the CLI adds the empty line after each reply, so such a
reply ends with a single newline, as HAProxy's does). Registered after proxy/stats.py's
commands, so `set server`, `enable server` and `disable server` here replace those.

`show version` prints edgestick's own version (the one `show info` reports), not the
HAProxy version it behaves as.
"""
from __future__ import annotations

import socket

from edgestick import __version__

from edgestick.cfgsyntax import c_atoi, c_strtol

from . import server_health, server_state
from .runtime_api import ADMIN, PERMISSION_DENIED, USER

NEED_SERVER = "Require 'backend/server'.\n"


def _find_server(proc, text: str):
    """HAProxy's cli_find_server: (server, None) or (None, error reply)."""
    bk, slash, name = text.partition("/")
    if not slash or not name:
        return None, NEED_SERVER
    b = proc.backends.get(bk)
    if b is None:
        return None, "No such backend.\n"
    srv = b.by_name.get(name)
    if srv is None:
        return None, "No such server.\n"
    return srv, None


def _arg(args: list, i: int) -> str:
    return args[i] if i < len(args) else ""






_DYNAMIC_ALGOS = ("roundrobin", "leastconn", "first", "random")


def _dynamic_lb(b) -> bool:
    """BE_LB_PROP_DYN: weights can change and servers come and go."""
    return b.algo in _DYNAMIC_ALGOS or b.consistent


# ---------------------------------------------------------------------------- weights

def parse_weight_change(srv, text: str):
    """server_parse_weight_change_request(): the new weight, or an error reply."""
    if not text:
        return None, "Require <weight> or <weight%>.\n"
    w, rest = c_strtol(text)
    if w is None:
        return None, "Empty weight string empty or preceded by garbage"
    if rest == "%":
        if w < 0:
            return None, "Relative weight must be positive.\n"
        w = min(srv.model.weight * min(w, 25600) // 100, 256)
    elif w < 0 or w > 256:
        return None, "Absolute weight can only be between 0 and 256 inclusive.\n"
    elif rest:
        return None, "Trailing garbage in weight string"
    if w and w != srv.model.weight and not _dynamic_lb(srv.backend):
        return None, ("Backend is using a static LB algorithm and only accepts weights "
                      "'0%' and '100%'.\n")
    return w, None


def set_weight(srv, w: int) -> None:
    if getattr(srv, "warm_since", None) is not None:    # a slow start goes on ramping
        from .server_health import set_uweight
        set_uweight(srv, w)
        return
    if w != srv.weight:
        srv.weight = w
        if hasattr(srv, "eweight"):     # (the effective weight, when slow start keeps one)
            srv.eweight = w * 16
        b = srv.backend
        b._fwrr = None                  # (its weights change: roundrobin starts over)
        b.reposition(srv)
        b.recalc()


# ---------------------------------------------------------------------------- addresses

def _parse_ip(text: str):
    for af in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(af, text)
            return text
        except OSError:
            pass
    return None


def update_addr_port(srv, addr: str, port) -> str:
    """srv_update_addr_port(): change a server's address and/or port; HAProxy's report."""
    msg = []
    new_host, new_port = srv.host, srv.port
    if addr:
        ip = _parse_ip(addr)
        if ip is None:
            return f"Invalid addr '{addr}' by 'stats socket command'\n"
        if ip == srv.host:
            msg.append("no need to change the addr")
        else:
            msg.append(f"IP changed from '{srv.host}' to '{ip}'")
            new_host = ip
    if port is not None:
        v, rest = c_strtol(port)
        if port[:1] in ("+", "-"):
            msg.append("can't change <port> to port map because it is incompatible with "
                       "current health check port configuration (use 'port' statement "
                       "from the 'server' directive.")
        elif v is None or rest:
            msg.append(f"problem converting port '{port}' to an int")
        else:
            v &= 0xFFFF
            if v == (srv.port or 0):
                msg.append("no need to change the port")
            else:
                old = srv.port if srv.port is not None else "+0"
                msg.append(f"port changed from '{old}' to '{v}'")
                new_port = v
    if (new_host, new_port) != (srv.host, srv.port):
        server_state.set_address(srv, new_host, new_port)
    return ", ".join(msg) + " by 'stats socket command'\n"


AGENT_WORDS = ("agent", "agent-addr", "agent-port", "agent-send")


def set_agent(srv, what: str, value: str, args: list) -> str:
    """`set server ... agent up|down`, `agent-addr <ip> [port <p>]`, `agent-port <p>`,
    `agent-send <string>`, on a server with `agent-check` (proxy/agent_check.py)."""
    agent = getattr(srv, "agent", None)
    if what == "agent":
        if agent is None:
            return "agent checks are not enabled on this server.\n"
        if value not in ("up", "down"):
            return "'set server <srv> agent' expects 'up' or 'down'.\n"
        agent.health = 1 if value == "up" else 0
        srv.set_state(value == "up")
        return ""
    if what == "agent-send":
        if agent is None:
            return "agent checks are not enabled on this server.\n"
        server_state.replace_model(srv, agent_send=value or None)
        return ""
    if what == "agent-addr" and not value:
        return "set server <b>/<s> agent-addr requires an address and optionally a port.\n"
    if what == "agent-port" and not value:
        return "set server <b>/<s> agent-port requires a port.\n"
    if agent is None:
        return "agent checks are not enabled on this server"
    addr = value if what == "agent-addr" else None
    port = value if what == "agent-port" else (
        _arg(args, 6) if _arg(args, 5) == "port" else None)
    changes, err = _addr_port_changes(addr, port)
    if err:
        return err
    server_state.replace_model(srv, **{f"agent_{k}": v for k, v in changes.items()})
    return ""


def _addr_port_changes(addr, port):
    """srv_update_check_addr_port()'s checks: ({addr, port} changes, None) or (None, why)."""
    if addr is not None and _parse_ip(addr) is None:
        return None, f"invalid addr '{addr}'"
    changes = {}
    if addr is not None:
        changes["addr"] = addr
    if port is not None:
        v, rest = c_strtol(port)
        if v is None or rest:
            return None, "provided port is not an integer"
        if not 0 <= v <= 65535:
            return None, "provided port is invalid"
        changes["port"] = v
    return changes, None


def update_check_addr_port(srv, addr, port):
    """srv_update_check_addr_port(): None, or HAProxy's error (no final newline)."""
    if not srv.model.check or srv in server_state.CHECK_DISABLED:
        return "health checks are not enabled on this server"
    changes, err = _addr_port_changes(addr, port)
    if err:
        return err
    server_state.replace_model(srv, **{f"check_{k}": v for k, v in changes.items()})
    return None


# ---------------------------------------------------------------------------- command table

def register_commands(proc, reg) -> None:
    hard_maxconn = [proc.maxconn]

    def admin(handler):
        def run(cli, args):
            if not cli.has_level(ADMIN):
                return PERMISSION_DENIED
            return handler(cli, args)
        return run

    # -- reports (level user)

    def show_servers(cli, args):
        return server_state.show_servers_state(proc, args)

    def show_servers_conn(cli, args):
        return server_state.show_servers_conn(proc, args)

    def show_backend(cli, args):
        names = [b.name for b in sorted(proc.backends.values(),
                                        key=lambda b: server_state._order(proc, b))]
        return "# name\n" + "".join(f"{n}\n" for n in names)

    def show_version(cli, args):
        return f"{__version__}\n"

    def get_weight(cli, args):
        srv, err = _find_server(proc, _arg(args, 2))
        if err:
            return err
        return f"{srv.weight} (initial {srv.model.weight})\n"

    # -- changes (level admin)

    def set_weight_cmd(cli, args):
        srv, err = _find_server(proc, _arg(args, 2))
        if err:
            return err
        w, err = parse_weight_change(srv, _arg(args, 3))
        if err:
            return err
        set_weight(srv, w)
        return ""

    def set_server(cli, args):
        srv, err = _find_server(proc, _arg(args, 2))
        if err:
            return err
        what, value = _arg(args, 3), _arg(args, 4)
        if what == "weight":
            w, err = parse_weight_change(srv, value)
            if err:
                return err
            set_weight(srv, w)
            return ""
        if what == "state":
            if value not in ("ready", "drain", "maint"):
                return "'set server <srv> state' expects 'ready', 'drain' and 'maint'.\n"
            server_state.set_admin_state(srv, value)
            return ""
        if what == "health":
            if getattr(srv, "track", None) is not None:
                return "cannot change health on a tracking server.\n"
            if value not in ("up", "stopping", "down"):
                return "'set server <srv> health' expects 'up', 'stopping', or 'down'.\n"
            server_state.force_health(srv, value != "down")
            return ""
        if what in AGENT_WORDS:
            return set_agent(srv, what, value, args)
        if what == "check-addr":
            if not value:
                return "set server <b>/<s> check-addr requires an address and optionally a port.\n"
            port = _arg(args, 6) if _arg(args, 5) == "port" else None
            return update_check_addr_port(srv, value, port) or ""
        if what == "check-port":
            if not value:
                return "set server <b>/<s> check-port requires a port.\n"
            return update_check_addr_port(srv, None, value) or ""
        if what == "addr":
            if not value:
                return "set server <b>/<s> addr requires an address and optionally a port.\n"
            port = _arg(args, 6) if _arg(args, 5) == "port" else None
            return update_addr_port(srv, value, port)
        if what == "fqdn":
            return "set server <b>/<s> fqdn failed because no resolution is configured.\n"
        if what == "ssl":
            return ("'set server <srv> ssl' cannot be set.  default-server should define "
                    "ssl settings\n")
        return ("usage: set server <backend>/<server> addr | agent | agent-addr | agent-port "
                "| agent-send | check-addr | check-port | fqdn | health | ssl | state | weight\n")

    def toggle_server(enable: bool):
        def handler(cli, args):
            srv, err = _find_server(proc, _arg(args, 2))
            if err:
                return err
            server_state.set_admin_state(srv, "ready" if enable else "maint")
            return ""
        return handler

    def set_maxconn_server(cli, args):
        srv, err = _find_server(proc, _arg(args, 3))
        if err:
            return err
        return parse_maxconn_change(proc.frontends, srv, _arg(args, 4)) or ""

    def set_maxconn_frontend(cli, args):
        name = _arg(args, 3)
        if not name:
            return "A frontend name is expected.\n"
        fes = [fe for fe in proc.frontends if fe.name == name]
        if not fes:
            return "No such frontend.\n"
        if not _arg(args, 4):
            return "Integer value expected.\n"
        v = c_atoi(_arg(args, 4))
        if v < 0:
            return "Value out of range.\n"
        for fe in fes:
            fe.maxconn = v
            _dequeue(fe)
        return ""

    def set_maxconn_global(cli, args):
        if not _arg(args, 3):
            return "Expects an integer value.\n"
        v = c_atoi(_arg(args, 3))
        hard = hard_maxconn[0]
        if hard and v > hard:
            return "Value out of range.\n"
        proc.maxconn = v if v > 0 else hard
        for fe in proc.frontends:
            _dequeue(fe)
        return ""

    def shutdown_sessions_server(cli, args):
        srv, err = _find_server(proc, _arg(args, 3))
        if err:
            return err
        server_health.shutdown_streams(srv)
        return ""

    def add_server(cli, args):
        return server_state.add_server(proc, args)

    def del_server(cli, args):
        return server_state.del_server(proc, args)

    def enable_health(enable: bool):
        def handler(cli, args):
            srv, err = _find_server(proc, _arg(args, 2))
            if err:
                return err
            if enable and not srv.model.check:
                return "Health check was not configured on this server, cannot enable.\n"
            server_state.enable_health(srv, enable)
            return ""
        return handler

    U = USER
    reg.register(("show", "servers", "state"), show_servers,
                 "show servers state [<backend>]          : dump volatile server information (all or for a single backend)",
                 level=U)
    reg.register(("show", "servers", "conn"), show_servers_conn,
                 "show servers conn [<backend>]           : dump server connections status (all or for a single backend)",
                 level=U)
    reg.register(("show", "backend"), show_backend,
                 "show backend                            : list backends in the current running config",
                 level=U)
    reg.register(("show", "version"), show_version,
                 "show version                            : show version of the current process",
                 level=U)
    reg.register(("get", "weight"), get_weight,
                 "get weight <bk>/<srv>                   : report a server's current weight",
                 level=U)
    reg.register(("set", "weight"), admin(set_weight_cmd),
                 "set weight <bk>/<srv>  (DEPRECATED)     : change a server's weight (use 'set server' instead)")
    reg.register(("set", "server"), admin(set_server),
                 "set server <bk>/<srv> [opts]            : change a server's state, weight, address or ssl")
    reg.register(("disable", "server"), admin(toggle_server(False)),
                 "disable server (DEPRECATED)             : disable a server for maintenance (use 'set server' instead)")
    reg.register(("enable", "server"), admin(toggle_server(True)),
                 "enable server  (DEPRECATED)             : enable a disabled server (use 'set server' instead)")
    reg.register(("enable", "health"), admin(enable_health(True)),
                 "enable health                           : enable health checks")
    reg.register(("disable", "health"), admin(enable_health(False)),
                 "disable health                          : disable health checks")
    reg.register(("set", "maxconn", "server"), admin(set_maxconn_server),
                 "set maxconn server <bk>/<srv>           : change a server's maxconn setting")
    reg.register(("set", "maxconn", "frontend"), admin(set_maxconn_frontend),
                 "set maxconn frontend <frontend> <value> : change a frontend's maxconn setting")
    reg.register(("set", "maxconn", "global"), admin(set_maxconn_global),
                 "set maxconn global <value>              : change the per-process maxconn setting")
    reg.register(("shutdown", "sessions", "server"), admin(shutdown_sessions_server),
                 "shutdown sessions server <bk>/<srv>     : kill sessions on a server")
    reg.register(("add", "server"), admin(add_server),
                 "add server <bk>/<srv>                   : create a new server")
    reg.register(("del", "server"), admin(del_server),
                 "del server <bk>/<srv>                   : remove a dynamically added server")


def parse_maxconn_change(frontends, srv, text: str) -> str | None:
    """HAProxy's server_parse_maxconn_change_request (`set maxconn server`, an agent's
    "maxconn:N"): the error, or None once applied."""
    if not text:
        return "Require <maxconn>.\n"
    v, rest = c_strtol(text)
    if v is None:
        return "maxconn string empty or preceded by garbage"
    if rest:
        return "Trailing garbage in maxconn string"
    if v != srv.maxconn:
        set_server_maxconn(frontends, srv, v)
    return None


def set_server_maxconn(frontends, srv, v: int) -> None:
    srv.maxconn = v
    b = srv.backend
    b._limited = any(s.maxconn for s in b.servers)
    for fe in frontends:                    # the frontends' per-backend shortcuts
        plans = getattr(fe, "_forward_plans", None)
        if plans is not None:
            plans.pop(b, None)
    # a higher limit lets waiting requests in
    while (not srv.maxconn or srv.cur < srv.maxconn) and (srv.queue or b.queue):
        queue = srv.queue or b.queue
        fut = queue.popleft()
        if not fut.done():
            srv.cur += 1
            fut.set_result(srv)


def _dequeue(fe) -> None:
    """Connections waiting for a frontend slot start once the limits allow."""
    proc = fe.proc
    while fe.waiting and not ((fe.maxconn and fe.stats.scur >= fe.maxconn)
                              or (proc.maxconn and proc.cur_conns >= proc.maxconn)):
        w = fe.waiting.pop(0)
        if not w.closed:
            w.transport.resume_reading()
            fe._start(w)
