"""The statistics page of a frontend, listen or backend (`stats enable`, `stats uri`...),
as HAProxy 2.6 serves it: under the stats URI prefix, `;csv` gives `show stat`'s CSV
(`;json`, `;typed` its other forms), the plain URI an HTML page (edgestick's own markup,
the same proxies, servers and counters), a POST from the page's form puts servers in
ready/drain/maint (the runtime API's `set server` mechanism) when `stats admin` allows.

Access: `stats auth user:pass` lines become a userlist and the rule
`auth [realm R] unless { http_auth(<that userlist>) }` (HAProxy's conversion), or
`stats http-request allow|deny|auth` rules are used instead.

The page is looked for after the proxy's http-request rules and before its redirects
(proxy/frontend.py); a proxy without `stats` pays nothing per request.
"""
from __future__ import annotations

import html
import os
import socket
import time
from typing import Optional
from urllib.parse import unquote_plus

from edgestick import __version__
from edgestick.cfgsyntax import ConfigError, Line

from . import auth
from . import http1
from . import model as m
from . import stats
from .stick_table import parse_time_err

DEFAULT_URI = "/haproxy?stats"
STAT_CODES = ("DONE", "PART", "NONE", "DENY", "ERRP", "EXCD", "IVAL", "UNKN")
_EXPECTS = ("expects 'admin', 'uri', 'realm', 'auth', 'scope', 'enable', 'hide-version', "
            "'show-node', 'show-desc' or 'show-legends'.")


class StatsPage:
    """What a proxy's `stats` lines say."""

    def __init__(self, where: m.Where):
        self.where = where
        self.uri = DEFAULT_URI
        self.realm: Optional[str] = None
        self.accounts: list[tuple[str, str]] = []     # `stats auth user:pass`
        self.refresh_s = 0
        self.hide_version = self.show_legends = False
        self.node: Optional[str] = None               # `show-node` ("" = the host name)
        self.desc: Optional[str] = None               # `show-desc` ("" = the proxy's)
        self.admin: list = []                         # `stats admin if|unless` conditions
        self.scopes: list[str] = []
        self.http_request: list[m.Rule] = []          # `stats http-request`
        self.rules: list[m.Rule] = []                 # what runs (finish)
        self.userlist: Optional[auth.Userlist] = None

    def matches(self, req) -> bool:
        """HAProxy's http_stats_check_uri: GET, HEAD or POST whose URI (its path and
        query when the prefix starts with '/') begins with the prefix."""
        if req.method not in ("GET", "HEAD", "POST"):
            return False
        return _uri(req.target, self.uri).startswith(self.uri)


def _uri(target: str, prefix: str) -> str:
    if prefix[:1] == "/" and target[:1] != "/":
        i = target.find("://")
        if i > 0:
            j = target.find("/", i + 3)
            return target[j:] if j >= 0 else ""
    return target


# ------------------------------------------------------------------ configuration

