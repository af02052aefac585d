"""Proxy commands on the runtime API: `show info`, `show stat` (HAProxy 2.6's CSV
columns, in its order), `set server <bk>/<srv> state ready|drain|maint`,
`disable|enable server <bk>/<srv>`, and edgestick's `reload` (HAProxy does reloads
from its master CLI; here the process re-reads its configuration itself)."""
from __future__ import annotations

import asyncio
import json
import os
import re
import resource
import socket
import time

from edgestick import __version__
from edgestick.freq_ctr import U32, now_ms, read_freq
from edgestick.cfgsyntax import c_atoi

from . import cache as cache_mod

from . import compression, server_health

# show info's Release_date for edgestick's __version__ (the day 0.1.0 was set), in
# HAProxy's format
RELEASE_DATE = "2026/11/27"


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
_UNUSED = {"wrew": 0,
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
    "HANA": "Health analyze",
}


def _row(values: dict) -> str:
    return ",".join(_csv(values.get(f)) for f in ALL_FIELDS) + ",\n"


def _csv(value) -> str:
    """A field as HAProxy's csv_enc writes it: quoted when it holds a comma, a quote or
    a line break (a leading space stays bare: 2.6.12 prints tcp-check's " at step...")."""
    if value is None:
        return ""
    text = str(value)
    if any(ch in text for ch in ',"\r\n'):
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
         "ssl_failed_handshake": 0, **_UNUSED, **compression.stat_fields(fe),
         **cache_mod.stat_fields(fe),
         "h1_open_connections": len(fe.conns) if http else 0,
         "h1_open_streams": streams - s.streams_done if http else 0,
         "h1_total_connections": s.conn_tot if http else 0,
         "h1_total_streams": streams if http else 0,
         "h1_bytes_in": s.h1_in, "h1_bytes_out": s.h1_out}
    for i, f in enumerate(_HRSP):
        v[f] = s.hrsp[i]
    if not http:
        v.update(_TCP_BLANK, intercepted=None, req_tot=s.req_tot)
    return v


# what HAProxy leaves empty in the rows of TCP proxies (no HTTP responses or requests),
# and the HTTP/1 multiplexer's counters, 0 on a TCP backend
_TCP_BLANK = {"req_tot": None, "cache_lookups": None, "cache_hits": None,
              **{f: None for f in _HRSP}}
_TCP_BACKEND = {**_TCP_BLANK, **{f: 0 for f in H1_FIELDS}}


