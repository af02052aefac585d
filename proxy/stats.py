"""Proxy commands on the runtime API: `show info`, `show stat` (HAProxy 2.6's CSV
columns, in its order), `set server <bk>/<srv> state ready|drain|maint`,
`disable|enable server <bk>/<srv>`, and edgestick's `reload` (HAProxy does reloads
from its master CLI; here the process re-reads its configuration itself)."""
from __future__ import annotations

import os
import socket
import time

from edgestick import __version__
from edgestick.freq_ctr import U32, now_ms, read_freq


class PerSecond:
    """HAProxy's per-second rates (a freq_ctr over 1 s) and their peaks for counters
    that keep only totals, so that counting costs nothing per event: `tick()`, once a
    second, notes the totals; a read combines the count since that tick with the
    previous second's, weighted by what remains of the current second (read_freq). A
    peak is the highest count of one second, as HAProxy's *_max keep the highest
    current-period count."""
    __slots__ = ("tick_ms", "base", "prev", "peak", "active_ms")

    def __init__(self, n: int):
        self.tick_ms = now_ms()
        self.base = [0] * n
        self.prev = [0] * n
        self.peak = [0] * n
        self.active_ms = None       # the tick that last saw events (lastsess)

    def tick(self, totals, now: int) -> None:
        if now - self.tick_ms < 500:    # ticked already this second (a shared backend)
            return
        base, prev, peak = self.base, self.prev, self.peak
        for i, total in enumerate(totals):
            count = total - base[i]
            if count:
                self.active_ms = now
                if count > peak[i]:
                    peak[i] = count
            prev[i] = count
            base[i] = total
        self.tick_ms = now

    def rate(self, i: int, total: int, now: int) -> int:
        return read_freq(self.tick_ms & U32, total - self.base[i], self.prev[i], 1000, now & U32)

    def max(self, i: int, total: int) -> int:
        return max(self.peak[i], total - self.base[i])

    def idle_s(self, total: int, now: int) -> int:
        """Seconds since the last event of counter 0 (-1: never), to the second."""
        if total != self.base[0]:
            return 0
        return -1 if self.active_ms is None else (now - self.active_ms) // 1000

STAT_FIELDS = (
    "pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,"
    "wredis,status,weight,act,bck,chkfail,chkdown,lastchg,downtime,qlimit,pid,iid,sid,"
    "throttle,lbtot,tracked,type,rate,rate_lim,rate_max,check_status,check_code,"
    "check_duration,hrsp_1xx,hrsp_2xx,hrsp_3xx,hrsp_4xx,hrsp_5xx,hrsp_other,hanafail,"
    "req_rate,req_rate_max,req_tot,cli_abrt,srv_abrt,comp_in,comp_out,comp_byp,comp_rsp,"
    "lastsess,last_chk,last_agt,qtime,ctime,rtime,ttime,agent_status,agent_code,"
    "agent_duration,check_desc,agent_desc,check_rise,check_fall,check_health,agent_rise,"
    "agent_fall,agent_health,addr,cookie,mode,algo,conn_rate,conn_rate_max,conn_tot,"
    "intercepted,dcon,dses,wrew,connect,reuse,cache_lookups,cache_hits,srv_icur,src_ilim,"
    "qtime_max,ctime_max,rtime_max,ttime_max,eint,idle_conn_cur,safe_conn_cur,"
    "used_conn_cur,need_conn_est,uweight,agg_server_status,agg_server_check_status,"
    "agg_check_status").split(",")
# HAProxy 2.6 appends its statistics modules' columns after a "-" column: SSL, HTTP/2
# and HTTP/1 (frontends and backends; servers leave the h2/h1 ones empty)
SSL_FIELDS = ("ssl_sess", "ssl_reused_sess", "ssl_failed_handshake")
H2_FIELDS = tuple(
    "h2_headers_rcvd,h2_data_rcvd,h2_settings_rcvd,h2_rst_stream_rcvd,h2_goaway_rcvd,"
    "h2_detected_conn_protocol_errors,h2_detected_strm_protocol_errors,h2_rst_stream_resp,"
    "h2_goaway_resp,h2_open_connections,h2_backend_open_streams,h2_total_connections,"
    "h2_backend_total_streams".split(","))
