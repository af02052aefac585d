"""Prometheus metrics with HAProxy's exporter names (promex), read from live state at
scrape time by a custom collector in a private registry.

Two ways to reach them, as with HAProxy: `http-request use-service prometheus-exporter`
in a frontend (with `?scope=` filtering), or edgestick's own `--metrics ADDR:PORT`
listener (loopback by default). Beyond promex: per stick table, how many entries are
over each threshold the configuration's deny rules compare against
(`edgestick_sticktable_entries_over_threshold`).
"""
from __future__ import annotations

import asyncio
import operator
import re
from urllib.parse import parse_qs

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import generate_latest

from .stats import stat_rows

_CODES = ("1xx", "2xx", "3xx", "4xx", "5xx", "other")
_OPS = {"gt": operator.gt, "ge": operator.ge, "lt": operator.lt, "le": operator.le,
        "eq": operator.eq}
# `sc_http_req_rate(0) gt 100`, `sc0_http_err_rate gt 20`, `src_conn_cur ge 10`
_THRESHOLD = re.compile(
    r"\b(?:sc_|sc[0-2]_|src_)(conn_cnt|conn_cur|conn_rate|sess_cnt|sess_rate|http_req_cnt|"
    r"http_req_rate|http_err_cnt|http_err_rate|http_fail_cnt|http_fail_rate|bytes_in_rate|"
    r"bytes_out_rate|get_gpc0|get_gpc1|gpc0_rate|gpc1_rate|get_gpt0)(?:\(([^)]*)\))?\s+"
    r"(gt|ge|lt|le|eq)\s+(\d+)")
_FETCH_TO_TYPE = {"get_gpc0": "gpc0", "get_gpc1": "gpc1", "get_gpt0": "gpt0"}

# promex names (HAProxy 2.6's exporter) of show stat's fields: (name, type, help, field)
_H_CUR = 'Number of current sessions on the frontend, backend or server'
_H_MAX = 'Highest value of current sessions encountered since process started'
_H_LIMIT = "Frontend/listener/server's maxconn, backend's fullconn"
_H_TOT = 'Total number of sessions since process started'
_H_BIN = 'Total number of request bytes since process started'
_H_BOUT = 'Total number of response bytes since process started'
_H_DREQ = 'Total number of denied requests since process started'
_H_DRESP = 'Total number of denied responses since process started'
_H_RATE_MAX = 'Highest value of sessions per second observed since the worker process started'
_H_REQ_TOT = 'Total number of HTTP requests processed by this object since the worker process started'
_H_EINT = 'Total number of internal errors since process started'
_H_ECON = 'Total number of failed connections to server since the worker process started'
_H_ERESP = 'Total number of invalid responses since the worker process started'
_H_WRETR = 'Total number of server connection retries since the worker process started'
_H_WREDIS = 'Total number of server redispatches due to connection failures since the worker process started'
_H_LBTOT = 'Total number of requests routed by load balancing since the worker process started (ignores queue pop and stickiness)'
_H_CLI_ABRT = 'Total number of requests or connections aborted by the client since the worker process started'
_H_SRV_ABRT = 'Total number of requests or connections aborted by the server since the worker process started'
_H_CONNECT = 'Total number of outgoing connection attempts on this backend/server since the worker process started'
_H_REUSE = 'Total number of reused connection on this backend/server since the worker process started'
_H_DOWNTIME = 'Total time spent in DOWN state, for server or backend'
_H_CHKDOWN = 'Total number of failed checks causing UP to DOWN server transitions, per server/backend, since the worker process started'
_H_LASTCHG = 'How long ago the last server state changed, in seconds'
_H_WEIGHT = "Server's effective weight, or sum of active servers' effective weights for a backend"
_H_WREW = 'Total number of failed HTTP header rewrites since the worker process started'
_H_LASTSESS = 'How long ago some traffic was seen on this object on this worker process, in seconds'
_H_QMAX = 'Highest value of queued connections encountered since process started'
_H_UWEIGHT = "Server's user weight, or sum of active servers' user weights for a backend"


