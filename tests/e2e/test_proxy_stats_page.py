"""The stats page (`stats enable`, `stats uri`, `stats auth`...) compared with HAProxy 2.6:
the 401 of `stats auth` byte for byte and the connection it closes, the statuses and
headers of the URI variants (;csv, ;norefresh, ;json, ;typed, HEAD, HTTP/1.0, other
methods, other paths), the CSV after the same traffic, `stats http-request deny`, the
admin form's POST (redirect bytes, server states), `stats scope`, and `-c`. The HTML page
is edgestick's own: it is checked for its content, not against HAProxy's."""
import base64
import subprocess

import pytest

from edgestick.cfgsyntax import ConfigError
from edgestick.proxy.config import load_config_text
from proxy_harness import Backends, Client, both, raw_exchange, workdir

pytestmark = pytest.mark.haproxy

CONFIG = """
global
    stats socket {SOCK} mode 600 level admin
    nbthread 1

defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s

frontend fe
    bind 127.0.0.1:{FE}
    use_backend ck if { path_beg /ck }
    use_backend sk if { path_beg /sk }
    default_backend bk

backend ck
    cookie SRV insert indirect nocache
    server c1 127.0.0.1:{S1} cookie c1
    server c2 127.0.0.1:{S2} cookie c2

backend sk
    stick-table type ip size 10
    stick on src
    server k1 127.0.0.1:{S1}
    server k2 127.0.0.1:{S2}

backend bk
    server s1 127.0.0.1:{S1}
    server s2 127.0.0.1:{S1}

listen st
    bind 127.0.0.1:{FE2}
    stats enable
    stats uri /st
    stats auth admin:pw
    stats auth ro:ro
    stats refresh 5s
    stats admin if { src 127.0.0.1 }
    stats show-legends
    stats show-node

frontend plain
    bind 127.0.0.1:{FE3}
    stats enable
    stats scope bk
    stats scope .
    stats http-request deny if { src 127.0.0.3 }
    default_backend bk
"""
ADMIN = ("Authorization", "Basic " + base64.b64encode(b"admin:pw").decode())


@pytest.fixture(scope="module")
def pair(haproxy_bin):
    b = Backends(["s1", "s2"]).start()
    try:
        with workdir() as wd, both(CONFIG, b, wd, haproxy_bin, 3) as p:
            yield p
    finally:
        b.kill()


def head_of(raw: bytes) -> bytes:
    return raw.split(b"\r\n\r\n", 1)[0]


def test_401_bytes_and_close(pair):
    """Without credentials: HAProxy's 401 with the statistics realm, then the connection
    closes (the next pipelined request is not answered)."""
    raw = b"GET /st HTTP/1.1\r\nHost: a\r\n\r\nGET /st HTTP/1.1\r\nHost: a\r\n\r\n"
    got = [raw_exchange(p.ports[1], raw, timeout=1.0) for p in pair]
    assert got[1] == got[0]
    assert b'www-authenticate: Basic realm="HAProxy Statistics"' in got[0]
    assert got[0].count(b"HTTP/1.1") == 1


@pytest.mark.parametrize("uri,version,method,cred", [
    ("/st;csv", "1.1", "GET", "pw"), ("/st;csv;norefresh", "1.1", "GET", "pw"),
    ("/st;json", "1.1", "GET", "pw"), ("/st;typed", "1.1", "GET", "pw"),
    ("/st", "1.1", "GET", "pw"), ("/st;csv", "1.0", "GET", "pw"),
    ("/st;csv", "1.1", "HEAD", "pw"), ("/st;csv", "1.1", "GET", "ro"),
    ("/st;csv", "1.1", "GET", "bad"), ("/stats", "1.1", "GET", "pw"),
    ("http://a/st;csv", "1.1", "GET", "pw"), ("/haproxy?stats;csv", "1.1", "GET", "pw"),
])
def test_uri_variants(pair, uri, version, method, cred):
    """Status line and headers of each variant, the same on both (bodies differ: the
    HTML page is our own, the counters are compared below)."""
    user = {"pw": b"admin:pw", "ro": b"ro:ro", "bad": b"admin:x"}[cred]
    raw = (f"{method} {uri} HTTP/{version}\r\nHost: a\r\nAuthorization: Basic "
           f"{base64.b64encode(user).decode()}\r\n\r\n").encode()
    got = [head_of(raw_exchange(p.ports[1], raw, timeout=0.5)) for p in pair]
    assert got[1] == got[0]


