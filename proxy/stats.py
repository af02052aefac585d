"""Proxy commands on the runtime API: `show info`, `show stat` (HAProxy 2.6's CSV
columns, in its order), `set server <bk>/<srv> state ready|drain|maint`,
`disable|enable server <bk>/<srv>`, and edgestick's `reload` (HAProxy does reloads
from its master CLI; here the process re-reads its configuration itself)."""
from __future__ import annotations

import os
import socket
import time

from edgestick import __version__

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
_HRSP = ("hrsp_1xx", "hrsp_2xx", "hrsp_3xx", "hrsp_4xx", "hrsp_5xx", "hrsp_other")


def _row(values: dict) -> str:
    return ",".join("" if values.get(f) is None else str(values[f]) for f in STAT_FIELDS) + ","


def show_stat(proc) -> str:
    now = time.monotonic()
    lines = ["# " + ",".join(STAT_FIELDS) + ",\n"]
    iid = 0
    for fe in proc.frontends:
        iid += 1
        s = fe.stats
        v = {"pxname": fe.name, "svname": "FRONTEND", "scur": s.scur, "smax": s.smax,
             "slim": fe.maxconn or proc.maxconn or "", "stot": s.stot, "bin": s.bin,
             "bout": s.bout, "dreq": s.dreq, "dresp": s.dresp, "ereq": s.ereq,
             "status": "STOP" if proc.stopping else "OPEN", "pid": 1, "iid": iid, "sid": 0,
             "type": 0, "req_tot": s.req_tot, "req_rate_max": s.req_rate_max,
             "mode": "http", "conn_tot": s.conn_tot, "intercepted": s.intercepted,
             "dcon": s.dcon, "dses": s.dses}
        for i, f in enumerate(_HRSP):
            v[f] = s.hrsp[i]
        lines.append(_row(v) + "\n")
    for b in proc.backends.values():
        iid += 1
        for sid, srv in enumerate(b.servers, 1):
            checked = srv.model.check
            status = {"UP": "UP", "DOWN": "DOWN", "MAINT": "MAINT"}[srv.state]
            if not checked and status == "UP":
                status = "no check"
            v = {"pxname": b.name, "svname": srv.name, "qcur": len(srv.queue), "qmax": 0, "scur": srv.cur,
                 "smax": srv.smax, "slim": srv.maxconn or "", "stot": srv.stot,
                 "econ": srv.econ, "eresp": srv.eresp, "wretr": srv.wretr,
                 "wredis": srv.wredis, "status": status, "weight": srv.weight,
                 "act": 0 if srv.backup else 1, "bck": 1 if srv.backup else 0,
                 "lastchg": int(now - srv.last_change), "pid": 1, "iid": iid,
                 "sid": srv.id, "lbtot": srv.lbtot, "type": 2,
                 "addr": srv.model.addr, "cookie": srv.cookie or "", "mode": "http",
                 "uweight": srv.weight}
            if checked:
                v.update({"chkfail": srv.chkfail, "chkdown": srv.chkdown,
                          "check_status": srv.check_status, "check_rise": srv.model.rise,
                          "check_fall": srv.model.fall, "check_health": srv.health})
            for i, f in enumerate(_HRSP):
                v[f] = srv.hrsp[i]
            lines.append(_row(v) + "\n")
        v = {"pxname": b.name, "svname": "BACKEND", "qcur": len(b.queue), "qmax": 0, "scur": b.cur,
             "smax": b.smax, "stot": b.stot, "dreq": b.dreq, "econ": b.econ,
             "eresp": b.eresp, "wretr": b.wretr, "wredis": b.wredis,
             "status": "UP" if b.up else "DOWN",
             "weight": sum(s.weight for s in b.servers if s.usable),
             "act": sum(1 for s in b.servers if s.usable and not s.backup),
             "bck": sum(1 for s in b.servers if s.usable and s.backup),
             "lastchg": int(now - b.last_change), "pid": 1, "iid": iid, "sid": 0,
             "lbtot": b.lbtot, "type": 1, "req_tot": b.req_tot, "mode": "http",
             "algo": b.algo}
        for i, f in enumerate(_HRSP):
            v[f] = b.hrsp[i]
        lines.append(_row(v) + "\n")
    return "".join(lines)


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