def parse_line(parser, p: m.Proxy, line: Line, where: m.Where) -> None:
    """One `stats ...` line of a proxy or defaults section."""
    w = line.words
    sub = w[1] if len(w) > 1 else ""
    if sub == "":
        raise line.error(f"missing keyword in 'stats', {_EXPECTS}")
    known = ("admin", "uri", "realm", "refresh", "http-request", "auth", "scope", "enable",
             "hide-version", "show-legends", "show-node", "show-desc")
    if sub not in known:
        raise line.error(f"unknown stats parameter '{sub}', {_EXPECTS}")
    defaults = p.kind == "defaults"
    if sub in ("admin", "http-request") and defaults:
        raise line.error(f"'stats {sub}' not allowed in 'defaults' section."
                         if sub == "admin" else "'stats' not allowed in 'defaults' section.")
    # a proxy with `stats` lines of its own does not use its defaults' (HAProxy detaches)
    page = p.stats if getattr(p, "stats_own", False) else None
    if page is None:
        page = StatsPage(where)
        p.stats, p.stats_own = page, True
    arg = w[2] if len(w) > 2 else ""
    if sub == "admin":
        if arg not in ("if", "unless"):
            raise line.error("'stats admin' requires either 'if' or 'unless' followed by a "
                             "condition.")
        page.admin.append(parser.condition(p, line, w[2:]))
    elif sub == "uri":
        if not arg:
            raise line.error("'uri' needs an URI prefix.")
        page.uri = arg
    elif sub == "realm":
        if not arg:
            raise line.error("'realm' needs an realm name.")
        page.realm = arg
    elif sub == "refresh":
        page.refresh_s = _refresh(line, arg)
    elif sub == "http-request":
        if page.http_request and page.http_request[-1].cond is None:
            parser.warn(line, "previous 'stats' action has no condition attached, further "
                              "entries are NOOP.")
        if not arg:
            raise line.error("'http-request' expects 'allow', 'deny', 'auth', ... but got '' "
                             "(missing argument).")
        if arg not in ("allow", "deny", "auth"):
            # HAProxy takes any http-request action here; only these three decide
            raise line.error(f"'stats http-request {arg}' is not supported by edgestick "
                             "(allow, deny, auth)")
        page.http_request.append(parser.parse_rule(p, line, w[2:], "http-request", "http"))
    elif sub == "auth":
        if not arg:
            raise line.error("'auth' needs a user:password account.")
        user, _, password = arg.partition(":")
        page.accounts.append((user, password))
    elif sub == "scope":
        if not arg:
            raise line.error("'scope' needs a proxy name.")
        page.scopes.append(arg)
    elif sub == "hide-version":
        page.hide_version = True
    elif sub == "show-legends":
        page.show_legends = True
    elif sub == "show-node":
        if arg and not all(c.isascii() and (c.isalnum() or c in "_-.") for c in arg):
            raise line.error("'stats show-node' invalid node name - should be a string"
                             "with digits(0-9), letters(A-Z, a-z), hyphen(-) or "
                             "underscode(_).")
        page.node = arg
    elif sub == "show-desc":
        page.desc = " ".join(w[2:])


def _refresh(line: Line, text: str) -> int:
    value, err, _ = parse_time_err(text or "\0")
    if err == "over":
        raise line.error(f"timer overflow in argument <{text}> to stats refresh interval, "
                         "maximum value is 2147483647 s (~68 years).")
    if err is not None:
        raise line.error(f"unexpected character '{err.strip(chr(0))}' in argument to stats "
                         "refresh interval.")
    if text.isdigit():              # a bare number is in seconds here
        return int(text)
    return value // 1000


def finish(cfg, warnings: list) -> None:
    """After parsing: HAProxy's checks and the access rules of each page."""
    for p in cfg.proxies:
        page = getattr(p, "stats", None)
        if page is None:
            continue
        if p.mode != "http":
            warnings.append(f"{p.where}: 'stats': 'stats' statement ignored for proxy "
                            f"'{p.name}' as it requires HTTP mode.")
            p.stats = None
            continue
        if page.rules:                 # a defaults' page shared by several proxies
            continue
        if page.http_request and (page.accounts or page.realm is not None):
            raise ConfigError(f"proxy '{p.name}': stats 'auth'/'realm' and 'http-request' "
                              "can't be used at the same time.", page.where.file,
                              page.where.line, "stats")
        rules = list(page.http_request)
        if page.accounts:
            ul = page.userlist = auth.Userlist(".internal-stats-userlist")
            for user, password in page.accounts:
                u = ul.users.setdefault(user, auth.User(user, page.where))
                u.password, u.insecure = password, True
            rule = m.Rule("auth", where=page.where)
            rule.cond = _unauthenticated(ul)
            rules.append(rule)
        for rule in rules:
            if rule.action == "auth" and rule.fmt is None:
                rule.fmt = page.realm or auth.STATS_REALM
        page.rules = rules


def _unauthenticated(ul: auth.Userlist):
    def cond(ctx):
        got = auth.credentials(ctx.headers)
        return got is None or not ul.check(got[1], got[2])
    return cond


# ------------------------------------------------------------------ serving