H1_FIELDS = tuple(
    "h1_open_connections,h1_open_streams,h1_total_connections,h1_total_streams,h1_bytes_in,"
    "h1_bytes_out,h1_spliced_bytes_in,h1_spliced_bytes_out".split(","))
ALL_FIELDS = (*STAT_FIELDS, "-", *SSL_FIELDS, *H2_FIELDS, *H1_FIELDS)
HEADER = "# " + ",".join(ALL_FIELDS) + ",\n"
_HRSP = ("hrsp_1xx", "hrsp_2xx", "hrsp_3xx", "hrsp_4xx", "hrsp_5xx", "hrsp_other")
# features edgestick does not have: HAProxy prints 0 for them while unused
_UNUSED = {"wrew": 0, "comp_in": 0, "comp_out": 0, "comp_byp": 0, "comp_rsp": 0,
           "cache_lookups": 0, "cache_hits": 0, **{f: 0 for f in H2_FIELDS},
           "h1_spliced_bytes_in": 0, "h1_spliced_bytes_out": 0}
# HAProxy's response times (q/c/r/ttime and their _max): not measured here (yet)
_TIMES = ("qtime", "ctime", "rtime", "ttime", "qtime_max", "ctime_max", "rtime_max",
          "ttime_max")
_SSL_ZERO = {f: 0 for f in SSL_FIELDS}     # no SSL towards servers
CHECK_DESC = {
    "INI": "Initializing", "SOCKERR": "Socket error", "L4OK": "Layer4 check passed",
    "L4TOUT": "Layer4 timeout", "L4CON": "Layer4 connection problem",
    "L7OK": "Layer7 check passed", "L7TOUT": "Layer7 timeout",
    "L7RSP": "Layer7 invalid response", "L7STS": "Layer7 wrong status",
}


def _row(values: dict) -> str:
    return ",".join(_csv(values.get(f)) for f in ALL_FIELDS) + ",\n"


def _csv(value) -> str:
    """A field as HAProxy's csv_enc writes it: quoted when it holds a comma, a quote,
    a line break, or begins or ends with a space."""
    if value is None:
        return ""
    text = str(value)
    if any(ch in text for ch in ',"\r\n') or text[:1] == " " or text[-1:] == " ":
        return '"' + text.replace('"', '""') + '"'
    return text


def proxy_ids(cfg) -> dict[str, int]:
    """Each proxy's `iid` as HAProxy numbers them: in the order of the configuration,
    an explicit `id` kept, the others the next free number, the runtime API's own
    frontend (created by the first `stats socket` line) counted where it was declared.
    The counter moves on past every proxy, numbered or not (check_config_validity)."""
    files = list(cfg.files)

    def at(where):
        return (files.index(where.file) if where.file in files else len(files), where.line)

    order = [(at(p.where), p) for p in cfg.proxies]
    if cfg.global_.stats_sockets:
        order.append((at(cfg.global_.stats_sockets[0].where), None))
    order.sort(key=lambda item: item[0])
    used = {p.id for p in cfg.proxies if p.id is not None}
    ids, nxt = {}, 1
    for _, p in order:
        if p is None or p.id is None:
            while nxt in used:
                nxt += 1
            used.add(nxt)
            if p is not None:
                ids[p.name] = nxt
        else:
            ids[p.name] = p.id
        nxt += 1
    return ids


def _slim_backend(proc, b) -> int:
    """A backend's `fullconn`, else as HAProxy derives it: a tenth of the maxconn of
    the frontends that can reach it (default_backend, use_backend, its own listen)."""
    if b.model.fullconn:
        return b.model.fullconn
    total = 0
    for fe in proc.frontends:
        m = fe.model
        if (fe.own_backend is b or m.default_backend == b.name
                or any(ub.backend == b.name for ub in m.use_backends)):
            total += fe.maxconn or proc.maxconn
    return (total + 9) // 10 if total else None


