"""What moves a server's state besides its own health check, as HAProxy 2.6's server.c
and check.c do: tracking another server (`track`), slow start (`slowstart`), weight and
maxconn changes during it, observed traffic errors (`observe`,
`error-limit`, `on-error`), what happens to the sessions of a server marked down or up
(`on-marked-down`, `on-marked-up`), and how `show stat` words a server's state. The
configuration side: the server options setting them and HAProxy's checks of them
(cfgparse, check_config_validity).
"""
from __future__ import annotations

import asyncio
import ipaddress
import socket
import time

from edgestick.cfgsyntax import ConfigError

from .stick_table import parse_time_err

BE_WEIGHT_SCALE = 16            # HAProxy's effective weights are user weights x 16

# --------------------------------------------------------------------------- configuration

OPTIONS = frozenset({"track", "slowstart", "agent-port", "agent-inter", "agent-addr", "agent-send",
                     "observe", "error-limit", "on-error", "on-marked-down", "on-marked-up"})
_ON_ERROR = ("fastinter", "fail-check", "sudden-death", "mark-down")


def parse_option(line, srv, opt: str, val: str, kw: str) -> None:
    """One of OPTIONS with its value `val`, as HAProxy's server keyword parsers read it."""
    if opt == "track":
        srv.track = val
    elif opt == "agent-port":
        srv.agent_port = atol(val)
    elif opt in ("agent-inter", "slowstart"):
        ms, err, _ = parse_time_err(val)
        if err is not None:
            raise line.error(f"unexpected character '{err}' in '{opt}' argument of "
                             f"server {srv.name}.", kw)
        if opt == "slowstart":
            srv.slowstart_ms = ms
        elif ms == 0:
            raise line.error(f"invalid value 0 for argument 'agent-inter' of server "
                             f"{srv.name}.", kw)
        else:
            srv.agent_inter_ms = ms
    elif opt == "agent-addr":
        if not _host_only(val):
            raise line.error(f"parsing agent-addr failed. Check if '{val}' is correct "
                             "address.", kw)
        srv.agent_addr = _resolve(val)
    elif opt == "agent-send":
        srv.agent_send = val
    elif opt == "observe":
        if val not in ("none", "layer4", "layer7"):
            raise line.error("'observe' expects one of 'none', 'layer4', 'layer7' but got "
                             f"'{val}'.", kw)
        srv.observe = None if val == "none" else val
    elif opt == "error-limit":
        limit = atol(val)
        if limit < 1:
            raise line.error("error-limit has to be > 0.", kw)
        srv.error_limit = limit
    elif opt == "on-error":
        if val not in _ON_ERROR:
            raise line.error("'on-error' expects one of 'fastinter', 'fail-check', "
                             f"'sudden-death' or 'mark-down' but got '{val}'.", kw)
        srv.on_error = val
    elif opt == "on-marked-down":
        if val != "shutdown-sessions":
            raise line.error(f"'on-marked-down' expects 'shutdown-sessions' but got '{val}'.",
                             kw)
        srv.on_marked_down = True
    elif opt == "on-marked-up":
        if val != "shutdown-backup-sessions":
            raise line.error("'on-marked-up' expects 'shutdown-backup-sessions' but got "
                             f"'{val}'.", kw)
        srv.on_marked_up = True


def missing_argument(opt: str) -> str | None:
    """HAProxy's message for one of OPTIONS written without its value."""
    if opt == "track":
        return "'track' expects [<proxy>/]<server> as argument."
    if opt == "agent-send":
        return "'agent-send' expects a string as argument."
    return None


def atol(text: str) -> int:
    """C's atol: the leading digits (and sign), 0 without any."""
    digits = ""
    for i, ch in enumerate(text.strip()):
        if ch.isdigit() or (i == 0 and ch in "+-"):
            digits += ch
        else:
            break
    try:
        return int(digits)
    except ValueError:
        return 0


def _host_only(text: str) -> bool:
    """An address without a port (agent-addr takes none)."""
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        pass
    if ":" in text or not text:
        return False
    try:
        socket.getaddrinfo(text, None, type=socket.SOCK_STREAM)
        return True
    except (OSError, UnicodeError):
        return False


def _resolve(text: str) -> str:
    try:
        ipaddress.ip_address(text)
        return text
    except ValueError:
        return socket.getaddrinfo(text, None, type=socket.SOCK_STREAM)[0][4][0]