def _unused_features(scope: str) -> tuple:
    """Compression counters (show stat's comp_*) and cache counters (cache_lookups,
    cache_hits): 0 while unused, as HAProxy's."""
    return tuple((f"haproxy_{scope}_{name}", "counter", help_, field) for name, help_, field in (
        ("http_comp_bytes_in_total", "Total number of bytes submitted to the HTTP compressor for this object since the worker process started", "comp_in"),
        ("http_comp_bytes_out_total", "Total number of bytes emitted by the HTTP compressor for this object since the worker process started", "comp_out"),
        ("http_comp_bytes_bypassed_total", "Total number of bytes that bypassed HTTP compression for this object since the worker process started (CPU/memory/bandwidth limitation)", "comp_byp"),
        ("http_comp_responses_total", "Total number of HTTP responses that were compressed for this object since the worker process started", "comp_rsp"),
        ("http_cache_lookups_total", "Total number of HTTP requests looked up in the cache on this frontend/backend since the worker process started", "cache_lookups"),
        ("http_cache_hits_total", "Total number of HTTP requests not found in the cache on this frontend/backend since the worker process started", "cache_hits")))


_FRONTEND = (
    ("haproxy_frontend_current_sessions", "gauge", _H_CUR, "scur"),
    ("haproxy_frontend_max_sessions", "gauge", _H_MAX, "smax"),
    ("haproxy_frontend_limit_sessions", "gauge", _H_LIMIT, "slim"),
    ("haproxy_frontend_sessions_total", "counter", _H_TOT, "stot"),
    ("haproxy_frontend_max_session_rate", "gauge", _H_RATE_MAX, "rate_max"),
    ("haproxy_frontend_connections_rate_max", "gauge", 'Highest value of connections per second observed since the worker process started', "conn_rate_max"),
    ("haproxy_frontend_connections_total", "counter", 'Total number of new connections accepted on this frontend since the worker process started', "conn_tot"),
    ("haproxy_frontend_bytes_in_total", "counter", _H_BIN, "bin"),
    ("haproxy_frontend_bytes_out_total", "counter", _H_BOUT, "bout"),
    ("haproxy_frontend_requests_denied_total", "counter", _H_DREQ, "dreq"),
    ("haproxy_frontend_responses_denied_total", "counter", _H_DRESP, "dresp"),
    ("haproxy_frontend_request_errors_total", "counter", 'Total number of invalid requests since process started', "ereq"),
    ("haproxy_frontend_denied_connections_total", "counter", 'Total number of incoming connections blocked on a listener/frontend by a tcp-request connection rule since the worker process started', "dcon"),
    ("haproxy_frontend_denied_sessions_total", "counter", 'Total number of incoming sessions blocked on a listener/frontend by a tcp-request connection rule since the worker process started', "dses"),
    ("haproxy_frontend_http_requests_rate_max", "gauge", 'Highest value of http requests observed since the worker process started', "req_rate_max"),
    ("haproxy_frontend_http_requests_total", "counter", _H_REQ_TOT, "req_tot"),
    ("haproxy_frontend_intercepted_requests_total", "counter", 'Total number of HTTP requests intercepted on the frontend (redirects/stats/services) since the worker process started', "intercepted"),
    ("haproxy_frontend_internal_errors_total", "counter", _H_EINT, "eint"),
    ("haproxy_frontend_limit_session_rate", "gauge", "Limit on the number of sessions accepted in a second (frontend only, 'rate-limit sessions' setting)", "rate_lim"),
    ("haproxy_frontend_failed_header_rewriting_total", "counter", _H_WREW, "wrew"),
    *_unused_features("frontend"),
)
_BACKEND = (
    ("haproxy_backend_current_queue", "gauge", 'Number of current queued connections', "qcur"),
    ("haproxy_backend_current_sessions", "gauge", _H_CUR, "scur"),
    ("haproxy_backend_max_sessions", "gauge", _H_MAX, "smax"),
    ("haproxy_backend_limit_sessions", "gauge", _H_LIMIT, "slim"),
    ("haproxy_backend_sessions_total", "counter", _H_TOT, "stot"),
    ("haproxy_backend_max_session_rate", "gauge", _H_RATE_MAX, "rate_max"),
    ("haproxy_backend_bytes_in_total", "counter", _H_BIN, "bin"),
    ("haproxy_backend_bytes_out_total", "counter", _H_BOUT, "bout"),
    ("haproxy_backend_requests_denied_total", "counter", _H_DREQ, "dreq"),
    ("haproxy_backend_responses_denied_total", "counter", _H_DRESP, "dresp"),
    ("haproxy_backend_connection_errors_total", "counter", _H_ECON, "econ"),
    ("haproxy_backend_response_errors_total", "counter", _H_ERESP, "eresp"),
    ("haproxy_backend_retry_warnings_total", "counter", _H_WRETR, "wretr"),
    ("haproxy_backend_redispatch_warnings_total", "counter", _H_WREDIS, "wredis"),
    ("haproxy_backend_weight", "gauge", _H_WEIGHT, "weight"),
    ("haproxy_backend_uweight", "gauge", _H_UWEIGHT, "uweight"),
    ("haproxy_backend_active_servers", "gauge", 'Total number of active UP servers with a non-zero weight', "act"),
    ("haproxy_backend_backup_servers", "gauge", 'Total number of backup UP servers with a non-zero weight', "bck"),
    ("haproxy_backend_check_up_down_total", "counter", _H_CHKDOWN, "chkdown"),
    ("haproxy_backend_check_last_change_seconds", "gauge", _H_LASTCHG, "lastchg"),
    ("haproxy_backend_downtime_seconds_total", "counter", _H_DOWNTIME, "downtime"),
    ("haproxy_backend_loadbalanced_total", "counter", _H_LBTOT, "lbtot"),
    ("haproxy_backend_http_requests_total", "counter", _H_REQ_TOT, "req_tot"),
    ("haproxy_backend_client_aborts_total", "counter", _H_CLI_ABRT, "cli_abrt"),
    ("haproxy_backend_server_aborts_total", "counter", _H_SRV_ABRT, "srv_abrt"),
    ("haproxy_backend_connection_attempts_total", "counter", _H_CONNECT, "connect"),
    ("haproxy_backend_connection_reuses_total", "counter", _H_REUSE, "reuse"),
    ("haproxy_backend_internal_errors_total", "counter", _H_EINT, "eint"),
    ("haproxy_backend_max_queue", "gauge", _H_QMAX, "qmax"),
    ("haproxy_backend_last_session_seconds", "gauge", _H_LASTSESS, "lastsess"),
    ("haproxy_backend_failed_header_rewriting_total", "counter", _H_WREW, "wrew"),
    *_unused_features("backend"),
)
_SERVER = (
    ("haproxy_server_current_queue", "gauge", 'Number of current queued connections', "qcur"),
    ("haproxy_server_current_sessions", "gauge", _H_CUR, "scur"),
    ("haproxy_server_max_sessions", "gauge", _H_MAX, "smax"),
    ("haproxy_server_limit_sessions", "gauge", _H_LIMIT, "slim"),
    ("haproxy_server_sessions_total", "counter", _H_TOT, "stot"),
    ("haproxy_server_max_session_rate", "gauge", _H_RATE_MAX, "rate_max"),
    ("haproxy_server_bytes_in_total", "counter", _H_BIN, "bin"),
    ("haproxy_server_bytes_out_total", "counter", _H_BOUT, "bout"),
    ("haproxy_server_responses_denied_total", "counter", _H_DRESP, "dresp"),
    ("haproxy_server_connection_errors_total", "counter", _H_ECON, "econ"),
    ("haproxy_server_response_errors_total", "counter", _H_ERESP, "eresp"),
    ("haproxy_server_retry_warnings_total", "counter", _H_WRETR, "wretr"),
    ("haproxy_server_redispatch_warnings_total", "counter", _H_WREDIS, "wredis"),
    ("haproxy_server_weight", "gauge", _H_WEIGHT, "weight"),
    ("haproxy_server_uweight", "gauge", _H_UWEIGHT, "uweight"),
    ("haproxy_server_check_failures_total", "counter", 'Total number of failed individual health checks per server/backend, since the worker process started', "chkfail"),
    ("haproxy_server_check_up_down_total", "counter", _H_CHKDOWN, "chkdown"),
    ("haproxy_server_check_last_change_seconds", "gauge", _H_LASTCHG, "lastchg"),
    ("haproxy_server_downtime_seconds_total", "counter", _H_DOWNTIME, "downtime"),
    ("haproxy_server_loadbalanced_total", "counter", _H_LBTOT, "lbtot"),
    ("haproxy_server_client_aborts_total", "counter", _H_CLI_ABRT, "cli_abrt"),
    ("haproxy_server_server_aborts_total", "counter", _H_SRV_ABRT, "srv_abrt"),
    ("haproxy_server_connection_attempts_total", "counter", _H_CONNECT, "connect"),
    ("haproxy_server_connection_reuses_total", "counter", _H_REUSE, "reuse"),
    ("haproxy_server_idle_connections_current", "gauge", 'Current number of idle connections available for reuse on this server', "srv_icur"),
    ("haproxy_server_unsafe_idle_connections_current", "gauge", 'Current number of unsafe idle connections', "idle_conn_cur"),
    ("haproxy_server_safe_idle_connections_current", "gauge", 'Current number of safe idle connections', "safe_conn_cur"),
    ("haproxy_server_used_connections_current", "gauge", 'Current number of connections in use', "used_conn_cur"),
    ("haproxy_server_need_connections_current", "gauge", 'Estimated needed number of connections', "need_conn_est"),
    ("haproxy_server_internal_errors_total", "counter", _H_EINT, "eint"),
    ("haproxy_server_max_queue", "gauge", _H_QMAX, "qmax"),
    ("haproxy_server_queue_limit", "gauge", "Limit on the number of connections in queue, for servers only (maxqueue argument)", "qlimit"),
    ("haproxy_server_last_session_seconds", "gauge", _H_LASTSESS, "lastsess"),
    ("haproxy_server_check_code", "gauge", "layer5-7 code, if available of the last health check.", "check_code"),
    ("haproxy_server_failed_header_rewriting_total", "counter", _H_WREW, "wrew"),
)