def show_stat(proc) -> str:
    return HEADER + "".join(_row(v) for v in stat_rows(proc))


def stat_rows(proc) -> list[dict]:
    """`show stat`'s rows as {field: value} (None: left empty), as HAProxy lists them:
    proxy after proxy in the configuration's order, a frontend's row, then a backend's
    servers and the backend itself. /metrics reads them too."""
    now = time.monotonic()
    ms = now_ms()
    ids = proxy_ids(proc.cfg)
    frontends = {id(fe.model): fe for fe in proc.frontends}
    backends = {id(b.model): b for b in proc.backends.values()}
    rows = []
    for p in proc.cfg.proxies:
        fe = frontends.get(id(p))
        if fe is not None:
            rows.append(_frontend_row(proc, fe, ids.get(p.name), ms))
        b = backends.get(id(p))
        if b is not None:
            rows += _backend_rows(proc, b, ids.get(p.name), now, ms)
    return rows


def _frontend_row(proc, fe, iid, ms: int) -> dict:
    s = fe.stats
    http = fe.model.mode == "http"
    rate, conn_rate, req_rate = s.rate(ms)
    rate_max, conn_rate_max, req_rate_max = s.rate_max()
    streams = s.req_tot - s.no_stream
    v = {"pxname": fe.name, "svname": "FRONTEND", "scur": s.scur, "smax": s.smax,
         "slim": fe.maxconn or proc.maxconn or None, "stot": s.stot, "bin": s.bin,
         "bout": s.bout, "dreq": s.dreq, "dresp": s.dresp, "ereq": s.ereq,
         "status": "STOP" if proc.stopping else "OPEN", "pid": 1, "iid": iid, "sid": 0,
         "type": 0, "rate": rate, "rate_lim": 0, "rate_max": rate_max, "req_rate": req_rate,
         "req_rate_max": req_rate_max, "req_tot": s.req_tot, "mode": fe.model.mode,
         "conn_rate": conn_rate, "conn_rate_max": conn_rate_max, "conn_tot": s.conn_tot,
         "intercepted": s.intercepted, "dcon": s.dcon, "dses": s.dses, "eint": s.eint,
         "-": "-", "ssl_sess": s.ssl_sess, "ssl_reused_sess": s.ssl_reused,
         "ssl_failed_handshake": 0, **_UNUSED,
         "h1_open_connections": len(fe.conns) if http else 0,
         "h1_open_streams": streams - s.streams_done if http else 0,
         "h1_total_connections": s.conn_tot if http else 0,
         "h1_total_streams": streams if http else 0,
         "h1_bytes_in": s.h1_in, "h1_bytes_out": s.h1_out}
    for i, f in enumerate(_HRSP):
        v[f] = s.hrsp[i]
    return v