def finish(cfg, warnings: list) -> None:
    """After the whole configuration is read: each server's options checked against its
    proxy, and `track` targets resolved to "backend/server" (check_config_validity)."""
    for p in cfg.proxies:
        if not p.has_backend:
            continue
        for srv in p.servers:
            kw = f"server {p.name}/{srv.name}"
            if srv.track is not None and srv.check:
                raise ConfigError("unable to enable checks and tracking at the same time!",
                                  srv.where.file, srv.where.line, kw)
            if srv.agent_check and not srv.agent_port:
                raise ConfigError(f"server {srv.name} does not have agent port. Agent check "
                                  "has been disabled.", srv.where.file, srv.where.line, kw)
            if srv.observe == "layer7" and p.mode != "http":
                # (an alert that does not stop HAProxy: nothing to observe there)
                warnings.append(str(ConfigError("'layer7' can only be used in http proxies.",
                                                 srv.where.file, srv.where.line, kw)))
                srv.observe = None
    resolved: dict[int, object] = {}       # id(server model) -> tracked server model
    for p in cfg.proxies:
        if not p.has_backend:
            continue
        for srv in p.servers:
            if srv.track is None:
                continue
            kw = f"server {p.name}/{srv.name}"

            def fail(msg):
                return ConfigError(msg, srv.where.file, srv.where.line, kw)
            pname, slash, sname = srv.track.partition("/")
            if not slash:
                pname, sname = p.name, srv.track
            px = cfg.backends.get(pname)
            if px is None:
                raise fail(f"unable to find required proxy '{pname}' for tracking.")
            target = next((s for s in px.servers if s.name == sname), None)
            if target is None:
                raise fail(f"unable to find required server '{sname}' for tracking.")
            if not (target.check or target.agent_check or target.track):
                raise fail(f"unable to use {pname}/{sname} for tracking as it does not have "
                           "any check nor agent enabled.")
            walk = target
            while walk is not None:
                if walk is srv:
                    raise fail(f"unable to track {pname}/{sname} as it belongs to a tracking "
                               f"chain looping back to {p.name}/{srv.name}.")
                walk = resolved.get(id(walk))
            resolved[id(srv)] = target
            srv.track = f"{pname}/{sname}"


# --------------------------------------------------------------------------- run time: tracking

def link(backends: dict) -> None:
    """Point each tracking server at the one it tracks (names checked by `finish`); a
    tracked server's state changes then follow its trackers (see `propagate`)."""
    for b in backends.values():
        for s in b.servers:
            if s.model.track is None:
                continue
            pname, _, sname = s.model.track.partition("/")
            target = backends[pname].by_name[sname]
            s.track = target
            target.trackers.append(s)
            if target not in target.backend.tracked:
                target.backend.tracked.append(target)
    for b in backends.values():
        for s in b.tracked:
            for t in s.trackers:
                sync_tracker(t)


def propagate(backend) -> None:
    """After a state change in `backend`: its tracked servers' state down their trackers
    (HAProxy: srv_update_status walks sv->trackers)."""
    for s in backend.tracked:
        for t in s.trackers:
            sync_tracker(t)


def sync_tracker(t) -> None:
    """A tracking server takes the operational state of the server it tracks, and its
    maintenance and drain modes as inherited ones ("MAINT (via b/s)")."""
    s = t.track
    changed = False
    if s.admin_maint and t.via_maint is None:
        t.via_maint = s                 # (the server it tracks, not the chain's end)
        t.admin_maint = True
        t.drop_idle()
        changed = True
    elif not s.admin_maint and t.via_maint is not None:
        t.via_maint = None
        t.admin_maint = False
        changed = True
    drain = s.admin_drain or s.via_drain
    if drain != t.via_drain:
        t.via_drain = drain
        t.admin_drain = drain
        changed = True
    if t.op_up != s.op_up:
        t.set_state(s.op_up)           # (recalculates t's backend, and so on down)
    elif changed:
        t.last_change = time.monotonic()
        t.backend.recalc()


def reference(srv):
    """The end of a tracking chain: the server whose checks decide."""
    while srv.track is not None:
        srv = srv.track
    return srv