def deny_thresholds(proc) -> list[tuple[str, str, str, int]]:
    """(table, data type, op, value) for every deny/tarpit/reject rule condition."""
    out = []
    seen = set()
    cfg = proc.cfg
    for p in cfg.proxies:
        rules = (p.http_request + p.tcp_request_connection + p.tcp_request_session +
                 p.tcp_request_content)
        slot_table = {}
        for r in rules:
            if r.action == "track-sc" and r.track is not None:
                slot_table.setdefault(r.track.slot, r.track.table or p.name)
        for r in rules:
            if r.action not in ("deny", "tarpit", "reject") or not r.cond_text:
                continue
            for m in _THRESHOLD.finditer(r.cond_text):
                fetch, args, op, value = m.group(1), m.group(2), m.group(3), int(m.group(4))
                table = None
                argv = [a.strip() for a in (args or "").split(",") if a.strip()]
                if m.group(0).startswith("src_"):
                    table = argv[0] if argv else p.name
                elif m.group(0).startswith("sc_"):
                    slot = int(argv[0]) if argv and argv[0].isdigit() else 0
                    table = argv[1] if len(argv) > 1 else slot_table.get(slot, p.name)
                else:
                    slot = int(m.group(0)[2])
                    table = argv[0] if argv else slot_table.get(slot, p.name)
                key = (table, _FETCH_TO_TYPE.get(fetch, fetch), op, value)
                if key not in seen:
                    seen.add(key)
                    out.append(key)
    return out