async def serve(fe, c, req, ctx, stream, page: StatsPage, backend=None) -> bool:
    """Answer a request under the stats URI; returns keep-alive."""
    verdict = fe._http_rules_sync(c, req, ctx, stream, page.rules, backend) \
        if page.rules else None
    if verdict is not None:
        return False        # HAProxy closes after refusing the stats page (401, 403)
    if backend is None:
        fe.stats.intercepted += 1
    rest = req.target[len(page.uri):]       # (HAProxy: the raw URI past the prefix's length)
    flags = {f for f in ("up", "no-maint", "norefresh", "csv", "typed", "json",
                         "json-schema") if ";" + f in rest}
    admin = any(cond(ctx) for cond in page.admin)
    closing = not req.keep_alive or fe.proc.stopping
    if req.method == "POST":
        code = "DENY"
        body = await _read_body(c, req, stream)
        if body is None:
            code, closing = "EXCD", True
        elif admin:
            code = _post(fe.proc, body)
        location = f"{page.uri};st={code}"
        if "up" in flags:
            location += ";up"
        if "norefresh" in flags and page.refresh_s:
            location += ";norefresh"
        head = ("HTTP/1.1 303 See Other\r\ncache-control: no-cache\r\n"
                "content-type: text/plain\r\ncontent-length: 0\r\n"
                f"location: {location}\r\n" + ("connection: close\r\n" if closing else "")
                + "\r\n")
        return _send(fe, c, stream, 303, head.encode("latin-1"), not closing)
    if "json-schema" in flags or "typed" in flags or "json" in flags or "csv" in flags:
        if "json-schema" in flags:
            kind, ctype, text = None, "application/json", None
        else:
            kind = ("json" if "json" in flags else "typed" if "typed" in flags else None)
            ctype = "application/json" if kind == "json" else "text/plain"
            text = _stat_text(fe.proc, page, fe.model if backend is None else backend.model,
                              flags, kind)
        if text is None:
            text = "{}"             # (no JSON schema here)
    else:
        ctype = "text/html"
        text = render_html(fe.proc, page, fe.model if backend is None else backend.model,
                           flags, admin, _st_code(rest))
    lines = ["HTTP/1.1 200 OK", "cache-control: no-cache", f"content-type: {ctype}"]
    if page.refresh_s and "norefresh" not in flags:
        lines.append(f"refresh: {page.refresh_s}")
    http10 = req.version < 11
    if req.method == "HEAD":
        head = "\r\n".join(lines) + "\r\n\r\n"
        return _send(fe, c, stream, 200, head.encode("latin-1"), not closing)
    if http10:
        closing = True
    if closing:
        lines.append("connection: close")
    lines.append("transfer-encoding: chunked")
    body = text.encode("latin-1", "replace")
    data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    if body:
        data += b"%X\r\n%s\r\n" % (len(body), body)
    data += b"0\r\n\r\n"
    return _send(fe, c, stream, 200, data, not closing)


