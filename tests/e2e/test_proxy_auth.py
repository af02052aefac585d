"""userlist sections and HTTP basic authentication compared with HAProxy 2.6: the 401 of
`http-request auth` byte for byte (realms, keep-alive, HTTP/1.0, HEAD), the same
decisions for the same credentials (crypt(3) hashes $5$ $6$ $y$, insecure passwords,
groups, malformed Authorization headers), what the auth fetches read, the counters, and
`-c` on the same userlist and auth configurations."""
import subprocess

import pytest

from edgestick.cfgsyntax import ConfigError
from edgestick.proxy.config import load_config_text
from proxy_harness import Backends, Client, both, raw_exchange, stat_row, workdir

pytestmark = pytest.mark.haproxy

SHA256 = "$5$abcdefgh$gruCpC7VkOTspMQTTSAR8mtlO9Upms.fwqE5y16JVM."       # "secret"
SHA512 = ("$6$saltsalt$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDehy0S5knV8wiOQSpT0Y77"
          "vwPZN.Pq.H91p5hVO1")                                          # "secret"
YESCRYPT = "$y$j9T$abcdefghijklmnop$3dL1LkYnZM.OVXuVdnnaKVDlLYT92dRwOzDZ5XiVCe."  # "secret"

CONFIG = f"""
global
    stats socket {{SOCK}} mode 600 level admin
    nbthread 1

defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s

userlist ul
    group admins users alice
    group ops
    user alice insecure-password wonder
    user bob password {SHA256} groups ops
    user carol password {SHA512} groups ops,admins
    user dave password {YESCRYPT}
    user erin password $md5

frontend fe
    bind 127.0.0.1:{{FE}}
    http-request track-sc0 src table tb
    http-request auth if {{ path /a }} !{{ http_auth(ul) }}
    http-request auth realm "My Realm" if {{ path /r }} !{{ http_auth(ul) }}
    http-request auth realm Admins if {{ path /g }} !{{ http_auth_group(ul) admins }}
    http-request return status 200 content-type text/plain lf-string "type=%[http_auth_type] user=%[http_auth_user] pass=%[http_auth_pass] bearer=%[http_auth_bearer] grp=%[http_auth_group(ul)]" if {{ path /show }}
    http-request return status 200 content-type text/plain string "ok" if {{ path /a }} || {{ path /r }} || {{ path /g }}
    default_backend bk

frontend fe_errorfile
    bind 127.0.0.1:{{FE2}}
    errorfile 401 @ERR1@
    http-request auth realm E if !{{ http_auth(ul) }}
    default_backend bk

frontend fe_open_ended
    bind 127.0.0.1:{{FE3}}
    errorfile 401 @ERR2@
    http-request auth if !{{ http_auth(ul) }}
    default_backend bk

backend tb
    stick-table type ip size 10 store http_req_cnt,http_err_cnt

backend bk
    http-request auth if !{{ http_auth(ul) }}
    server s1 127.0.0.1:{{S1}}
"""


@pytest.fixture(scope="module")
def pair(haproxy_bin):
    b = Backends(["s1"]).start()
    try:
        with workdir() as wd:
            (wd / "401.http").write_bytes(b"HTTP/1.1 401 Unauthorized\r\nContent-Type: "
                                          b"text/plain\r\nX-Custom: yes\r\n"
                                          b"Content-Length: 5\r\n\r\nnope\n")
            (wd / "401-open.http").write_bytes(b"HTTP/1.1 401 Unauthorized\r\nContent-Type: "
                                               b"text/plain\r\n\r\nnope\n")
            text = CONFIG.replace("@ERR1@", str(wd / "401.http")).replace(
                "@ERR2@", str(wd / "401-open.http"))
            with both(text, b, wd, haproxy_bin, 3) as p:
                yield p
    finally:
        b.kill()


def basic(text: str) -> str:
    import base64
    return "Basic " + base64.b64encode(text.encode()).decode()