# show stat fields HAProxy's exporter leaves out for TCP proxies (HTTP-only metrics)
_HTTP_ONLY = frozenset(("comp_in", "comp_out", "comp_byp", "comp_rsp", "req_rate_max",
                        "req_tot"))


class _Collector:
    def __init__(self, proc, scopes):
        self.proc = proc
        self.scopes = scopes

    def collect(self):
        proc = self.proc
        scopes = self.scopes
        rows = stat_rows(proc) if scopes & {"frontend", "backend", "server"} else []
        if "frontend" in scopes:
            yield from self._frontends(rows)
        if "backend" in scopes:
            yield from self._backends(rows)
        if "server" in scopes:
            yield from self._servers(rows)
        if "sticktable" in scopes:
            yield from self._tables(proc)

    def _families(self, rows, labels, metrics):
        """One family per (name, kind, help, show-stat field), a sample per row (rows
        leaving the field empty left out)."""
        for name, kind, help_, field in metrics:
            fam = (GaugeMetricFamily if kind == "gauge" else CounterMetricFamily)(
                name, help_, labels=list(labels))
            tcp_skips = field in _HTTP_ONLY
            for r in rows:
                value = r.get(field)
                if value is not None and not (tcp_skips and r.get("mode") == "tcp"):
                    fam.add_metric([r[k] for k in labels], value)
            yield fam

    def _status(self, rows, name, labels, states, state_of):
        st = GaugeMetricFamily(name, "Current status of the service, per state label value.",
                               labels=[*labels, "state"])
        for r in rows:
            current = state_of(r)
            for state in states:
                st.add_metric([*(r[k] for k in labels), state], 1 if current == state else 0)
        return st

    def _responses(self, rows, name, labels):
        fam = CounterMetricFamily(name, "Total number of HTTP responses with status 100-199 returned by this object since the worker process started", labels=[*labels, "code"])
        for r in rows:
            if r.get("hrsp_1xx") is None:       # a TCP proxy: no HTTP responses
                continue
            for code in _CODES:
                fam.add_metric([*(r[k] for k in labels), code], r[f"hrsp_{code}"])
        return fam

    def _frontends(self, rows):
        rows = [r for r in rows if r["svname"] == "FRONTEND"]
        labels = ("proxy",)
        for r in rows:
            r["proxy"] = r["pxname"]
        yield from self._families(rows, labels, _FRONTEND)
        yield self._status(rows, "haproxy_frontend_status", labels, ("DOWN", "UP"),
                           lambda r: "UP" if r["status"] == "OPEN" else "DOWN")
        yield self._responses(rows, "haproxy_frontend_http_responses_total", labels)

    def _backends(self, rows):
        rows = [r for r in rows if r["svname"] == "BACKEND"]
        labels = ("proxy",)
        for r in rows:
            r["proxy"] = r["pxname"]
        yield from self._families(rows, labels, _BACKEND)
        yield self._status(rows, "haproxy_backend_status", labels, ("DOWN", "UP"), lambda r: r["status"])
        yield self._responses(rows, "haproxy_backend_http_responses_total", labels)

    def _servers(self, rows):
        rows = [r for r in rows if r["svname"] not in ("FRONTEND", "BACKEND")]
        labels = ("proxy", "server")
        for r in rows:
            r["proxy"], r["server"] = r["pxname"], r["svname"]
        yield self._status(rows, "haproxy_server_status", labels, ("DOWN", "UP", "MAINT"),
                           # ("UP 1/3", "DOWN (agent)", "MAINT (via b/s)": their state)
                           lambda r: "UP" if r["status"] == "no check" else r["status"].split()[0])
        yield from self._families(rows, labels, _SERVER)
        yield self._responses(rows, "haproxy_server_http_responses_total", labels)

    def _tables(self, proc):
        size = GaugeMetricFamily("haproxy_sticktable_size", "Stick table size.", labels=["name", "type"])
        used = GaugeMetricFamily("haproxy_sticktable_used", "Number of entries used in this stick table.", labels=["name", "type"])
        for name, t in proc.tables.items():
            size.add_metric([name, t.type], t.size)
            used.add_metric([name, t.type], t.used)
        yield size
        yield used
        over = GaugeMetricFamily(
            "edgestick_sticktable_entries_over_threshold",
            "Entries of a stick table whose value satisfies a deny rule's comparison.",
            labels=["name", "data_type", "op", "threshold"])
        for table_name, dtype, op, value in deny_thresholds(proc):
            t = proc.tables.get(table_name)
            if t is None:
                continue
            cmp = _OPS[op]
            read = t.reader(dtype)
            n = 0
            for _, row in t.entries():
                v = read(row)
                if v is not None and cmp(v, value):
                    n += 1
            over.add_metric([table_name, dtype, op, str(value)], n)
        yield over


