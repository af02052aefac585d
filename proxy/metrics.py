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


class _Collector:
    def __init__(self, proc, scopes):
        self.proc = proc
        self.scopes = scopes

    def collect(self):
        proc = self.proc
        scopes = self.scopes
        if "frontend" in scopes:
            yield from self._frontends(proc)
        if "backend" in scopes:
            yield from self._backends(proc)
        if "server" in scopes:
            yield from self._servers(proc)
        if "sticktable" in scopes:
            yield from self._tables(proc)

    def _frontends(self, proc):
        fes = proc.frontends
        simple = [
            ("haproxy_frontend_current_sessions", "gauge", "Number of current sessions on the frontend, backend or server", "scur"),
            ("haproxy_frontend_max_sessions", "gauge", "Maximum observed number of active sessions on the frontend, backend or server", "smax"),
            ("haproxy_frontend_sessions_total", "counter", "Total number of sessions since process started", "stot"),
            ("haproxy_frontend_connections_total", "counter", "Total number of new connections accepted on this frontend since the worker process started", "conn_tot"),
            ("haproxy_frontend_bytes_in_total", "counter", "Total number of request bytes since process started", "bin"),
            ("haproxy_frontend_bytes_out_total", "counter", "Total number of response bytes since process started", "bout"),
            ("haproxy_frontend_requests_denied_total", "counter", "Total number of denied requests since process started", "dreq"),
            ("haproxy_frontend_responses_denied_total", "counter", "Total number of denied responses since process started", "dresp"),
            ("haproxy_frontend_request_errors_total", "counter", "Total number of invalid requests since process started", "ereq"),
            ("haproxy_frontend_denied_connections_total", "counter", "Total number of incoming connections blocked on a listener/frontend by a tcp-request connection rule since the worker process started", "dcon"),
            ("haproxy_frontend_denied_sessions_total", "counter", "Total number of incoming sessions blocked on a listener/frontend by a tcp-request connection rule since the worker process started", "dses"),
            ("haproxy_frontend_http_requests_rate_max", "gauge", "Highest value of http requests observed since the worker process started", "req_rate_max"),
            ("haproxy_frontend_http_requests_total", "counter", "Total number of HTTP requests processed by this object since the worker process started", "req_tot"),
            ("haproxy_frontend_intercepted_requests_total", "counter", "Total number of HTTP requests intercepted on the frontend (redirects/stats/services) since the worker process started", "intercepted"),
        ]
        for name, kind, help_, attr in simple:
            fam = (GaugeMetricFamily if kind == "gauge" else CounterMetricFamily)(name, help_, labels=["proxy"])
            for fe in fes:
                fam.add_metric([fe.name], getattr(fe.stats, attr))
            yield fam
        st = GaugeMetricFamily("haproxy_frontend_status", "Current status of the service, per state label value.", labels=["proxy", "state"])
        for fe in fes:
            up = 0 if proc.stopping else 1
            st.add_metric([fe.name, "DOWN"], 1 - up)
            st.add_metric([fe.name, "UP"], up)
        yield st
        fam = CounterMetricFamily("haproxy_frontend_http_responses_total", "Total number of HTTP responses with status 100-199 returned by this object since the worker process started", labels=["proxy", "code"])
        for i, code in enumerate(_CODES):
            for fe in fes:
                fam.add_metric([fe.name, code], fe.stats.hrsp[i])
        yield fam

    def _backends(self, proc):
        bes = list(proc.backends.values())
        simple = [
            ("haproxy_backend_current_sessions", "gauge", "Number of current sessions on the frontend, backend or server", lambda b: b.cur),
            ("haproxy_backend_sessions_total", "counter", "Total number of sessions since process started", lambda b: b.stot),
            ("haproxy_backend_requests_denied_total", "counter", "Total number of denied requests since process started", lambda b: b.dreq),
            ("haproxy_backend_connection_errors_total", "counter", "Total number of failed connections to server since the worker process started", lambda b: b.econ),
            ("haproxy_backend_response_errors_total", "counter", "Total number of invalid responses since the worker process started", lambda b: b.eresp),
            ("haproxy_backend_retry_warnings_total", "counter", "Total number of server connection retries since the worker process started", lambda b: b.wretr),
            ("haproxy_backend_redispatch_warnings_total", "counter", "Total number of server redispatches due to connection failures since the worker process started", lambda b: b.wredis),
            ("haproxy_backend_active_servers", "gauge", "Total number of active UP servers with a non-zero weight", lambda b: sum(1 for s in b.servers if s.usable and not s.backup)),
            ("haproxy_backend_backup_servers", "gauge", "Total number of backup UP servers with a non-zero weight", lambda b: sum(1 for s in b.servers if s.usable and s.backup)),
            ("haproxy_backend_http_requests_total", "counter", "Total number of HTTP requests processed by this object since the worker process started", lambda b: b.req_tot),
        ]
        for name, kind, help_, fn in simple:
            fam = (GaugeMetricFamily if kind == "gauge" else CounterMetricFamily)(name, help_, labels=["proxy"])
            for b in bes:
                fam.add_metric([b.name], fn(b))
            yield fam
        st = GaugeMetricFamily("haproxy_backend_status", "Current status of the service, per state label value.", labels=["proxy", "state"])
        for b in bes:
            up = 1 if b.up else 0
            st.add_metric([b.name, "DOWN"], 1 - up)
            st.add_metric([b.name, "UP"], up)
        yield st
        fam = CounterMetricFamily("haproxy_backend_http_responses_total", "Total number of HTTP responses with status 100-199 returned by this object since the worker process started", labels=["proxy", "code"])
        for b in bes:
            for i, code in enumerate(_CODES):
                fam.add_metric([b.name, code], b.hrsp[i])
        yield fam

    def _servers(self, proc):
        st = GaugeMetricFamily("haproxy_server_status", "Current status of the service, per state label value.", labels=["proxy", "server", "state"])
        cur = GaugeMetricFamily("haproxy_server_current_sessions", "Number of current sessions on the frontend, backend or server", labels=["proxy", "server"])
        tot = CounterMetricFamily("haproxy_server_sessions_total", "Total number of sessions since process started", labels=["proxy", "server"])
        fails = CounterMetricFamily("haproxy_server_check_failures_total", "Total number of failed individual health checks per server/backend, since the worker process started", labels=["proxy", "server"])
        resp = CounterMetricFamily("haproxy_server_http_responses_total", "Total number of HTTP responses with status 100-199 returned by this object since the worker process started", labels=["proxy", "server", "code"])
        for b in proc.backends.values():
            for s in b.servers:
                for state in ("DOWN", "UP", "MAINT"):
                    st.add_metric([b.name, s.name, state], 1 if s.state == state else 0)
                cur.add_metric([b.name, s.name], s.cur)
                tot.add_metric([b.name, s.name], s.stot)
                fails.add_metric([b.name, s.name], s.chkfail)
                for i, code in enumerate(_CODES):
                    resp.add_metric([b.name, s.name, code], s.hrsp[i])
        yield from (st, cur, tot, fails, resp)

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
                    ConnectionError):
                pass
            finally:
                writer.close()
        return await asyncio.start_server(handle, host, port, reuse_port=True)   # beside a reload's old process