def _send(fe, c, stream, status: int, data: bytes, keep: bool) -> bool:
    fe.stats.hrsp[status // 100 - 1] += 1
    stream.status = status
    stream.bytes_out += len(data)
    c.write(data)
    return keep


async def _read_body(c, req, stream) -> Optional[bytes]:
    """The form a POST carries (Content-Length or chunked), None if it does not come."""
    if req.framing == http1.NO_BODY:
        return b""
    if req.framing == http1.LENGTH:
        while len(c.buf) < req.length:
            if c.eof or req.length > 65536:
                return None
            try:
                await c.wait_data(5.0)
            except TimeoutError:
                return None
        body = bytes(c.buf[:req.length])
        del c.buf[:req.length]
        c.consumed()
        stream.bytes_in += len(body)
        return body
    scanner = http1.ChunkedScanner()
    out = b""
    while not scanner.done:
        if c.buf:
            try:
                used = scanner.feed(c.buf)
            except http1.BadMessage:
                return None
            out += b"".join(scanner.payload)
            scanner.take()
            del c.buf[:used]
            c.consumed()
            stream.bytes_in += used
            continue
        if c.eof or len(out) > 65536:
            return None
        try:
            await c.wait_data(5.0)
        except TimeoutError:
            return None
    return out


def _post(proc, body: bytes) -> str:
    """The admin form (`b=<backend>`, `action=<ready|drain|maint>`, `s=<server>`...): each
    named server gets the state through the runtime API's `set server` mechanism; the
    status code of the redirect (HAProxy's: the last `b` and `action` win, an unknown
    backend or action is ERRP, DONE/PART/ERRP by servers changed, NONE without servers)."""
    params = []
    for part in body.decode("latin-1").split("&"):
        key, _, value = part.partition("=")
        params.append((unquote_plus(key), unquote_plus(value)))
    backend = action = None
    servers = []
    for key, value in reversed(params):      # HAProxy reads them from the end
        if key == "b" and backend is None:
            backend = proc.backends.get(value)
            if backend is None:
                return "ERRP"
        elif key == "action" and action is None:
            if value not in ("ready", "drain", "maint"):
                return "ERRP"
            action = value
        elif key == "s":
            servers.append(value)
    if not servers:
        return "NONE"
    if backend is None or action is None:
        return "NONE"
    changed = 0
    for name in servers:
        srv = backend.by_name.get(name)
        if srv is not None:
            stats.set_server_state(srv, action)
            changed += 1
    if changed == 0:
        return "ERRP"
    return "DONE" if changed == len(servers) else "PART"


def _st_code(rest: str) -> Optional[str]:
    i = rest.find(";st=")
    if i < 0:
        return None
    code = rest[i + 4:i + 8]
    return code if code in STAT_CODES else "UNKN"


def _in_scope(page: StatsPage, holder: m.Proxy, name: str) -> bool:
    if not page.scopes:
        return True
    return any(name == (holder.name if s == "." else s) for s in page.scopes)


def _rows(proc, page: StatsPage, holder: m.Proxy, flags: set) -> list[dict]:
    rows = stats.stat_rows(proc)
    return [r for r in rows if _in_scope(page, holder, r["pxname"])]


def _stat_text(proc, page: StatsPage, holder: m.Proxy, flags: set, kind) -> str:
    """`show stat` in the requested form, limited to the page's scope."""
    args = ["show", "stat"]
    if kind:
        args.append(kind)
    if "up" in flags:
        args.append("up")
    if "no-maint" in flags:
        args.append("no-maint")
    if not page.scopes:
        return stats.show_stat(proc, args)
    return stats.show_stat(proc, args, lambda r: _in_scope(page, holder, r["pxname"]))


# ------------------------------------------------------------------ HTML

_CSS = """body{font-family:sans-serif;font-size:13px;margin:1em;color:#222}
h1{font-size:18px}h2{font-size:15px;margin:1.2em 0 .3em}
table{border-collapse:collapse;margin-bottom:.5em}
th,td{border:1px solid #bbb;padding:2px 6px;text-align:right;white-space:nowrap}
th{background:#e8e8f0}td.n{text-align:left;font-weight:bold}
tr.fe td{background:#eef}tr.be td{background:#eef}tr.up td{background:#dfd}
tr.down td{background:#fcc}tr.maint td{background:#ccf}tr.drain td{background:#fdc}
p.msg{padding:4px;border:1px solid #999;background:#ffd}"""
_MESSAGES = {"DONE": "Action processed successfully.",
             "PART": "Action partially processed.",
             "NONE": "Nothing has changed.",
             "DENY": "Action denied.",
             "ERRP": "Action not processed because of invalid parameters.",
             "EXCD": "Action not processed: the buffer could not hold the request.",
             "IVAL": "Invalid request.",
             "UNKN": "Unexpected result."}
_COLUMNS = (("Queue", ("qcur", "qmax")), ("Sessions", ("scur", "smax", "slim", "stot")),
            ("Bytes", ("bin", "bout")), ("Denied", ("dreq", "dresp")),
            ("Errors", ("ereq", "econ", "eresp")), ("Warnings", ("wretr", "wredis")),
            ("Responses", ("hrsp_1xx", "hrsp_2xx", "hrsp_3xx", "hrsp_4xx", "hrsp_5xx",
                           "hrsp_other")),
            ("Server", ("status", "lastchg", "weight", "act", "bck", "check_status",
                        "chkfail", "chkdown", "downtime")))


def render_html(proc, page: StatsPage, holder: m.Proxy, flags: set, admin: bool,
                st_code: Optional[str]) -> str:
    """The HTML page: a table a proxy, its frontend, servers and backend rows."""
    esc = html.escape
    rows = _rows(proc, page, holder, flags)
    if "no-maint" in flags:
        rows = [r for r in rows if not (r["type"] == 2 and r["status"].startswith("MAINT"))]
    if "up" in flags:
        rows = [r for r in rows if r["type"] != 2 or r["status"].split()[0] in ("UP", "no")]
    out = ['<!DOCTYPE html>\n<html><head><meta charset="iso-8859-1">',
           f"<title>Statistics Report for edgestick</title><style>{_CSS}</style>"
           "</head><body>"]
    title = "Statistics Report for edgestick"
    if not page.hide_version:
        title += f" (version {esc(__version__)})"
    out.append(f"<h1>{title}</h1>")
    if page.node is not None:
        out.append(f"<p>Node: {esc(page.node or socket.gethostname())}</p>")
    if page.desc is not None:
        out.append(f"<p>Description: {esc(page.desc or holder.description or '')}</p>")
    out.append(f"<p>pid = {os.getpid()} ; uptime = {int(time.time() - proc.start_time)}s ; "
               f"current connections = {proc.cur_conns}"
               f"{' ; refresh every %ds' % page.refresh_s if page.refresh_s else ''}</p>")
    if st_code is not None:
        out.append(f'<p class="msg">{esc(_MESSAGES[st_code])}</p>')
    heads = "".join(f'<th colspan="{len(cols)}">{name}</th>' for name, cols in _COLUMNS)
    sub = "".join(f"<th>{esc(c)}</th>" for _, cols in _COLUMNS for c in cols)
    by_proxy: dict[str, list] = {}
    for r in rows:
        by_proxy.setdefault(r["pxname"], []).append(r)
    for name, prows in by_proxy.items():
        out.append(f'<h2 id="{esc(name)}">{esc(name)}</h2>')
        form = admin and any(r["type"] == 2 for r in prows)
        if form:
            out.append(f'<form method="post" action="{esc(page.uri)}">')
        out.append(f'<table><tr>{"<th></th>" if form else ""}<th rowspan="2">Name</th>'
                   f"{heads}</tr><tr>{'<th></th>' if form else ''}{sub}</tr>")
        for r in prows:
            cls = {0: "fe", 1: "be"}.get(r["type"]) or (
                str(r["status"]).split()[0].lower().replace("no", "up"))
            box = ""
            if form:
                box = (f'<td><input type="checkbox" name="s" value="{esc(r["svname"])}"></td>'
                       if r["type"] == 2 else "<td></td>")
            cells = "".join(f"<td>{esc(_cell(r.get(c)))}</td>"
                            for _, cols in _COLUMNS for c in cols)
            out.append(f'<tr class="{cls}">{box}<td class="n">{esc(r["svname"])}</td>'
                       f"{cells}</tr>")
        out.append("</table>")
        if form:
            out.append('Action on the checked servers: <select name="action">'
                       '<option value="ready">set state to READY</option>'
                       '<option value="drain">set state to DRAIN</option>'
                       '<option value="maint">set state to MAINT</option></select>'
                       f'<input type="hidden" name="b" value="{esc(name)}">'
                       '<input type="submit" value="Apply"></form>')
    if page.show_legends:
        out.append("<p>Legend: UP (green), DOWN (red), MAINT (blue), DRAIN (orange); "
                   "bytes are counted as HAProxy counts them; times in seconds.</p>")
    out.append(f'<p><a href="{esc(page.uri)};csv">CSV export</a> | '
               f'<a href="{esc(page.uri)};json">JSON export</a></p></body></html>\n')
    return "\n".join(out)


def _cell(value) -> str:
    return "" if value is None else str(value)