ALL_SCOPES = ("frontend", "backend", "server", "sticktable")


class Metrics:
    def __init__(self, proc):
        self.proc = proc

    def render(self, query: str | None = None) -> str:
        scopes = set(ALL_SCOPES)
        if query:
            asked = parse_qs(query, keep_blank_values=True).get("scope")
            if asked is not None:
                scopes = set()
                for s in asked:
                    if s == "":
                        scopes = set()
                    elif s == "*":
                        scopes = set(ALL_SCOPES)
                    else:
                        scopes.add(s)
        reg = CollectorRegistry(auto_describe=False)
        reg.register(_Collector(self.proc, scopes))
        return generate_latest(reg).decode()

    async def serve(self, host: str, port: int):
        """edgestick's own /metrics listener."""
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
                line = head.split(b"\r\n", 1)[0].decode("latin-1").split()
                target = line[1] if len(line) > 1 else "/"
                path, _, query = target.partition("?")
                if path != "/metrics":
                    body, status = b"Not Found\n", b"404 Not Found"
                    ctype = b"text/plain"
                else:
                    try:
                        body, status = self.render(query).encode(), b"200 OK"
                        ctype = b"text/plain; version=0.0.4"
                    except Exception as e:      # a scrape must never kill the listener
                        body, status = f"{e!r}\n".encode(), b"500 Internal Server Error"
                        ctype = b"text/plain"
                writer.write(b"HTTP/1.1 %s\r\ncontent-type: %s\r\ncontent-length: %d\r\n"
                             b"connection: close\r\n\r\n%s" % (status, ctype, len(body), body))
                await writer.drain()
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError,
                    asyncio.TimeoutError, ConnectionError):
                pass
            finally:
                writer.close()
        return await asyncio.start_server(handle, host, port, reuse_port=True)   # beside a reload's old process