def _backend_rows(proc, b, iid, now: float, ms: int) -> list[dict]:
    """The servers' rows, then the backend's."""
    rows = []
    mode = b.model.mode
    for srv in b.servers:
        checked = srv.model.check
        status = {"UP": "UP", "DOWN": "DOWN", "MAINT": "MAINT"}[srv.state]
        if not checked and status == "UP":
            status = "no check"
        idle = srv.idle
        safe = sum(1 for c in idle if c.reused)
        v = {"pxname": b.name, "svname": srv.name, "qcur": len(srv.queue), "qmax": 0,
             "scur": srv.cur, "smax": srv.smax, "slim": srv.maxconn or None,
             "stot": srv.stot, "bin": srv.bin, "bout": srv.bout, "dresp": srv.dresp,
             "econ": srv.econ, "eresp": srv.eresp, "wretr": srv.wretr,
             "wredis": srv.wredis, "status": status, "weight": srv.weight,
             "act": 0 if srv.backup else 1, "bck": 1 if srv.backup else 0,
             "lastchg": int(now - srv.last_change), "qlimit": srv.model.maxqueue or None,
             "pid": 1, "iid": iid, "sid": srv.id, "lbtot": srv.lbtot, "type": 2,
             "rate": srv.rates.rate(0, srv.stot, ms),
             "rate_max": srv.rates.max(0, srv.stot),
             "req_tot": srv.stot - srv.unsent, "cli_abrt": srv.cli_abrt,
             "srv_abrt": srv.srv_abrt, "lastsess": srv.rates.idle_s(srv.stot, ms),
             "addr": srv.model.addr, "cookie": srv.cookie, "mode": mode, "wrew": 0,
             "connect": srv.connects, "reuse": srv.reuses, "srv_icur": len(idle),
             "eint": 0, "idle_conn_cur": len(idle) - safe, "safe_conn_cur": safe,
             "used_conn_cur": len(srv.all_conns) - len(idle),
             "need_conn_est": srv.max_used, "uweight": srv.weight,
             "-": "-", **_SSL_ZERO}
        if checked:
            # "* ": a check is under way (the status is the last one's)
            v.update({"chkfail": srv.chkfail, "chkdown": srv.chkdown,
                      "downtime": srv.downtime(now),
                      "check_status": ("* " if srv.checking else "") + srv.check_status,
                      "check_code": srv.check_code, "check_duration": srv.check_duration,
                      "last_chk": srv.last_chk,
                      "check_desc": CHECK_DESC.get(srv.check_status, ""),
                      "check_rise": srv.model.rise, "check_fall": srv.model.fall,
                      "check_health": srv.health})
        for i, f in enumerate(_HRSP):
            v[f] = srv.hrsp[i]
        rows.append(v)
    servers = b.servers
    usable = [s for s in servers if s.usable]
    # the weights of the servers taking traffic: the active ones, else the backups
    weight = (sum(s.weight for s in usable if not s.backup)
              or sum(s.weight for s in usable if s.backup))
    stot = b.stot
    conns = sum(len(s.all_conns) for s in servers)
    connects = sum(s.connects for s in servers)
    reuses = sum(s.reuses for s in servers)
    v = {"pxname": b.name, "svname": "BACKEND", "qcur": len(b.queue), "qmax": 0,
         "scur": b.cur, "smax": b.smax, "slim": _slim_backend(proc, b), "stot": stot,
         "bin": b.bin_own + sum(s.bin for s in servers),
         "bout": b.bout_own + sum(s.bout for s in servers),
         "dreq": b.dreq, "dresp": b.dresp, "econ": b.econ, "eresp": b.eresp,
         "wretr": b.wretr, "wredis": b.wredis, "status": "UP" if b.up else "DOWN",
         "weight": weight,
         "act": sum(1 for s in usable if not s.backup),
         "bck": sum(1 for s in usable if s.backup), "chkdown": b.chkdown,
         "lastchg": int(now - b.last_change), "downtime": b.downtime(now), "pid": 1,
         "iid": iid, "sid": 0, "lbtot": sum(s.lbtot for s in servers), "type": 1,
         "rate": b.rates.rate(0, stot, ms), "rate_max": b.rates.max(0, stot),
         "req_tot": b.req_tot, "cli_abrt": sum(s.cli_abrt for s in servers),
         "srv_abrt": sum(s.srv_abrt for s in servers),
         "lastsess": b.rates.idle_s(stot, ms), "mode": mode, "algo": b.algo,
         "cookie": b.model.cookie.name if b.model.cookie is not None else None,
         "connect": connects, "reuse": reuses, "eint": 0,
         "uweight": weight, "agg_server_status": 0,
         "agg_server_check_status": 0, "agg_check_status": 0,
         "-": "-", **_SSL_ZERO, **_UNUSED,
         "h1_open_connections": conns, "h1_open_streams": b.cur,
         "h1_total_connections": connects, "h1_total_streams": connects + reuses,
         "h1_bytes_in": sum(s.wire_in for s in servers),
         "h1_bytes_out": sum(s.wire_out for s in servers)}
    for i, f in enumerate(_HRSP):
        v[f] = b.hrsp[i]
    rows.append(v)
    return rows