def stat_status(srv) -> str:
    """A server's `show stat` status as HAProxy 2.6 words it (stats.c, srv_hlt_st)."""
    if srv.admin_maint:
        via = srv.via_maint
        return "MAINT" if via is None else f"MAINT (via {via.backend.name}/{via.name})"
    ref = reference(srv)
    checked = ref.model.check
    agent = ref.agent
    rise, fall = ref.model.rise, ref.model.fall
    if srv.op_up:
        going_down = checked and ref.health < rise + fall - 1
        if srv.admin_drain:
            if agent is not None:
                return "DRAIN (agent)"
            return f"DRAIN {ref.health - rise + 1}/{fall}" if going_down else "DRAIN"
        if going_down:
            return f"UP {ref.health - rise + 1}/{fall}"
        return "UP" if checked else "no check"
    if agent is not None and not agent.health:
        return "DOWN (agent)"
    if checked and not ref.health:
        return "DOWN"
    if checked or agent is not None:
        return f"DOWN {ref.health}/{rise}"
    return "DOWN"

def stat_fields(srv) -> dict:
    """`show stat` columns of a tracking, agent-checked or slow-starting server."""
    v = {}
    if srv.track is not None:
        v["tracked"] = f"{srv.track.backend.name}/{srv.track.name}"
    if srv.agent is not None:
        v.update(srv.agent.stat_fields())
    if srv.warm_since is not None and srv.weight and not srv.admin_drain:
        v["throttle"] = throttle(srv.eweight, srv.weight)
    if reference(srv).model.observe:
        v["hanafail"] = srv.hanafail
    return v


# --------------------------------------------------------------------------- run time: slow start

def dynamic_weights(backend) -> bool:
    """Whether the backend's algorithm follows weight changes at run time (HAProxy's
    BE_LB_PROP_DYN): roundrobin, leastconn, first and consistent hashing."""
    return backend.algo in ("roundrobin", "leastconn", "first") or backend.consistent


def warmup_factor(elapsed_s: int, slowstart_s: int) -> int:
    """HAProxy's slow start step (server_recalc_eweight): the share of the full weight,
    in 1/16ths, `elapsed_s` whole seconds after the server came up; 16 once over."""
    if elapsed_s < 0 or elapsed_s >= slowstart_s:
        return BE_WEIGHT_SCALE
    return (BE_WEIGHT_SCALE * elapsed_s + slowstart_s) // slowstart_s


def effective_weight(uweight: int, factor: int) -> int:
    return uweight * factor


def shown_weight(eweight: int) -> int:
    """`show stat` weight: the effective weight back in user units, rounded up."""
    return (eweight + BE_WEIGHT_SCALE - 1) // BE_WEIGHT_SCALE


def throttle(eweight: int, uweight: int) -> int:
    """`show stat` throttle (server_throttle_rate): percent of the full weight."""
    if not uweight:
        return 100
    return (100 * eweight + BE_WEIGHT_SCALE - 1) // (BE_WEIGHT_SCALE * uweight)


def slowstart_s(srv) -> int:
    return (srv.model.slowstart_ms + 999) // 1000


def check_warmups(backend) -> None:
    """From Backend.recalc, for backends with slow-starting servers: a server that came
    up or left maintenance starts its ramp (HAProxy: srv_set_running, srv_adm_set_ready)."""
    for s in backend.servers:
        if not s.model.slowstart_ms:
            continue
        live = s.op_up and not s.admin_maint
        if live and not s.was_live:
            s.was_live = True
            start_warmup(s)
        elif not live:
            s.was_live = False
            stop_warmup(s)


def start_warmup(srv) -> None:
    """The server is STARTING: its weight ramps up (with a dynamic algorithm; a static
    one keeps the full weight, the server is STARTING all the same: throttle 100)."""
    stop_warmup(srv)
    srv.warm_since = int(time.time())
    warm_step(srv, srv.warm_since)
    try:
        srv.warmup = asyncio.get_running_loop().create_task(_warm(srv))
    except RuntimeError:            # no loop (a unit test): the ramp is driven by hand
        srv.warmup = None


def stop_warmup(srv) -> None:
    task = srv.warmup
    srv.warmup = None
    srv.warm_since = None
    if task is not None and task is not asyncio.current_task():
        task.cancel()


def warm_step(srv, now_s: int | None = None) -> bool:
    """Recompute a warming server's weight; False once it is at full weight."""
    if srv.warm_since is None:
        return False
    now_s = int(time.time()) if now_s is None else now_s
    elapsed = now_s - srv.warm_since
    if elapsed < 0 or elapsed >= slowstart_s(srv):     # RUNNING now: a state change
        srv.warm_since = None
        srv.last_change = time.monotonic()
        set_eweight(srv, srv.weight * BE_WEIGHT_SCALE)
        return False
    factor = warmup_factor(elapsed, slowstart_s(srv))
    if not dynamic_weights(srv.backend):
        factor = BE_WEIGHT_SCALE
    set_eweight(srv, effective_weight(srv.weight, factor))
    return True