def test_other_method_and_other_path_go_on(pair):
    """PUT under the URI, or another path: not the stats page (no backend here: 503)."""
    for raw in (b"PUT /st;csv HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
                b"GET /nostats HTTP/1.1\r\nHost: a\r\n\r\n"):
        got = [raw_exchange(p.ports[1], raw, timeout=0.5) for p in pair]
        assert got[1] == got[0]


def csv_rows(p, port_index=1, uri="/st;csv", headers=(ADMIN,)):
    c = Client(p.ports[port_index])
    r = c.request(uri, headers=list(headers))
    c.close()
    assert r.status == 200, r.raw_head
    lines = r.body.decode().split("\n")
    names = lines[0][2:].split(",")
    return lines[0], {(v[0], v[1]): dict(zip(names, v))
                      for v in (ln.split(",") for ln in lines[1:] if ln)}


COLS = ("status", "weight", "act", "bck", "type", "iid", "sid", "stot", "dreq", "ereq",
        "hrsp_2xx", "hrsp_4xx", "hrsp_5xx", "req_tot", "lbtot", "mode", "algo", "intercepted")


def test_csv_like_haproxy_after_the_same_traffic(pair):
    for p in pair:
        c = Client(p.port)
        for _ in range(4):
            assert c.request("/").status == 200
        c.close()
        c = Client(p.ports[1])
        c.request("/st")                          # a 401
        c.close()
    (hh, h_rows), (eh, e_rows) = csv_rows(pair[0]), csv_rows(pair[1])
    assert eh == hh
    assert list(e_rows) == list(h_rows)
    for key, hr in h_rows.items():
        er = e_rows[key]
        for col in COLS:
            if key[0] == "st" and col in ("stot", "req_tot", "hrsp_2xx"):
                continue            # this very request is under way on both
            assert er[col] == hr[col], (key, col, er[col], hr[col])


def test_scope_and_deny(pair):
    """`stats scope bk` + `stats scope .`: only those proxies; `stats http-request deny`:
    HAProxy's 403, closed."""
    got = [csv_rows(p, 2, "/haproxy?stats;csv", ())[1] for p in pair]
    assert list(got[1]) == list(got[0])
    assert {k[0] for k in got[0]} == {"bk", "plain"}
    out = []
    for p in pair:
        c = Client(p.ports[2], src="127.0.0.3")
        c.send(b"GET /haproxy?stats;csv HTTP/1.1\r\nHost: a\r\n\r\n")
        r = c.read_response()
        out.append((r.raw_head, r.body, c.closed_by_peer(1.0)))
        c.close()
    assert out[1] == out[0]
    assert out[0][0].startswith(b"HTTP/1.1 403")


def post(p, body: str, uri="/st", src=None):
    c = Client(p.ports[1], src=src)
    c.send((f"POST {uri} HTTP/1.1\r\nHost: a\r\nAuthorization: {ADMIN[1]}\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\n"
            f"Content-Length: {len(body)}\r\n\r\n{body}").encode())
    r = c.read_response()
    c.close()
    return r.raw_head