def show_info(proc) -> str:
    up = int(time.time() - proc.start_time)
    d, rem = divmod(up, 86400)
    h, rem = divmod(rem, 3600)
    m, s = divmod(rem, 60)
    cum_conns = sum(fe.stats.conn_tot for fe in proc.frontends + proc.old_frontends)
    cum_req = sum(fe.stats.req_tot for fe in proc.frontends + proc.old_frontends)
    fields = [
        ("Name", "edgestick"), ("Version", __version__), ("Nbthread", 1), ("Nbproc", 1),
        ("Process_num", 1), ("Pid", os.getpid()), ("Uptime", f"{d}d {h}h{m:02d}m{s:02d}s"),
        ("Uptime_sec", up), ("Maxconn", proc.maxconn), ("Hard_maxconn", proc.maxconn),
        ("CurrConns", proc.cur_conns), ("CumConns", cum_conns), ("CumReq", cum_req),
        ("Stopping", 1 if proc.stopping else 0),
        ("Listeners", sum(len(fe.listeners) for fe in proc.frontends)),
        ("Reloads", proc.reloads), ("node", socket.gethostname()),
        ("Start_time_sec", int(proc.start_time)),
    ]
    return "".join(f"{k}: {v}\n" for k, v in fields)


def _server(proc, text: str):
    bk, _, name = text.partition("/")
    b = proc.backends.get(bk)
    return None if b is None else b.by_name.get(name)


def register_commands(proc, reg) -> None:
    from .runtime_api import ADMIN, PERMISSION_DENIED

    def info(cli, args):
        return show_info(proc)

    def stat(cli, args):
        return show_stat(proc)

    async def reload(cli, args):
        if not cli.has_level(ADMIN):
            return PERMISSION_DENIED
        return await proc.reload()

    def set_server(cli, args):
        if not cli.has_level(ADMIN):
            return PERMISSION_DENIED
        if len(args) < 3:
            return "Require 'backend/server'.\n"
        srv = _server(proc, args[2])
        if srv is None:
            return "No such server.\n"
        if len(args) >= 5 and args[3] == "state":
            if args[4] not in ("ready", "drain", "maint"):
                return "'set server <srv> state' expects 'ready', 'drain' and 'maint'.\n"
            srv.admin_maint = args[4] == "maint"
            srv.last_change = time.monotonic()
            if srv.admin_maint:
                srv.drop_idle()
            srv.backend.recalc()
            return ""
        return "'set server <srv>' only supports 'state' here.\n"

    def toggle(enable: bool):
        def handler(cli, args):
            if not cli.has_level(ADMIN):
                return PERMISSION_DENIED
            srv = _server(proc, args[2]) if len(args) > 2 else None
            if srv is None:
                return "No such server.\n"
            srv.admin_maint = not enable
            srv.backend.recalc()
            return ""
        return handler

    reg.register(("show", "info"), info,
                 "show info [desc|json|typed|float]*      : report information about the running process")
    reg.register(("show", "stat"), stat,
                 "show stat [desc|json|no-maint|typed|up]*: report counters for each proxy and server")
    reg.register(("reload",), reload,
                 "reload                                  : re-read the configuration, keeping the tables")
    reg.register(("set", "server"), set_server,
                 "set server <bk>/<srv> [opts]            : change a server's state")
    reg.register(("disable", "server"), toggle(False),
                 "disable server (DEPRECATED)             : disable a server for maintenance (use 'set server' instead)")
    reg.register(("enable", "server"), toggle(True),
                 "enable server  (DEPRECATED)             : enable a disabled server (use 'set server' instead)")