async def _warm(srv):
    # HAProxy's warmup task: every slowstart/20, at least a second
    period = max(1.0, srv.model.slowstart_ms / 20000.0)
    try:
        while True:
            await asyncio.sleep(period)
            if not warm_step(srv):
                break
    finally:
        if srv.warmup is asyncio.current_task():
            srv.warmup = None


def set_eweight(srv, eweight: int) -> None:
    if eweight != srv.eweight:
        srv.eweight = eweight
        srv.backend.reweight(srv)


def set_uweight(srv, weight: int) -> None:
    """A new user weight during a ramp (`set weight`, the agent's "N%"): the effective
    one follows it."""
    if weight == srv.weight:
        return
    srv.weight = weight
    if srv.warm_since is not None:
        warm_step(srv)
    else:
        set_eweight(srv, weight * BE_WEIGHT_SCALE)
    srv.backend.recalc()


# --------------------------------------------------------------------------- run time: sessions

def marked(srv, up: bool) -> None:
    """`on-marked-down shutdown-sessions`: a server marked DOWN has its streams cut;
    `on-marked-up shutdown-backup-sessions`: a normal server marked UP cuts the streams
    of the backend's backup servers (HAProxy: srv_shutdown_streams with SF_ERR_DOWN /
    SF_ERR_UP)."""
    if not up and srv.model.on_marked_down:
        shutdown_streams(srv)
    elif up and srv.model.on_marked_up and not srv.backup:
        for s in srv.backend.servers:
            if s.backup:
                shutdown_streams(s)


# server connections cut so: their stream answers 502 and the client connection stays, as
# HAProxy's SF_ERR_DOWN / SF_ERR_UP (frontend.py looks here when a response fails)
CUT: set = set()


def shutdown_streams(srv) -> None:
    """Abort every connection of `srv` carrying a stream (idle ones are closed too)."""
    from .backend import abort_with_reset
    idle = set(srv.idle)
    srv.drop_idle()
    for conn in list(srv.all_conns):
        t = conn.transport
        if t is not None and conn not in idle:
            CUT.add(conn)
            conn.closed = True
            abort_with_reset(t)


def was_cut(conn) -> bool:
    """Whether a failed response's connection was cut by on-marked-down/-up (once)."""
    if conn in CUT:
        CUT.discard(conn)
        return True
    return False



# --------------------------------------------------------------------------- run time: observe

HANA_DURATION = 2**64 - 1       # show stat's check_duration after one (HAProxy's -1 as u64)


def observed(srv, ok: bool, what: str) -> None:
    """One observed outcome of `srv`'s traffic (check.c __health_adjust): a success
    clears the count of consecutive errors; `error-limit` errors in a row act as
    `on-error` says, and count in show stat's hanafail."""
    if ok:
        srv.errors = 0
        return
    srv.errors += 1
    m = srv.model
    if srv.errors < m.error_limit:
        return
    desc = f"Detected {srv.errors} consecutive errors, last one was: {what}"
    srv.errors = 0
    srv.hanafail += 1
    if m.on_error != "fastinter":
        if m.on_error == "sudden-death" and srv.health > m.rise:
            srv.health = m.rise + 1
        elif m.on_error == "mark-down":
            srv.health = m.rise
        # a failed check, as if the health check had said so
        from .backend import apply_check_result
        srv.check_status, srv.check_code, srv.last_chk = "HANA", None, desc
        srv.check_duration = HANA_DURATION
        apply_check_result(srv, False)
    if m.fastinter_ms:                  # every mode: the next check at `fastinter`
        srv.check_soon(m.fastinter_ms / 1000.0)


def observing(frontend) -> None:
    """Responses counted by `frontend` reach its observed servers (observe layer7): its
    status counter is wrapped, on this frontend only (the others keep theirs)."""
    count = frontend._count_status

    def count_status(backend, srv, status):
        count(backend, srv, status)
        seen = getattr(srv, "observe_status", None)
        if seen is not None:
            seen(status)
    frontend._count_status = count_status


def observe_frontends(frontends, backends) -> None:
    """main.py: the frontends of a configuration with `observe layer7` servers."""
    if any(s.model.observe == "layer7" and s.model.check
           for b in backends.values() for s in b.servers):
        for fe in frontends:
            observing(fe)