@pytest.mark.parametrize("body,state", [
    ("s=s1&action=maint&b=bk", "MAINT"), ("s=s1&s=s2&action=maint&b=bk", "MAINT"),
    ("s=s1&action=ready&b=bk", "no check"), ("s=nos&action=ready&b=bk", None),
    ("s=s1&s=nos&action=ready&b=bk", "no check"), ("action=ready&b=bk", None),
    ("s=s1&action=bogus&b=bk", None), ("s=s1&action=ready&b=nobk", None),
    ("s=s1&action=drain&b=bk", "DRAIN"), ("b=bk&action=maint&s=s2", "no check"),
])
def test_admin_post(pair, body, state):
    """The redirect (its st= code) and the server's state after it, as HAProxy."""
    got = [post(p, body) for p in pair]
    assert got[1] == got[0]
    if state is not None:
        states = [csv_rows(p)[1][("bk", "s1")]["status"] for p in pair]
        assert states == [state, state]
    for p in pair:                              # back to ready for the next case
        post(p, "s=s1&s=s2&action=ready&b=bk")


def test_drained_server_takes_no_new_traffic(pair):
    """After `drain` from the form: the server is DRAIN, the backend's weight and active
    count leave it out, and the balancing sends it nothing (lbtot), as in HAProxy."""
    def lbtot(p):
        rows = csv_rows(p)[1]
        return [int(rows[("bk", s)]["lbtot"]) for s in ("s1", "s2")], rows[("bk", "BACKEND")]
    before = [lbtot(p)[0] for p in pair]
    for p in pair:
        post(p, "s=s1&action=drain&b=bk")
        c = Client(p.port)
        for _ in range(4):
            assert c.request("/").status == 200
        c.close()
    after = [lbtot(p) for p in pair]
    for p in pair:
        post(p, "s=s1&action=ready&b=bk")
    deltas = [[a - b for a, b in zip(after[i][0], before[i])] for i in range(2)]
    assert deltas == [[0, 4], [0, 4]]
    cols = ("status", "weight", "act", "bck")
    assert [after[1][1][c] for c in cols] == [after[0][1][c] for c in cols]


def test_chunked_post(pair):
    body = b"s=s2&action=maint&b=bk"
    raw = (b"POST /st HTTP/1.1\r\nHost: a\r\nAuthorization: " + ADMIN[1].encode()
           + b"\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n" + body[:5] + b"\r\n%x\r\n"
           % (len(body) - 5) + body[5:] + b"\r\n0\r\n\r\n")
    got = []
    for p in pair:
        c = Client(p.ports[1])
        c.send(raw)
        got.append(c.read_response().raw_head)
        c.close()
        assert csv_rows(p)[1][("bk", "s2")]["status"] == "MAINT"
        post(p, "s=s1&s=s2&action=ready&b=bk")
    assert got[1] == got[0]


def test_drained_server_keeps_its_persistent_clients(pair):
    """HAProxy's drain: a client whose cookie names the drained server still reaches it,
    new clients go to the others."""
    out = []
    for p in pair:
        assert b"st=DONE" in post(p, "s=c1&action=drain&b=ck")
        c = Client(p.port)
        got = [c.request("/ck", headers=[("Cookie", "SRV=c1")]).server,
               c.request("/ck").server, c.request("/ck").server]
        c.close()
        post(p, "s=c1&action=ready&b=ck")
        out.append(got)
    assert out[1] == out[0] == ["s1", "s2", "s2"]
    out = []
    for p in pair:                  # the same with a stick table entry
        first = Client(p.port, src="127.0.0.9").request("/sk").server
        name = {"s1": "k1", "s2": "k2"}[first]
        post(p, f"s={name}&action=drain&b=sk")
        out.append([first, Client(p.port, src="127.0.0.9").request("/sk").server,
                    Client(p.port, src="127.0.0.10").request("/sk").server])
        post(p, f"s={name}&action=ready&b=sk")
    assert out[1] == out[0]
    assert out[0][1] == out[0][0] != out[0][2]


def test_post_without_admin_is_denied(pair):
    got = [post(p, "s=s1&action=maint&b=bk", src="127.0.0.2") for p in pair]
    assert got[1] == got[0]
    assert b"location: /st;st=DENY" in got[0]
    assert [csv_rows(p)[1][("bk", "s1")]["status"] for p in pair] == ["no check"] * 2