def _backend_rows(proc, b, iid, now: float, ms: int) -> list[dict]:
    """The servers' rows, then the backend's."""
    rows = []
    mode = b.model.mode
    for srv in b.servers:
        checked = srv.model.check
        status = server_health.stat_status(srv)
        idle = srv.idle
        safe = sum(1 for c in idle if c.reused)
        v = {"pxname": b.name, "svname": srv.name, "qcur": len(srv.queue), "qmax": 0,
             "scur": srv.cur, "smax": srv.smax, "slim": srv.maxconn or None,
             "stot": srv.stot, "bin": srv.bin, "bout": srv.bout, "dresp": srv.dresp,
             "econ": srv.econ, "eresp": srv.eresp, "wretr": srv.wretr,
             "wredis": srv.wredis, "status": status,
             "weight": server_health.shown_weight(srv.eweight),
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
        if srv.track is not None or srv.agent is not None or srv.warm_since is not None \
                or srv.model.observe:
            v.update(server_health.stat_fields(srv))
        if checked:
            v.update({"chkfail": srv.chkfail, "chkdown": srv.chkdown,
                      "downtime": srv.downtime(now)})
        if checked and not srv.admin_maint:     # (HAProxy pauses checks in maintenance)
            # "* ": a check is under way (the status is the last one's)
            v.update({"check_status": ("* " if srv.checking else "") + srv.check_status,
                      "check_code": srv.check_code, "check_duration": srv.check_duration,
                      "last_chk": srv.last_chk,
                      "check_desc": CHECK_DESC.get(srv.check_status, ""),
                      "check_rise": srv.model.rise, "check_fall": srv.model.fall,
                      "check_health": srv.health})
        for i, f in enumerate(_HRSP):
            v[f] = srv.hrsp[i]
        if mode == "tcp":
            v.update(_TCP_BLANK)
        rows.append(v)
    servers = b.servers
    usable = [s for s in servers if s.usable]
    # the weights of the servers taking traffic: the active ones, else the backups
    serving = [s for s in usable if not s.backup] or [s for s in usable if s.backup]
    weight = server_health.shown_weight(sum(s.eweight for s in serving))
    uweight = sum(s.weight for s in serving)
    stot = b.stot
    conns = sum(len(s.all_conns) for s in servers)
    connects = sum(s.connects for s in servers)
    reuses = sum(s.reuses for s in servers)
    v = {"pxname": b.name, "svname": "BACKEND", "qcur": len(b.queue), "qmax": 0,
         "scur": b.cur, "smax": b.smax, "slim": _slim_backend(proc, b), "stot": stot,
         "bin": b.bin_own + sum(s.bin for s in servers),
         "bout": b.bout_own + sum(s.bout for s in servers),
         "dreq": b.dreq, "dresp": b.dresp, "econ": b.econ, "eresp": b.eresp,
         "wretr": b.wretr, "wredis": b.wredis,
         "status": "UP" if b.up or not servers else "DOWN",     # (no server: UP, as HAProxy)
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
         "uweight": uweight, "agg_server_status": 0,
         "agg_server_check_status": 0, "agg_check_status": 0,
         "-": "-", **_SSL_ZERO, **_UNUSED, **compression.stat_fields(b),
         **cache_mod.stat_fields(b),
         "h1_open_connections": conns, "h1_open_streams": b.cur,
         "h1_total_connections": connects, "h1_total_streams": connects + reuses,
         "h1_bytes_in": sum(s.wire_in for s in servers),
         "h1_bytes_out": sum(s.wire_out for s in servers)}
    for i, f in enumerate(_HRSP):
        v[f] = b.hrsp[i]
    if mode == "tcp":
        v.update(_TCP_BACKEND)
    rows.append(v)
    return rows


# ---------------------------------------------------------------- typed, json, desc
# HAProxy 2.6's `show info` fields as `show info typed desc` lists them: (position,
# name, tags, type, description). Positions 45/46 (zlib memory) and 51 (global
# `description`) are never printed here: empty, as in HAProxy without them.
INFO_META = (
    (0, "Name", "POS", "str", "Product name"),
    (1, "Version", "POS", "str", "Product version"),
    (2, "Release_date", "POS", "str", "Date of latest source code update"),
    (3, "Nbthread", "CGS", "u32", "Number of started threads (global.nbthread)"),
    (4, "Nbproc", "CGS", "u32", "Number of started worker processes (historical, always 1)"),
    (5, "Process_num", "KGP", "u32", "Relative worker process number (1)"),
    (6, "Pid", "SGP", "u32", "This worker process identifier for the system"),
    (7, "Uptime", "MDP", "str",
     "How long ago this worker process was started (days+hours+minutes+seconds)"),
    (8, "Uptime_sec", "MDP", "u32", "How long ago this worker process was started (seconds)"),
    (9, "Memmax_MB", "CLP", "u32",
     "Worker process's hard limit on memory usage in MB (-m on command line)"),
    (10, "PoolAlloc_MB", "MGP", "u32", "Amount of memory allocated in pools (in MB)"),
    (11, "PoolUsed_MB", "MGP", "u32", "Amount of pool memory currently used (in MB)"),
    (12, "PoolFailed", "MCP", "u32",
     "Number of failed pool allocations since this worker was started"),
    (13, "Ulimit-n", "CLP", "u32", "Hard limit on the number of per-process file descriptors"),
    (14, "Maxsock", "CLP", "u32", "Hard limit on the number of per-process sockets"),
    (15, "Maxconn", "CLP", "u32",
     "Hard limit on the number of per-process connections (configured or imposed by Ulimit-n)"),
    (16, "Hard_maxconn", "CLP", "u32",
     "Hard limit on the number of per-process connections (imposed by Memmax_MB or Ulimit-n)"),
    (17, "CurrConns", "MGP", "u32", "Current number of connections on this worker process"),
    (18, "CumConns", "MCP", "u32",
     "Total number of connections on this worker process since started"),
    (19, "CumReq", "MCP", "u32", "Total number of requests on this worker process since started"),
    (20, "MaxSslConns", "MMP", "u32",
     "Hard limit on the number of per-process SSL endpoints (front+back), 0=unlimited"),
    (21, "CurrSslConns", "MGP", "u32",
     "Current number of SSL endpoints on this worker process (front+back)"),
    (22, "CumSslConns", "MCP", "u32",
     "Total number of SSL endpoints on this worker process since started (front+back)"),
    (23, "Maxpipes", "CLP", "u32", "Hard limit on the number of pipes for splicing, 0=unlimited"),
    (24, "PipesUsed", "MGP", "u32", "Current number of pipes in use in this worker process"),
    (25, "PipesFree", "MGP", "u32",
     "Current number of allocated and available pipes in this worker process"),
    (26, "ConnRate", "MRP", "u32",
     "Number of front connections created on this worker process over the last second"),
    (27, "ConnRateLimit", "CLP", "u32", "Hard limit for ConnRate (global.maxconnrate)"),
    (28, "MaxConnRate", "MMP", "u32",
     "Highest ConnRate reached on this worker process since started (in connections per second)"),
    (29, "SessRate", "MRP", "u32",
     "Number of sessions created on this worker process over the last second"),
    (30, "SessRateLimit", "CLP", "u32", "Hard limit for SessRate (global.maxsessrate)"),
    (31, "MaxSessRate", "MRP", "u32",
     "Highest SessRate reached on this worker process since started (in sessions per second)"),
    (32, "SslRate", "MRP", "u32",
     "Number of SSL connections created on this worker process over the last second"),
    (33, "SslRateLimit", "CLP", "u32", "Hard limit for SslRate (global.maxsslrate)"),
    (34, "MaxSslRate", "MMP", "u32",
     "Highest SslRate reached on this worker process since started (in connections per second)"),
    (35, "SslFrontendKeyRate", "MGP", "u32",
     "Number of SSL keys created on frontends in this worker process over the last second"),
    (36, "SslFrontendMaxKeyRate", "MMP", "u32",
     "Highest SslFrontendKeyRate reached on this worker process since started (in SSL keys per second)"),
    (37, "SslFrontendSessionReuse_pct", "MGP", "u32",
     "Percent of frontend SSL connections which did not require a new key"),
    (38, "SslBackendKeyRate", "MRP", "u32",
     "Number of SSL keys created on backends in this worker process over the last second"),
    (39, "SslBackendMaxKeyRate", "MMP", "u32",
     "Highest SslBackendKeyRate reached on this worker process since started (in SSL keys per second)"),
    (40, "SslCacheLookups", "MCP", "u32",
     "Total number of SSL session ID lookups in the SSL session cache on this worker since started"),
    (41, "SslCacheMisses", "MCP", "u32",
     "Total number of SSL session ID lookups that didn't find a session in the SSL session cache on this worker since started"),
    (42, "CompressBpsIn", "MRP", "u32",
     "Number of bytes submitted to the HTTP compressor in this worker process over the last second"),
    (43, "CompressBpsOut", "MRP", "u32",
     "Number of bytes emitted by the HTTP compressor in this worker process over the last second"),
    (44, "CompressBpsRateLim", "CLP", "u32",
     "Limit of CompressBpsOut beyond which HTTP compression is automatically disabled"),
    (47, "Tasks", "MGP", "u32",
     "Total number of tasks in the current worker process (active + sleeping)"),
    (48, "Run_queue", "MGP", "u32",
     "Total number of active tasks+tasklets in the current worker process"),
    (49, "Idle_pct", "MaP", "u32",
     "Percentage of last second spent waiting in the current worker thread"),
    (50, "node", "COS", "str", "Node name (global.node)"),
    (52, "Stopping", "MGP", "u32",
     "1 if the worker process is currently stopping, otherwise zero"),
    (53, "Jobs", "MGP", "u32",
     "Current number of active jobs on the current worker process (frontend connections, master connections, listeners)"),
    (54, "Unstoppable Jobs", "MGP", "u32",
     "Current number of unstoppable jobs on the current worker process (master connections)"),
    (55, "Listeners", "MGP", "u32",
     "Current number of active listeners on the current worker process"),
    (56, "ActivePeers", "MGP", "u32",
     "Current number of verified active peers connections on the current worker process"),
    (57, "ConnectedPeers", "MGP", "u32",
     "Current number of peers having passed the connection step on the current worker process"),
    (58, "DroppedLogs", "MGP", "u32",
     "Total number of dropped logs for current worker process since started"),
    (59, "BusyPolling", "MGP", "u32",
     "1 if busy-polling is currently in use on the worker process, otherwise zero (config.busy-polling)"),
    (60, "FailedResolutions", "MGP", "u32",
     "Total number of failed DNS resolutions in current worker process since started"),
    (61, "TotalBytesOut", "MGP", "u64",
     "Total number of bytes emitted by current worker process since started"),
    (62, "TotalSplicdedBytesOut", "MGP", "u64",
     "Total number of bytes emitted by current worker process through a kernel pipe since started"),
    (63, "BytesOutRate", "MRP", "u64",
     "Number of bytes emitted by current worker process over the last second"),
    (64, "DebugCommandsIssued", "MGP", "u32",
     "Number of debug commands issued on this process (anything > 0 is unsafe)"),
    (65, "CumRecvLogs", "MCP", "u32",
     "Total number of log messages received by log-forwarding listeners on this worker process since started"),
    (66, "Build info", "POS", "str", "Build info"),
    (67, "Memmax_bytes", "CLP", "u32",
     "Worker process's hard limit on memory usage in byes (-m on command line)"),
    (68, "PoolAlloc_bytes", "MGP", "u64", "Amount of memory allocated in pools (in bytes)"),
    (69, "PoolUsed_bytes", "MGP", "u64", "Amount of pool memory currently used (in bytes)"),
    (70, "Start_time_sec", "MDP", "u32", "Start time in seconds"),
    (71, "Tainted", "SGP", "str", "Experimental features used"),
)

# `show stat`'s fields: name -> (tags, type, description); a field's position is its
# place in ALL_FIELDS without the "-" column. act/bck/rate/rate_max have other tags on a
# backend's row (_BACKEND_TAGS).
STAT_META = {
    "pxname": ("KNS", "str", "Proxy name"),
    "svname": ("KNS", "str", "Server name"),
    "qcur": ("MGP", "u32", "Number of current queued connections"),
    "qmax": ("MMP", "u32",
            "Highest value of queued connections encountered since process started"),
    "scur": ("MGP", "u32", "Number of current sessions on the frontend, backend or server"),
    "smax": ("MMP", "u32", "Highest value of current sessions encountered since process started"),
    "slim": ("CLP", "u32", "Frontend/listener/server's maxconn, backend's fullconn"),
    "stot": ("MCP", "u64", "Total number of sessions since process started"),
    "bin": ("MCP", "u64", "Total number of request bytes since process started"),
    "bout": ("MCP", "u64", "Total number of response bytes since process started"),
    "dreq": ("MCP", "u64", "Total number of denied requests since process started"),
    "dresp": ("MCP", "u64", "Total number of denied responses since process started"),
    "ereq": ("MCP", "u64", "Total number of invalid requests since process started"),
    "econ": ("MCP", "u64",
            "Total number of failed connections to server since the worker process started"),
    "eresp": ("MCP", "u64", "Total number of invalid responses since the worker process started"),
    "wretr": ("MCP", "u64",
             "Total number of server connection retries since the worker process started"),
    "wredis": ("MCP", "u64",
              "Total number of server redispatches due to connection failures since the worker process started"),
    "status": ("SGP", "str",
              "Frontend/listen status: OPEN/WAITING/FULL/STOP; backend: UP/DOWN; server: last check status"),
    "weight": ("MaP", "u32",
              "Server's effective weight, or sum of active servers' effective weights for a backend"),
    "act": ("SGP", "u32", "Total number of active UP servers with a non-zero weight"),
    "bck": ("SGP", "u32", "Total number of backup UP servers with a non-zero weight"),
    "chkfail": ("MCP", "u64",
               "Total number of failed individual health checks per server/backend, since the worker process started"),
    "chkdown": ("MCP", "u64",
               "Total number of failed checks causing UP to DOWN server transitions, per server/backend, since the worker process started"),
    "lastchg": ("MAP", "u32", "How long ago the last server state changed, in seconds"),
    "downtime": ("MCP", "u32", "Total time spent in DOWN state, for server or backend"),
    "qlimit": ("CGS", "u32",
              "Limit on the number of connections in queue, for servers only (maxqueue argument)"),
    "pid": ("KGP", "u32", "Relative worker process number (1)"),
    "iid": ("KGS", "u32", "Frontend or Backend numeric identifier ('id' setting)"),
    "sid": ("KGS", "u32", "Server numeric identifier ('id' setting)"),
    "lbtot": ("MCP", "u64",
             "Total number of requests routed by load balancing since the worker process started (ignores queue pop and stickiness)"),
    "tracked": ("CNS", "str", "Name of the other server this server tracks for its state"),
    "type": ("CGS", "u32", "Type of the object (Listener, Frontend, Backend, Server)"),
    "rate": ("MRP", "u32",
            "Total number of sessions processed by this object over the last second (sessions for listeners/frontends, requests for backends/servers)"),
    "rate_lim": ("CLP", "u32",
                "Limit on the number of sessions accepted in a second (frontend only, 'rate-limit sessions' setting)"),
    "rate_max": ("MMP", "u32",
                "Highest value of sessions per second observed since the worker process started"),
    "check_status": ("MOP", "str",
                    "Status report of the server's latest health check, prefixed with '*' if a check is currently in progress"),
    "check_code": ("MOP", "u32",
                   "HTTP/SMTP/LDAP status code reported by the latest server health check"),
    "check_duration": ("MDP", "u64",
                      "Total duration of the latest server health check, in milliseconds"),
    "hrsp_1xx": ("MCP", "u64",
                "Total number of HTTP responses with status 100-199 returned by this object since the worker process started"),
    "hrsp_2xx": ("MCP", "u64",
                "Total number of HTTP responses with status 200-299 returned by this object since the worker process started"),
    "hrsp_3xx": ("MCP", "u64",
                "Total number of HTTP responses with status 300-399 returned by this object since the worker process started"),
    "hrsp_4xx": ("MCP", "u64",
                "Total number of HTTP responses with status 400-499 returned by this object since the worker process started"),
    "hrsp_5xx": ("MCP", "u64",
                "Total number of HTTP responses with status 500-599 returned by this object since the worker process started"),
    "hrsp_other": ("MCP", "u64",
                  "Total number of HTTP responses with status <100, >599 returned by this object since the worker process started (error -1 included)"),
    "req_rate": ("MRP", "u32",
                "Number of HTTP requests processed over the last second on this object"),
    "req_rate_max": ("MMP", "u32",
                    "Highest value of http requests observed since the worker process started"),
    "req_tot": ("MCP", "u64",
               "Total number of HTTP requests processed by this object since the worker process started"),
    "cli_abrt": ("MCP", "u64",
                "Total number of requests or connections aborted by the client since the worker process started"),
    "srv_abrt": ("MCP", "u64",
                "Total number of requests or connections aborted by the server since the worker process started"),
    "comp_in": ("MCP", "u64",
               "Total number of bytes submitted to the HTTP compressor for this object since the worker process started"),
    "comp_out": ("MCP", "u64",
                "Total number of bytes emitted by the HTTP compressor for this object since the worker process started"),
    "comp_byp": ("MCP", "u64",
                "Total number of bytes that bypassed HTTP compression for this object since the worker process started (CPU/memory/bandwidth limitation)"),
    "comp_rsp": ("MCP", "u64",
                "Total number of HTTP responses that were compressed for this object since the worker process started"),
    "lastsess": ("MAP", "s32",
                "How long ago some traffic was seen on this object on this worker process, in seconds"),
    "last_chk": ("MOP", "str",
                "Short description of the latest health check report for this server (see also check_desc)"),
    "qtime": ("MaP", "u32",
             "Time spent in the queue, in milliseconds, averaged over the 1024 last requests (backend/server)"),
    "ctime": ("MaP", "u32",
             "Time spent waiting for a connection to complete, in milliseconds, averaged over the 1024 last requests (backend/server)"),
    "rtime": ("MaP", "u32",
             "Time spent waiting for a server response, in milliseconds, averaged over the 1024 last requests (backend/server)"),
    "ttime": ("MaP", "u32",
             "Total request+response time (request+queue+connect+response+processing), in milliseconds, averaged over the 1024 last requests (backend/server)"),
    "check_desc": ("MOP", "str",
                  "Textual description of the latest health check report for this server"),
    "check_rise": ("CGS", "u32",
                  "Number of successful health checks before declaring a server UP (server 'rise' setting)"),
    "check_fall": ("CGS", "u32",
                  "Number of failed health checks before declaring a server DOWN (server 'fall' setting)"),
    "check_health": ("CGS", "u32",
                    "Current server health check level (0..fall-1=DOWN, fall..rise-1=UP)"),
    "addr": ("CGS", "str",
            "Server's address:port, shown only if show-legends is set, or at levels oper/admin for the CLI"),
    "cookie": ("CNS", "str",
              "Backend's cookie name or Server's cookie value, shown only if show-legends is set, or at levels oper/admin for the CLI"),
    "mode": ("CGS", "str", "'mode' setting (tcp/http/health/cli)"),
    "algo": ("CGS", "str",
            "Backend's load balancing algorithm, shown only if show-legends is set, or at levels oper/admin for the CLI"),
    "conn_rate": ("MRP", "u32",
                 "Number of new connections accepted over the last second on the frontend for this worker process"),
    "conn_rate_max": ("MMP", "u32",
                     "Highest value of connections per second observed since the worker process started"),
    "conn_tot": ("MCP", "u64",
                "Total number of new connections accepted on this frontend since the worker process started"),
    "intercepted": ("MCP", "u64",
                   "Total number of HTTP requests intercepted on the frontend (redirects/stats/services) since the worker process started"),
    "dcon": ("MCP", "u64",
            "Total number of incoming connections blocked on a listener/frontend by a tcp-request connection rule since the worker process started"),
    "dses": ("MCP", "u64",
            "Total number of incoming sessions blocked on a listener/frontend by a tcp-request connection rule since the worker process started"),
    "wrew": ("MCP", "u64",
            "Total number of failed HTTP header rewrites since the worker process started"),
    "connect": ("MCP", "u64",
               "Total number of outgoing connection attempts on this backend/server since the worker process started"),
    "reuse": ("MCP", "u64",
             "Total number of reused connection on this backend/server since the worker process started"),
    "cache_lookups": ("MCP", "u64",
                     "Total number of HTTP requests looked up in the cache on this frontend/backend since the worker process started"),
    "cache_hits": ("MCP", "u64",
                  "Total number of HTTP requests not found in the cache on this frontend/backend since the worker process started"),
    "srv_icur": ("MGP", "u32",
                "Current number of idle connections available for reuse on this server"),
    "qtime_max": ("MMP", "u32",
                 "Maximum observed time spent in the queue, in milliseconds (backend/server)"),
    "ctime_max": ("MMP", "u32",
                 "Maximum observed time spent waiting for a connection to complete, in milliseconds (backend/server)"),
    "rtime_max": ("MMP", "u32",
                 "Maximum observed time spent waiting for a server response, in milliseconds (backend/server)"),
    "ttime_max": ("MMP", "u32",
                 "Maximum observed total request+response time (request+queue+connect+response+processing), in milliseconds (backend/server)"),
    "eint": ("MCP", "u64", "Total number of internal errors since process started"),
    "idle_conn_cur": ("MGP", "u32", "Current number of unsafe idle connections"),
    "safe_conn_cur": ("MGP", "u32", "Current number of safe idle connections"),
    "used_conn_cur": ("MGP", "u32", "Current number of connections in use"),
    "need_conn_est": ("MGP", "u32", "Estimated needed number of connections"),
    "uweight": ("MaP", "u32",
               "Server's user weight, or sum of active servers' user weights for a backend"),
    "agg_server_status": ("MGP", "u32", "Backend's aggregated gauge of servers' status"),
    "agg_server_check_status": ("MGP", "u32",
                               "Backend's aggregated gauge of servers' state check status"),
    "agg_check_status": ("MGP", "u32",
                        "Backend's aggregated gauge of servers' state check status"),
    "ssl_sess": ("MCP", "u64", "Total number of ssl sessions established"),
    "ssl_reused_sess": ("MCP", "u64", "Total number of ssl sessions reused"),
    "ssl_failed_handshake": ("MCP", "u64", "Total number of failed handshake"),
    "h2_headers_rcvd": ("MCP", "u64", "Total number of received HEADERS frames"),
    "h2_data_rcvd": ("MCP", "u64", "Total number of received DATA frames"),
    "h2_settings_rcvd": ("MCP", "u64", "Total number of received SETTINGS frames"),
    "h2_rst_stream_rcvd": ("MCP", "u64", "Total number of received RST_STREAM frames"),
    "h2_goaway_rcvd": ("MCP", "u64", "Total number of received GOAWAY frames"),
    "h2_detected_conn_protocol_errors": ("MCP", "u64",
                                        "Total number of connection protocol errors"),
    "h2_detected_strm_protocol_errors": ("MCP", "u64", "Total number of stream protocol errors"),
    "h2_rst_stream_resp": ("MCP", "u64", "Total number of RST_STREAM sent on detected error"),
    "h2_goaway_resp": ("MCP", "u64", "Total number of GOAWAY sent on detected error"),
    "h2_open_connections": ("MGP", "u64", "Count of currently open connections"),
    "h2_backend_open_streams": ("MGP", "u64", "Count of currently open streams"),
    "h2_total_connections": ("MCP", "u64", "Total number of connections"),
    "h2_backend_total_streams": ("MCP", "u64", "Total number of streams"),
    "h1_open_connections": ("MGP", "u64", "Count of currently open connections"),
    "h1_open_streams": ("MGP", "u64", "Count of currently open streams"),
    "h1_total_connections": ("MCP", "u64", "Total number of connections"),
    "h1_total_streams": ("MCP", "u64", "Total number of streams"),
    "h1_bytes_in": ("MCP", "u64", "Total number of bytes received"),
    "h1_bytes_out": ("MCP", "u64", "Total number of bytes send"),
    "h1_spliced_bytes_in": ("MCP", "u64", "Total number of bytes received using kernel splicing"),
    "h1_spliced_bytes_out": ("MCP", "u64", "Total number of bytes sendusing kernel splicing"),
}

_BACKEND_TAGS = {"act": "MGP", "bck": "MGP", "rate": "MGP", "rate_max": "MGP"}
STAT_POS = {name: i for i, name in enumerate(f for f in ALL_FIELDS if f != "-")}
# tag letters as the json form spells them (origin, nature, scope)
_ORIGIN = {"M": "Metric", "S": "Status", "K": "Key", "C": "Config", "P": "Product"}
_NATURE = {"A": "Age", "a": "Avg", "C": "Counter", "D": "Duration", "G": "Gauge",
           "L": "Limit", "M": "Max", "m": "Min", "N": "Name", "O": "Output", "R": "Rate",
           "T": "Time"}
_SCOPE = {"C": "Cluster", "P": "Process", "S": "Service", "s": "System"}
_OBJ = {0: ("F", "Frontend"), 1: ("B", "Backend"), 2: ("S", "Server"), 3: ("L", "Listener")}
# with `float`, these rates (and the two times) are printed as floats
_FLOAT_INFO = {"Uptime_sec", "Start_time_sec", "ConnRate", "SessRate", "SslRate",
               "SslFrontendKeyRate", "SslFrontendSessionReuse_pct", "SslBackendKeyRate",
               "CompressBpsIn", "CompressBpsOut"}


def _flt(value: float) -> str:
    """A float as HAProxy prints one: %f, trailing zeros and dot trimmed."""
    text = f"{value:f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def _text(kind: str, value) -> str:
    return _flt(value) if kind == "flt" else str(value)


def _json_value(kind: str, value) -> str:
    if kind == "str":
        return json.dumps(str(value))
    return _text(kind, value)


def _json_field(pos: int, name: str, tags: str, kind: str, value) -> str:
    return (f'"field":{{"pos":{pos},"name":{json.dumps(name)}}},"processNum":1,'
            f'"tags":{{"origin":"{_ORIGIN[tags[0]]}","nature":"{_NATURE[tags[1]]}",'
            f'"scope":"{_SCOPE[tags[2]]}"}},"value":{{"type":"{kind}",'
            f'"value":{_json_value(kind, value)}}}')


class StatOptions:
    """The arguments of `show info` / `show stat` as HAProxy 2.6 reads them: `typed` or
    `json` (the last one wins), `desc`, `float` (show info), `no-maint`, `up` (show
    stat), others ignored; show stat's `<iid> <type> <sid>` filter and `domain`."""
    __slots__ = ("form", "desc", "float", "no_maint", "up", "iid", "types", "sid", "error")

    def __init__(self, args: list, proc=None, stat: bool = False):
        self.form, self.desc, self.float = "plain", False, False
        self.no_maint = self.up = False
        self.iid = self.types = self.sid = self.error = None
        i = 2
        if stat:
            if i < len(args) and args[i] == "domain":
                i += 1
                if i < len(args) and args[i] == "proxy":
                    i += 1
                else:       # dns: resolvers' counters, edgestick has no resolvers
                    self.error = "Invalid statistics domain.\n"
                    return
            if len(args) >= i + 3:
                ids = proxy_ids(proc.cfg)
                iid = ids.get(args[i]) or c_atoi(args[i])
                if not iid:
                    self.error = "No such proxy.\n"
                    return
                self.iid = iid
                self.types, self.sid = c_atoi(args[i + 1]), c_atoi(args[i + 2])
                i += 3
        for word in args[i:]:
            if word in ("typed", "json"):
                self.form = word
            elif word == "desc":
                self.desc = True
            elif word == "float" and not stat:
                self.float = True
            elif word == "no-maint" and stat:
                self.no_maint = True
            elif word == "up" and stat:
                self.up = True




class ProcessRates:
    """The process-wide rates of `show info` (HAProxy's global freq_ctrs: connections,
    sessions, SSL sessions and keys, bytes out), their peaks, and Idle_pct, from the
    totals the proxy keeps, noted once a second by a timer (nothing per request)."""
    CONN, SESS, SSL, SSL_KEYS, BYTES_OUT = range(5)

    def __init__(self, proc):
        self.proc = proc
        self.rates = PerSecond(5)
        self.cpu = (time.process_time(), time.monotonic())
        self.idle_pct = 100

    def totals(self) -> tuple:
        proc = self.proc
        api = proc.runtime
        fes = proc.frontends + proc.old_frontends
        ssl = sum(fe.stats.ssl_sess for fe in fes)
        out = sum(fe.stats.h1_out for fe in fes) + sum(
            s.wire_out for b in proc.backends.values() for s in b.servers)
        # the CLI's connections are not limited, so not in the rates (HAProxy's
        # LI_O_UNLIMITED listeners), but their bytes are sent bytes
        return (sum(fe.stats.conn_tot for fe in fes), sum(fe.stats.stot for fe in fes), ssl,
                ssl - sum(fe.stats.ssl_reused for fe in fes),
                out + (api.bytes_out if api is not None else 0))

    def tick(self) -> None:
        self.rates.tick(self.totals(), now_ms())
        cpu, wall = time.process_time(), time.monotonic()
        busy = (cpu - self.cpu[0]) / max(wall - self.cpu[1], 1e-3)
        self.idle_pct = max(0, min(100, round(100 * (1 - busy))))
        self.cpu = (cpu, wall)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self.tick()

    def rate(self, i: int, totals: tuple, now: int, as_float: bool = False):
        r = self.rates
        if not as_float:
            return r.rate(i, totals[i], now)
        # read_freq in floating point (HAProxy's read_freq_ctr_flt)
        remain = r.tick_ms + 1000 - now
        curr, past = totals[i] - r.base[i], r.prev[i]
        if remain < 0:
            remain += 1000
            past, curr = (curr if remain >= 0 else 0), 0
        if curr == 0 and past <= 1:
            return float(past)
        return past * max(remain, 0) / 1000 + curr


def info_fields(proc, as_float: bool = False) -> list[tuple]:
    """`show info`'s fields: (position, name, tags, type, value), HAProxy's order."""
    wall = time.time()
    up_f = max(0.0, wall - proc.start_time)
    up = int(up_f)
    d, rem = divmod(up, 86400)
    h, rem = divmod(rem, 3600)
    m, s = divmod(rem, 60)
    fes = proc.frontends + proc.old_frontends
    api = proc.runtime
    cli_conns = api.conn_total if api is not None else 0
    pr = getattr(proc, "process_rates", None) or ProcessRates(proc)
    totals, now = pr.totals(), now_ms()
    peaks = [pr.rates.max(i, t) for i, t in enumerate(totals)]

    def rate(i):
        return pr.rate(i, totals, now, as_float)

    conn_rate, sess_rate = rate(pr.CONN), rate(pr.SESS)
    ssl_rate, key_rate = rate(pr.SSL), rate(pr.SSL_KEYS)
    int_ssl, int_key = pr.rate(pr.SSL, totals, now), pr.rate(pr.SSL_KEYS, totals, now)
    reuse = 0
    if int_key < int_ssl:
        reuse = 100 - (100 * int_key + (int_ssl - 1) // 2) // int_ssl
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    maxconn = proc.maxconn
    peers = [p for sec in (proc.peers or ()) for p in sec.peers if not p.local]
    connected = sum(1 for p in peers if p.session is not None)
    listeners = (sum(len(fe.listeners) for fe in proc.frontends)
                 + (api.listeners if api is not None else 0)
                 + sum(1 for sec in (proc.peers or ()) if sec.server is not None))
    conns_now = sum(len(fe.conns) for fe in proc.frontends + proc.old_frontends)
    out_rate = pr.rates.rate(pr.BYTES_OUT, totals[pr.BYTES_OUT], now)
    values = {
        "Name": "edgestick", "Version": __version__, "Release_date": RELEASE_DATE,
        "Nbthread": 1, "Nbproc": 1, "Process_num": 1, "Pid": os.getpid(),
        "Uptime": f"{d}d {h}h{m:02d}m{s:02d}s", "Uptime_sec": up_f if as_float else up,
        "Memmax_MB": 0, "PoolAlloc_MB": 0, "PoolUsed_MB": 0, "PoolFailed": 0,
        "Ulimit-n": soft, "Maxsock": soft, "Maxconn": maxconn, "Hard_maxconn": maxconn,
        "CurrConns": proc.cur_conns,
        "CumConns": sum(fe.stats.conn_tot for fe in fes) + cli_conns,
        # requests parsed (a refused head, an empty connection: none), and the CLI's
        # streams
        "CumReq": sum(fe.stats.req_tot - fe.stats.ereq for fe in fes) + cli_conns,
        "MaxSslConns": 0,
        "CurrSslConns": sum(1 for fe in fes for c in fe.conns if c.ssl),
        "CumSslConns": totals[pr.SSL], "Maxpipes": 0, "PipesUsed": 0, "PipesFree": 0,
        "ConnRate": conn_rate, "ConnRateLimit": 0, "MaxConnRate": peaks[pr.CONN],
        "SessRate": sess_rate, "SessRateLimit": 0, "MaxSessRate": peaks[pr.SESS],
        "SslRate": ssl_rate, "SslRateLimit": 0, "MaxSslRate": peaks[pr.SSL],
        "SslFrontendKeyRate": key_rate, "SslFrontendMaxKeyRate": peaks[pr.SSL_KEYS],
        "SslFrontendSessionReuse_pct": float(reuse) if as_float else reuse,
        "SslBackendKeyRate": 0.0 if as_float else 0, "SslBackendMaxKeyRate": 0,
        "SslCacheLookups": 0, "SslCacheMisses": 0,
        **compression.info_fields(getattr(proc, "cfg", None), as_float),
        "Tasks": len(asyncio.all_tasks()), "Run_queue": 0, "Idle_pct": pr.idle_pct,
        "node": socket.gethostname(), "Stopping": 1 if proc.stopping else 0,
        "Jobs": listeners + conns_now + (api.open_conns if api is not None else 0) + connected,
        "Unstoppable Jobs": 0, "Listeners": listeners, "ActivePeers": connected,
        "ConnectedPeers": connected, "DroppedLogs": 0, "BusyPolling": 0,
        "FailedResolutions": 0, "TotalBytesOut": totals[pr.BYTES_OUT],
        "TotalSplicdedBytesOut": 0, "BytesOutRate": out_rate // 32 * 32,
        "DebugCommandsIssued": 0, "CumRecvLogs": 0, "Build info": __version__,
        "Memmax_bytes": 0, "PoolAlloc_bytes": 0, "PoolUsed_bytes": 0,
        "Start_time_sec": proc.start_time if as_float else int(proc.start_time),
        "Tainted": "0",
    }
    fields = []
    for pos, name, tags, kind, _ in INFO_META:
        if as_float and name in _FLOAT_INFO:
            kind = "flt"
            if tags[1] == "G":          # HAProxy prints these float rates as rates
                tags = tags[0] + "R" + tags[2]
        fields.append((pos, name, tags, kind, values[name]))
    return fields


_INFO_DESC = {name: desc for _, name, _, _, desc in INFO_META}


def show_info(proc, args: list = ()) -> str:
    opt = StatOptions(list(args))
    fields = info_fields(proc, opt.float)
    if opt.form == "json":
        return "[" + ",".join("{" + _json_field(*f) + "}" for f in fields) + "]\n"
    out = []
    for pos, name, tags, kind, value in fields:
        if opt.form == "typed":
            line = f"{pos}.{name}.1:{tags}:{kind}:{_text(kind, value)}"
        else:
            line = f"{name}: {_text(kind, value)}"
        if opt.desc:
            line += f':"{_INFO_DESC[name]}"'
        out.append(line + "\n")
    return "".join(out)


def _stat_fields(row: dict):
    """A row's non-empty fields as (position, name, tags, type, value)."""
    backend = row.get("type") == 1
    for name in ALL_FIELDS:
        value = row.get(name)
        if value is None or name == "-":
            continue
        tags, kind, _ = STAT_META[name]
        if backend and name in _BACKEND_TAGS:
            tags = _BACKEND_TAGS[name]
        yield STAT_POS[name], name, tags, kind, value


def _selected(row: dict, opt: StatOptions) -> bool:
    """show stat's filters: `<iid> <type> <sid>` (type a bit mask 1 frontends, 2
    backends, 4 servers, -1 all; sid -1 all) and `no-maint` (servers in maintenance)."""
    if opt.iid is not None:
        if opt.iid != -1 and row["iid"] != opt.iid or not opt.types & (1 << row["type"]):
            return False
        if row["type"] == 2 and opt.sid != -1 and row["sid"] != opt.sid:
            return False
    if row["type"] == 2:
        if opt.no_maint and row["status"].startswith("MAINT"):
            return False
        if opt.up and not _server_up(row):
            return False
    return True


def _server_up(row: dict) -> bool:
    # (running: "UP 1/3" going down too, "DRAIN (agent)"; not "DOWN 1/2" nor MAINT)
    return row["status"].split()[0] in ("UP", "no", "DRAIN", "NOLB")


def _count_up(rows: list) -> None:
    """With `up` or `no-maint`, a backend's status tells its servers up out of all:
    "UP (1/4)"."""
    up, total = {}, {}
    for r in rows:
        if r["type"] == 2:
            total[r["pxname"]] = total.get(r["pxname"], 0) + 1
            up[r["pxname"]] = up.get(r["pxname"], 0) + _server_up(r)
        elif r["type"] == 1:
            px = r["pxname"]
            r["status"] += f" ({up.get(px, 0)}/{total.get(px, 0)})"


def show_stat(proc, args: list = (), keep=None) -> str:
    """`keep(row)`: the rows shown (the stats page's `stats scope`), all when None."""
    opt = StatOptions(list(args), proc, stat=True)
    if opt.error is not None:
        return opt.error
    rows = stat_rows(proc)
    if opt.up or opt.no_maint:
        _count_up(rows)
    rows = [r for r in rows if _selected(r, opt) and (keep is None or keep(r))]
    if opt.form == "plain":
        return HEADER + "".join(_row(v) for v in rows)
    if opt.form == "json":
        objs = []
        for r in rows:
            head = f'"objType":"{_OBJ[r["type"]][1]}","proxyId":{r["iid"]},"id":{r["sid"]},'
            objs.append("[" + ",".join("{" + head + _json_field(*f) + "}"
                                       for f in _stat_fields(r)) + "]")
        return "[" + ",".join(objs) + "]\n"
    out = []
    for r in rows:
        prefix = f'{_OBJ[r["type"]][0]}.{r["iid"]}.{r["sid"]}.'
        for pos, name, tags, kind, value in _stat_fields(r):
            line = f"{prefix}{pos}.{name}.1:{tags}:{kind}:{_text(kind, value)}"
            if opt.desc:
                line += f':"{STAT_META[name][2]}"'
            out.append(line + "\n")
    return "".join(out)


def set_server_state(srv, state: str) -> None:
    """`set server <bk>/<srv> state ready|drain|maint` (the stats page's admin form too),
    with HAProxy's transitions (proxy/server_state.py)."""
    from . import server_state
    server_state.set_admin_state(srv, state)


def _server(proc, text: str):
    bk, _, name = text.partition("/")
    b = proc.backends.get(bk)
    return None if b is None else b.by_name.get(name)


def register_commands(proc, reg) -> None:
    from .runtime_api import ADMIN, PERMISSION_DENIED

    def info(cli, args):
        return show_info(proc, args)

    def stat(cli, args):
        return show_stat(proc, args)

    rates = proc.process_rates = ProcessRates(proc)
    try:
        rates.task = asyncio.get_running_loop().create_task(rates.run())
    except RuntimeError:        # no event loop (a test building the registry): no timer
        rates.task = None

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
            set_server_state(srv, args[4])
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
    cache_mod.register_commands(proc, reg)
    reg.register(("reload",), reload,
                 "reload                                  : re-read the configuration, keeping the tables")
    reg.register(("set", "server"), set_server,
                 "set server <bk>/<srv> [opts]            : change a server's state")
    reg.register(("disable", "server"), toggle(False),
                 "disable server (DEPRECATED)             : disable a server for maintenance (use 'set server' instead)")
    reg.register(("enable", "server"), toggle(True),
                 "enable server  (DEPRECATED)             : enable a disabled server (use 'set server' instead)")