@pytest.mark.parametrize("path", ["/a", "/r", "/g", "/backend"])
@pytest.mark.parametrize("shape", ["keep-alive", "close", "http10", "http10-ka", "head"])
def test_401_bytes(pair, path, shape):
    method = "HEAD" if shape == "head" else "GET"
    version = "1.0" if shape.startswith("http10") else "1.1"
    extra = {"close": "Connection: close\r\n", "http10-ka": "Connection: keep-alive\r\n"}
    raw = (f"{method} {path} HTTP/{version}\r\nHost: a\r\n{extra.get(shape, '')}\r\n"
           ).encode()
    got = [raw_exchange(p.port, raw, timeout=0.5) for p in pair]
    assert got[1] == got[0]
    assert got[0].startswith(b"HTTP/1.1 401 ")


CREDENTIALS = [
    None, basic("alice:wonder"), basic("alice:wrong"), basic("bob:secret"), basic("bob:x"),
    basic("carol:secret"), basic("dave:secret"), basic("dave:Secret"), basic("erin:secret"),
    basic("nobody:secret"), basic("alice:wonder:x"), basic(":wonder"),
    "basic " + basic("alice:wonder")[6:], "B " + basic("alice:wonder")[6:],
    "Bas " + basic("alice:wonder")[6:], "Basicx " + basic("alice:wonder")[6:],
    "Basic  " + basic("alice:wonder")[6:], basic("alice:wonder") + ", Basic eA==",
    "Basic YWxpY2U6d29uZGVy=", "Basic YWxpY2U6d29uZGV", "Basic !!!!", "Basic",
    "Basic YQ==OmI=", "Basic YQA6Yg==", "Bearer tok", "Bearer  tok", "Bearer",
    "Digest abc", "Basic YWxp Y2U6d29uZGVy", "Basic\t" + basic("alice:wonder")[6:],
]


@pytest.mark.parametrize("path", ["/a", "/g", "/show", "/backend"])
def test_same_decisions(pair, path):
    """Every credential above: the same status (and for /show the same fetch values)."""
    for cred in CREDENTIALS:
        out = []
        for p in pair:
            c = Client(p.port)
            r = c.request(path, headers=[("Authorization", cred)] if cred else [])
            c.close()
            out.append((r.status, r.body if path == "/show" else None))
        assert out[1] == out[0], cred


@pytest.mark.parametrize("raw", [
    b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloGET /r HTTP/1.1\r\n\r\n",
    b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n",
    b"POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
], ids=["body-then-next", "body-missing", "chunked"])
def test_401_with_a_request_body(pair, raw):
    got = [raw_exchange(p.port, raw, timeout=0.5) for p in pair]
    assert got[1] == got[0]


@pytest.mark.parametrize("frontend", [1, 2])
@pytest.mark.parametrize("shape", ["keep-alive", "close", "http10-ka", "head"])
def test_401_from_an_errorfile(pair, frontend, shape):
    """`errorfile 401`: that page with the www-authenticate header (one without
    Content-Length closes the connection), as HAProxy."""
    method = "HEAD" if shape == "head" else "GET"
    version = "1.0" if shape == "http10-ka" else "1.1"
    extra = {"close": "Connection: close\r\n", "http10-ka": "Connection: keep-alive\r\n"}
    raw = (f"{method} / HTTP/{version}\r\nHost: a\r\n{extra.get(shape, '')}\r\n").encode()
    got = [raw_exchange(p.ports[frontend], raw, timeout=0.5) for p in pair]
    assert got[1] == got[0]
    assert b"www-authenticate" in got[0]


def test_keep_alive_after_401(pair):
    for p in pair:
        c = Client(p.port)
        assert [c.request("/a").status for _ in range(3)] == [401, 401, 401]
        assert c.request("/a", headers=[("Authorization", basic("alice:wonder"))]).status == 200
        assert not c.closed_by_peer(0.05)
        c.close()


def test_counters_like_haproxy(pair):
    h, e = pair
    for p in pair:
        c = Client(p.port, src="127.0.0.7")
        for _ in range(3):
            c.request("/r")
        c.request("/r", headers=[("Authorization", basic("bob:secret"))])
        c.close()
    cols = ("dreq", "ereq", "hrsp_2xx", "hrsp_4xx", "intercepted", "req_tot")
    assert stat_row(e, "fe", "FRONTEND", cols) == stat_row(h, "fe", "FRONTEND", cols)
    rows = [next(ln for ln in p.cli("show table tb key 127.0.0.7").decode().splitlines()
                 if "key=" in ln).split(" ", 1)[1] for p in pair]
    assert rows[1] == rows[0]