def test_html_page(pair):
    """Ours: every proxy and server, their counters, the admin form, a readable page."""
    e = pair[1]
    c = Client(e.ports[1])
    r = c.request("/st;st=DONE", headers=[ADMIN])
    c.close()
    assert r.status == 200 and r.header("content-type") == "text/html"
    assert r.header("refresh") == "5"
    page = r.body.decode("latin-1")
    for name in ("fe", "bk", "st", "plain", "s1", "s2", "FRONTEND", "BACKEND"):
        assert f">{name}<" in page
    assert 'name="action"' in page and "Action processed successfully" in page
    assert "Legend" in page and "Node:" in page
    from html.parser import HTMLParser
    HTMLParser().feed(page)


D = ("defaults\n    mode http\n    timeout connect 1s\n    timeout client 5s\n"
     "    timeout server 5s\n")
L = "listen l\n    bind 127.0.0.1:20999\n"
CHECKS = [
    ("bare stats", D + L + "    stats\n", "missing keyword in 'stats'"),
    ("unknown parameter", D + L + "    stats foo\n", "unknown stats parameter 'foo'"),
    ("socket in a proxy", D + L + "    stats socket /tmp/x\n", "unknown stats parameter 'socket'"),
    ("uri missing", D + L + "    stats uri\n", "'uri' needs an URI prefix."),
    ("realm missing", D + L + "    stats realm\n", "'realm' needs an realm name."),
    ("auth missing", D + L + "    stats auth\n", "'auth' needs a user:password account."),
    ("refresh bad", D + L + "    stats refresh 5x\n",
     "unexpected character 'x' in argument to stats refresh interval."),
    ("admin without condition", D + L + "    stats admin\n", "'stats admin' requires either"),
    ("admin in defaults", "defaults d\n    stats admin if TRUE\n", "not allowed in 'defaults'"),
    ("scope missing", D + L + "    stats scope\n", "'scope' needs a proxy name."),
    ("show-node bad", D + L + "    stats show-node bad/name\n", "invalid node name"),
    ("auth and http-request", D + L + "    stats auth a:b\n    stats http-request deny\n",
     "stats 'auth'/'realm' and 'http-request' can't be used at the same time."),
    ("all settings", D + L + "    stats enable\n    stats uri /s x\n    stats realm My Realm\n"
     "    stats auth a:b\n    stats auth nocolon\n    stats refresh 10s\n"
     "    stats hide-version\n    stats show-legends\n    stats show-node n1\n"
     "    stats show-desc hello world\n    stats admin if TRUE\n    stats scope l\n", None),
    ("http-request rules", D + L + "    stats http-request deny if { src 10.0.0.1 }\n"
     "    stats http-request auth realm x if { src 10.0.0.2 }\n    stats http-request allow\n",
     None),
    ("in a frontend, a backend, defaults", "defaults\n    mode http\n    stats enable\n"
     "    stats auth a:b\n" + "frontend f\n    bind 127.0.0.1:20999\n    stats enable\n"
     "    default_backend b\nbackend b\n    stats uri /x\n", None),
    ("tcp mode warns", D + "listen l\n    bind 127.0.0.1:20999\n    mode tcp\n"
     "    stats enable\n", None),
]


@pytest.mark.parametrize("name,text,message", CHECKS, ids=[c[0] for c in CHECKS])
def test_check_like_haproxy(haproxy_bin, name, text, message):
    with workdir() as wd:
        path = wd / "c.cfg"
        path.write_text(text)
        h = subprocess.run([haproxy_bin, "-c", "-f", str(path)], capture_output=True,
                           text=True, timeout=10)
        assert (h.returncode in (0, 2)) == (message is None), h.stdout + h.stderr
        if message is None:
            load_config_text(text, str(path))
            return
        with pytest.raises(ConfigError) as err:
            load_config_text(text, str(path))
        assert message in str(err.value)
        assert message.split("'")[0] in h.stdout + h.stderr
        assert str(err.value).startswith(f"{path}:")