UL = "userlist ul\n    group g users u\n    user u insecure-password a\n"
D = ("defaults\n    mode http\n    timeout connect 1s\n    timeout client 5s\n"
     "    timeout server 5s\n")
FE = "frontend f\n    bind 127.0.0.1:20999\n"
CHECKS = [
    # (name, configuration, what our error says; None = valid)
    ("userlist without name", D + "userlist\n", "'userlist' expects <name>"),
    ("userlist two names", D + "userlist a b\n", "unexpected argument 'b'"),
    ("userlist bad name", D + "userlist a/b\n", "character '/' is not permitted"),
    ("group bad option", D + "userlist ul\n    group g foo bar\n", "only supports 'users'"),
    ("user bad option", D + "userlist ul\n    user u foo bar\n", "'user' only supports"),
    ("user unknown group", D + "userlist ul\n    user u insecure-password a groups nog\n",
     "no such group 'nog' specified in user 'u'"),
    ("group unknown user", D + "userlist ul\n    group g users nobody\n",
     "no such user 'nobody' specified in group 'g'"),
    ("unknown keyword", D + "userlist ul\n    foo bar\n", "unknown keyword 'foo'"),
    ("duplicates warn", D + "userlist ul\n    user u insecure-password a\n"
     "    user u insecure-password b\n    group g\n    group g\nuserlist ul\n", None),
    ("any hash taken", D + "userlist ul\n    user u password xyz\n    user v password\n", None),
    ("unknown userlist", D + UL + FE + "    http-request auth if !{ http_auth(nope) }\n",
     "unable to find userlist 'nope' referenced in arg 1 of ACL keyword 'http_auth'"),
    ("missing userlist", D + UL + FE + "    http-request auth if !{ http_auth }\n",
     "missing userlist name in arg 1 of ACL keyword 'http_auth'"),
    ("two userlists", D + UL + FE + "    http-request auth if !{ http_auth(ul,x) }\n",
     "expected ')' before ',x)'"),
    ("unknown group in acl", D + UL + FE + "    http-request auth if !{ http_auth_group(ul) x }\n",
     "invalid group 'x'"),
    ("group acl without groups", D + UL + FE + "    acl a http_auth_group(ul)\n"
     "    http-request auth if !a\n", "no groups specified"),
    ("auth realm missing", D + UL + FE + "    http-request auth realm\n", "missing realm value"),
    ("auth unknown word", D + UL + FE + "    http-request auth foo\n",
     "expects either 'if' or 'unless' followed by a condition but found 'foo'"),
    ("userlist after its use", D + FE + "    http-request auth if !{ http_auth(ul) }\n" + UL, None),
    ("fetches in expressions", D + UL + FE + "    http-request set-header x "
     "%[http_auth_user]%[http_auth_pass]%[http_auth_type]%[http_auth_bearer]\n", None),
    ("unknown userlist in expression", D + UL + FE
     + "    http-request set-header x %[http_auth(nope)]\n",
     "unable to find userlist 'nope' referenced in arg 1 of sample fetch keyword 'http_auth' in "
     "http-request expression in proxy 'f'"),
    ("auth in a backend", D + UL + FE + "    default_backend b\nbackend b\n"
     "    http-request auth realm x if !{ http_auth_group(ul) g }\n", None),
]


@pytest.mark.parametrize("name,text,message", CHECKS, ids=[c[0] for c in CHECKS])
def test_check_like_haproxy(haproxy_bin, name, text, message):
    with workdir() as wd:
        path = wd / "c.cfg"
        path.write_text(text)
        h = subprocess.run([haproxy_bin, "-c", "-f", str(path)], capture_output=True,
                           text=True, timeout=10)
        # 2: valid but nothing to listen on
        assert (h.returncode in (0, 2)) == (message is None), h.stdout + h.stderr
        if message is None:
            load_config_text(text, str(path))
            return
        with pytest.raises(ConfigError) as err:
            load_config_text(text, str(path))
        assert message in str(err.value)
        assert message.split("'")[0] in h.stdout + h.stderr
        assert str(err.value).startswith(f"{path}:")
