"""Sample fetches and converters compared with HAProxy 2.6: the string, encoding and hash
converters (url_dec, field, word, regsub, base64/b64dec, bytes, sdbm/djb2/wt6/crc32,
ltime/utime, or/xor/cpl) on the same requests, the backend and server state fetches
(nbsrv, be_conn, fe_conn, srv_is_up, srv_conn, queue, connslots) once the health checks
have settled, the stream's own proxies and request (fe_name, be_id, srv_name, req.ver,
pathq...), and the configuration errors and warnings of `-c` for their bad arguments and
for fetches used before their object exists."""
import subprocess
import sys
import time

import pytest

from proxy_harness import Backends, both, free_ports, one_request, workdir

pytestmark = pytest.mark.haproxy

DEFAULTS = """
defaults
    mode http
    timeout connect 2s
    timeout client 5s
    timeout server 5s
"""

CONVERTERS = [
    "req.hdr(x),url_dec", "req.hdr(x),url_dec(1)",
    "path,field(2,/)", "path,field(-1,/)", "path,field(2,/,2)", "path,field(-2,/,0)",
    "path,field(7,/)", "path,field(-7,/)", "path,field(1,/.)", "path,field(3,/,0)",
    "path,word(2,/)", "path,word(-1,/)", "path,word(1,/,2)", "path,word(-2,/,0)",
    "path,word(9,/)", "path,word(-9,/)",
    "path,regsub(/+,/,g)", "path,regsub(/,_)", "path,regsub(A,x,ig)", "path,regsub(a,X,i)",
    "path,regsub(^/,_)", "path,regsub(b.,Z,g)", "path,regsub(x*,-,g)",
    "req.hdr(x),base64", "req.hdr(x),b64dec,hex", "req.hdr(x),bytes(2),hex",
    "req.hdr(x),bytes(1,3),hex", "req.hdr(x),bytes(40),hex", "req.hdr(x),bytes(0,-1),hex",
    "req.hdr(x),sdbm", "req.hdr(x),sdbm(1)", "req.hdr(x),djb2", "req.hdr(x),djb2(1)",
    "req.hdr(x),wt6", "req.hdr(x),wt6(1)", "req.hdr(x),crc32", "req.hdr(x),crc32(1)",
    "path,length,utime(%Y-%m-%dT%H:%M:%S)", "path,length,utime(%d/%b/%Y,86400)",
    "path,length,or(6),xor(3)", "path,length,cpl",
    "req.hdr(x),crc32c", "req.hdr(x),crc32c(1)", "req.hdr(x),sha1,hex", "req.hdr(x),sha2,hex",
    "req.hdr(x),sha2(224),hex", "req.hdr(x),sha2(512),hex", "req.hdr(x),ub64enc",
    "req.hdr(x),ub64enc,ub64dec,hex", "path,ub64dec,hex", "path,ltrim(/a)", "path,ltrim", "path,rtrim(/.de)",
    "path,length,mul(86399),http_date", "path,length,http_date(3600)",
    "path,length,mul(1500),http_date(0,ms)", "path,length,mul(86400000000),http_date(0,us)",
    "req.hdr(x),xxh32", "req.hdr(x),xxh32(1)", "req.hdr(x),xxh64", "req.hdr(x),xxh64(7)",
    "req.hdr(x),url_enc", "req.hdr(x),url_enc(query)", "req.hdr(x),digest(md5),hex",
    "req.hdr(x),digest(SHA512),hex", "req.hdr(x),digest(sha3-256),hex",
    "req.hdr(x),hmac(sha256,a2V5),hex", "req.hdr(x),hmac(md5,QUJD),hex",
    "req.hdr(x),host_only", "req.hdr(x),port_only", "req.hdr(x),lower", "req.hdr(x),upper",
]

CONV_CONFIG = DEFAULTS + """
frontend fe
    bind 127.0.0.1:{FE}
    http-request return status 200 content-type text/plain lf-string "%s\\n"
""" % "|".join(f"%[{e}]" for e in CONVERTERS)

REQUESTS = [
    ("/a/b//c/d.e", "a%20b+c?d+e%41"),
    ("/", ""),
    ("/Abc/xAx/aaa", "QUJD"),
    ("//x//", "QQ=="),
    ("/api/v1/items/42", "QUI="),
    ("/one", "%zz"),
    ("/x.y/z", "Q==="),
    ("/p", "a+b%2Bc"),
    ("/q", "QQ==QQ=="),
    ("/u", "-_8"), ("/YWJj", "YWJj"), ("/YWJjZA", "YWJjZA"), ("/YWJjZ", "YWJjZ"), ("/-_8", ""),
    ("/r", "hello world, 0123456789"),
    ("/enc", "a !\"#$%&'()*+,-./09:;<=>?@AZ[\\]^_`az{}~ \xe9"),
    *[("/h", v) for v in ("a.b:80", "[::1]:8080", "[::1]", "a:", "a:x", "::1", "a:99999",
                          ":80", "A.B:0080", "a:80:90", "[::1", "a:-1", "Www.X")],
    ("/long", "The quick brown fox jumps over the lazy dog, 0123456789 times; abcdefghijk"),
]


def test_converters_as_haproxy(haproxy_bin):
    be = Backends([])
    with workdir() as tmp, both(CONV_CONFIG, be, tmp, haproxy_bin) as (h, e):
        for path, x in REQUESTS:
            hdrs = [("x", x)] if x else []
            rh = one_request(h.port, path, headers=hdrs)
            re_ = one_request(e.port, path, headers=hdrs)
            assert rh.status == re_.status == 200
            got = re_.body.decode("latin-1").split("|")
            want = rh.body.decode("latin-1").split("|")
            diffs = [(c, w, g) for c, w, g in zip(CONVERTERS, want, got) if w != g]
            assert not diffs, (path, x, diffs)


STATE_CONFIG = DEFAULTS + """
frontend fe
    bind 127.0.0.1:{FE}
    http-request return status 200 content-type text/plain lf-string "%[nbsrv(be)]|%[nbsrv(be_bck)]|%[nbsrv(be_all)]|%[nbsrv(be_dead)]|%[srv_is_up(be/up)]|%[srv_is_up(be/down)]|%[srv_is_up(be/off)]|%[srv_is_up(be_bck/b1)]|%[be_conn(be)]|%[srv_conn(be/up)]|%[queue(be)]|%[connslots(be)]|%[connslots(be_bck)]|%[fe_conn(fe)]|%[fe_conn(other)]|%[avg_queue(be)]|%[avg_queue(be_dead)]|%[be_conn_free(be)]|%[be_conn_free(be_bck)]|%[be_conn_free(be_all)]|%[srv_conn_free(be/up)]|%[srv_conn_free(be/off)]|%[srv_weight(be/up)]|%[srv_iweight(be/down)]|%[srv_uweight(be_all/b2)]|%[srv_queue(be/up)]|%[str(be_all),nbsrv]|%[str(nope),nbsrv]|%[str(be/up),srv_queue]|%[str(be/zz),srv_queue]\\n" if { path /state }
    http-request return status 200 content-type text/plain string "dead\\n" if { nbsrv(be_dead) lt 1 } { path /acl }
    http-request return status 200 content-type text/plain lf-string "%[fe_req_rate(fe)]|%[fe_sess_rate(fe)]|%[be_sess_rate(be)]" if { path /rates }
    use_backend be_bck if { path /bck }
    default_backend be

frontend other
    bind 127.0.0.1:{FE2}
    default_backend be

backend be
    server up 127.0.0.1:{S1} check inter 200ms maxconn 10 maxqueue 5 weight 7
    server down 127.0.0.1:{DEAD} check inter 200ms fall 1 maxconn 4 maxqueue 2
    server off 127.0.0.1:{S1} disabled

backend be_bck
    http-request return status 200 content-type text/plain string "one\\n" if { nbsrv eq 1 } { srv_is_up(b2) }
    http-request return status 200 content-type text/plain string "other\\n"
    server dead 127.0.0.1:{DEAD} check inter 200ms fall 1
    server b1 127.0.0.1:{S1} backup
    server b2 127.0.0.1:{S1} backup

backend be_all
    option allbackups
    server dead 127.0.0.1:{DEAD} check inter 200ms fall 1
    server b1 127.0.0.1:{S1} backup maxconn 3
    server b2 127.0.0.1:{S1} backup maxconn 2 weight 9

backend be_dead
    server dead 127.0.0.1:{DEAD} check inter 200ms fall 1
"""


def test_backend_state_as_haproxy(haproxy_bin):
    be = Backends(["s1"]).start()
    try:
        template = STATE_CONFIG.replace("{DEAD}", str(free_ports(1)[0]))
        with workdir() as tmp, both(template, be, tmp, haproxy_bin, n_frontends=2) as (h, e):
            time.sleep(1.5)                  # the checks of the dead servers have failed
            # the same state on both (fe_conn(fe) may count a previous request's connection
            # for a moment: read again until it has gone, 3 s at most)
            expected = b"1|1|2|0|1|0|0|1|0|0|0|15|-1|1|0|0|0|10|-1|5|10|-1|7|1|9|0|2||0|\n"
            for p in (h, e):
                deadline = time.monotonic() + 3
                while (got := one_request(p.port, "/state").body) != expected \
                        and time.monotonic() < deadline:
                    time.sleep(0.1)
                assert got == expected, p.kind
            for path in ("/acl", "/bck"):
                rh, re_ = one_request(h.port, path), one_request(e.port, path)
                assert (re_.status, re_.body) == (rh.status, rh.body), path
            assert rh.body != b"", rh.body
            # rates depend on the instant of reading: bounded by the traffic on both
            for p in (h.port, e.port):
                for _ in range(4):
                    assert one_request(p, "/fwd").status == 200
                fe_req, fe_sess, be_sess = map(int, one_request(p, "/rates").body.split(b"|"))
                assert 1 <= fe_req <= 10 and 1 <= fe_sess <= 10 and 1 <= be_sess <= 4, p
    finally:
        be.kill()


BAD = [
    ("nbsrv(nope)", "unable to find backend 'nope' referenced in arg 1 of sample fetch "
     "keyword 'nbsrv'"),
    ("be_conn(fe)", "unable to find backend 'fe' referenced in arg 1 of sample fetch "
     "keyword 'be_conn'"),
    ("fe_conn(be)", "unable to find frontend 'be' referenced in arg 1 of sample fetch "
     "keyword 'fe_conn'"),
    ("srv_is_up(be/nope)", "unable to find server 'nope' in proxy 'be', referenced in arg 1 "
     "of sample fetch keyword 'srv_is_up'"),
    ("srv_conn(nope/s1)", "unable to find proxy 'nope' referenced in arg 1 of sample fetch "
     "keyword 'srv_conn'"),
    ("srv_is_up(s1)", "unable to find server 's1' in proxy 'fe', referenced in arg 1 of "
     "sample fetch keyword 'srv_is_up'"),
    ("srv_is_up", "missing server name in arg 1 of sample fetch keyword 'srv_is_up'"),
    ("nbsrv(be,x)", "fetch method 'nbsrv' : expected ')' before ',x)"),
    ("queue(nope)", "unable to find backend 'nope'"),
    ("connslots(nope)", "unable to find backend 'nope'"),
    ("rand(x)", "fetch method 'rand' : failed to parse 'x' as type 'integer' at position 1"),
    ("date(0,x)", "invalid args in fetch method 'date' : expects 's', 'ms' or 'us', got 'x'"),
    ("path,field(0,/)", "invalid args in converter 'field' : Unexpected value 0 for index."),
    ("path,word(0,/)", "invalid args in converter 'word' : Unexpected value 0 for index."),
    ("path,field(x,/)", "invalid arg 1 in converter 'field' : failed to parse 'x' as type "
     "'integer' at position 1"),
    ("path,field(1)", "invalid arg 2 in converter 'field' : missing arguments (got 1/2), type "
     "'string' expected."),
    ("path,field(1,)", "invalid args in converter 'field' : Empty separators list."),
    ("path,word(1,/,x)", "invalid arg 3 in converter 'word' : failed to parse 'x' as type "
     "'integer' at position 3"),
    ("path,regsub(a)", "invalid arg 2 in converter 'regsub' : missing arguments (got 1/2), "
     "type 'string' expected."),
    ("path,regsub(a,b,q)", "invalid args in converter 'regsub' : invalid regex flag 'q', only "
     "'i' and 'g' are supported"),
    ("path,regsub(*,x)", "error in regex '*' in arg 1 of conversion keyword 'regsub'"),
    ("path,bytes(x)", "invalid arg 1 in converter 'bytes' : failed to parse 'x' as type "
     "'integer' at position 1"),
    ("path,sdbm(x)", "invalid arg 1 in converter 'sdbm' : failed to parse 'x' as type "
     "'integer' at position 1"),
    ("path,crc32(1,2)", "invalid arg 2 in converter 'crc32' : expected ')' before ',2)"),
    ("path,url_dec(1,2)", "invalid arg 2 in converter 'url_dec' : expected ')' before ',2)"),
    ("path,b64dec(1)", "invalid arg 1 in converter 'b64dec' : expected ')' before '1)"),
    ("path,sha2(100)", "invalid args in converter 'sha2' : Unsupported number of bits: '100'."),
    ("int(1),http_date(0,x)", "converter 'http_date' : expects 's', 'ms' or 'us', got 'x'"),
    ("path,xxh32(a)", "invalid arg 1 in converter 'xxh32' : failed to parse 'a' as type "
     "'integer' at position 1"),
    ("path,digest(nope)", "invalid args in converter 'digest' : algorithm must be a valid "
     "OpenSSL message digest name."),
    ("path,hmac(sha256)", "invalid arg 2 in converter 'hmac' : missing arguments (got 1/2), "
     "type 'string' expected."),
    ("path,hmac(sha256,!!)", "invalid args in converter 'hmac' : failed to parse key : argument "
     "needs to be base64 "
     "encoded"),
    ("path,url_enc(x)", "invalid args in converter 'url_enc' : Unexpected encode type. Allowed "
     "value is 'query'."),
    ("int(1),ltime(%Y,x)", "invalid arg 2 in converter 'ltime' : failed to parse 'x' as "
     "type 'integer' at position 2"),
]


# fetches of what a request rule runs before: the server, the response, the backend
UNAVAILABLE = [
    ("srv_name", "sample fetch <srv_name]> may not be reliably used here because it needs "
     "'server' which is not available here."),
    ("status", "sample fetch <status]> may not be reliably used here because it needs "
     "'HTTP response' which is not available here."),
    ("be_id", "sample fetch <be_id]> may not be reliably used here because it needs "
     "'backend' which is not available here."),
    ("uuid(3)", "Unsupported UUID version"),
]
BAD += UNAVAILABLE

# the same names in conditions (HAProxy words them per context) and omitted names (the
# rule's proxy, which must have the capability)
BAD_RULES = [
    ("http-request deny if { nbsrv(nope) -m found }", "unable to find backend 'nope' "
     "referenced in arg 1 of ACL keyword 'nbsrv' in proxy 'fe'."),
    ("acl x srv_is_up(be/zz)", "unable to find server 'zz' in proxy 'be', referenced in arg 1 "
     "of ACL keyword 'srv_is_up' in proxy 'fe'."),
    ("http-request deny if { nbsrv lt 1 }", "proxy 'fe', referenced in arg 1 of ACL keyword "
     "'nbsrv' in proxy 'fe', has not backend capability."),
    ('http-request return status 200 content-type text/plain lf-string "%[connslots]"',
     "proxy 'fe', referenced in arg 1 of sample fetch keyword 'connslots' in http-request "
     "expression in proxy 'fe', has not backend capability."),
]
ALL_BAD = [(f'http-request return status 200 content-type text/plain lf-string "%[{e}]"', m)
           for e, m in BAD] + BAD_RULES


@pytest.mark.parametrize("rule,message", ALL_BAD, ids=[b[0] for b in BAD] +
                         [r for r, _ in BAD_RULES])
def test_config_errors_as_haproxy(haproxy_bin, rule, message):
    with workdir() as d:
        cfg = d / "t.cfg"
        cfg.write_text(DEFAULTS + f"frontend fe\n    bind 127.0.0.1:1\n    {rule}\n"
                       "    default_backend be\nbackend be\n    server s1 127.0.0.1:1\n")
        for argv in ([haproxy_bin, "-c", "-f", str(cfg)],
                     [sys.executable, "-m", "edgestick", "proxy", "-c", "-f", str(cfg)]):
            r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
            out = r.stdout + r.stderr
            assert r.returncode != 0, (argv[0], out)
            assert message in out, (argv[0], out)
            assert "t.cfg:9" in out.replace("[", "").replace(" ", ""), out


RELOAD_CONFIG = """
global
    stats socket {SOCK} mode 600 level admin
""" + DEFAULTS + """
frontend fe
    bind 127.0.0.1:{FE}
    http-request return status 200 content-type text/plain lf-string "%[nbsrv(be)]|%[srv_is_up(be/a)]\\n" if { path /n }
    http-request return status 200 content-type text/plain string "many\\n" if { nbsrv(be) gt 1 }
    http-request return status 200 content-type text/plain string "few\\n"

backend be
    server a 127.0.0.1:{S1}
"""


def test_a_reload_is_seen_by_compiled_fetches():
    """edgestick only (HAProxy reloads by a new process): the same compiled expressions
    (lf-string cache, conditions) read the new backends after `reload`, and a reload
    naming an unknown backend is refused with the running one kept."""
    from proxy_harness import start_proxy
    be = Backends(["s1"]).start()
    try:
        with workdir() as tmp:
            p = start_proxy("edgestick", RELOAD_CONFIG, be, tmp)
            try:
                assert one_request(p.port, "/n").body == b"1|1\n"
                assert one_request(p.port, "/").body == b"few\n"
                text = open(p.cfg_path).read()
                open(p.cfg_path, "w").write(text + f"    server b 127.0.0.1:{be.ports['s1']}\n")
                assert p.cli("reload").startswith(b"Success=1")
                assert one_request(p.port, "/n").body == b"2|1\n"
                assert one_request(p.port, "/").body == b"many\n"
                open(p.cfg_path, "w").write(text.replace("nbsrv(be) gt", "nbsrv(nope) gt"))
                reply = p.cli("reload")
                assert reply.startswith(b"Reload failed:") and b"unable to find backend 'nope'" \
                    in reply, reply
                assert one_request(p.port, "/n").body == b"2|1\n"
            finally:
                p.stop()
    finally:
        be.kill()


IDENTITY_CONFIG = """
global
    nbthread 1
""" + DEFAULTS + """
frontend fe
    bind 127.0.0.1:{FE}
    http-request return status 200 content-type text/plain lf-string "%[fe_name]|%[fe_id]|%[fe_defbe]|%[fe_client_timeout]|%[req.ver]|%[capture.req.ver]|%[capture.req.uri]|%[pathq]|%[url]|%[stopping]|%[nbproc]|%[thread]|%[src_is_local]|%[dst_is_local]|%[hostname]|%[uuid,length]|%[uuid(4),length]\\n" if { path_beg /fe }
    http-response set-header x-info "%[fe_name]|%[be_name]|%[be_id]|%[srv_name]|%[srv_id]|%[be_server_timeout]"
    use_backend numbered if { path_beg /num }
    default_backend bk

backend bk
    timeout server 7s
    http-request return status 200 content-type text/plain lf-string "%[fe_name]|%[be_name]|%[be_id]|%[be_server_timeout]|%[be_tunnel_timeout]\\n" if { path_beg /be }
    server s1 127.0.0.1:{S1}

backend numbered
    id 42
    server first 127.0.0.1:{S1} id 9

listen li
    bind 127.0.0.1:{FE2}
    http-request set-header x-be %[be_name]
    http-request return status 200 content-type text/plain lf-string "%[fe_name]|%[be_name]|%[fe_id]|%[be_id]|%[fe_defbe]\\n"
    server s1 127.0.0.1:{S1}
"""

IDENTITY_REQUESTS = [
    b"GET /fe/x?a=1 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    b"GET /fe/x? HTTP/1.0\r\n\r\n",
    b"GET http://a/fe/y?b=2 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    b"GET /be HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
]


def test_stream_identity_as_haproxy(haproxy_bin):
    from proxy_harness import raw_exchange
    be = Backends(["s1"]).start()
    try:
        with workdir() as tmp, both(IDENTITY_CONFIG, be, tmp, haproxy_bin, n_frontends=2) as (h, e):
            for raw in IDENTITY_REQUESTS:
                assert raw_exchange(e.port, raw) == raw_exchange(h.port, raw), raw
            for path in ("/fwd", "/num"):        # response rules see the backend and server
                rh, re_ = one_request(h.port, path), one_request(e.port, path)
                assert re_.status == rh.status == 200
                assert re_.header("x-info") == rh.header("x-info"), path
            assert one_request(e.port, "/num").header("x-info") == "fe|numbered|42|first|9|5000"
            assert one_request(e.ports[1], "/").body == one_request(h.ports[1], "/").body
    finally:
        be.kill()


WARN_RULES = """
frontend fe
    bind 127.0.0.1:1
    http-request deny if { status 500 }
    http-request deny if { srv_name s1 }
    http-response deny if { srv_name s1 }
    http-request deny if { be_name bk }
    use_backend bk if { be_id 3 }
    default_backend bk

backend bk
    http-request deny if { srv_id 7 }
    http-request deny if { be_id 7 }
    server s1 127.0.0.1:1

listen li
    bind 127.0.0.1:2
    http-request deny if { srv_id 7 }
    http-request deny if { be_name x }
    server s1 127.0.0.1:1
"""


def test_never_matching_conditions_warn_as_haproxy(haproxy_bin):
    """Conditions on data their rule runs before: the same lines warned, in the same words."""
    import re
    with workdir() as d:
        cfg = d / "w.cfg"
        cfg.write_text(DEFAULTS + WARN_RULES)
        found = []
        for argv, loc in (([haproxy_bin, "-c", "-f", str(cfg)], r"parsing \[[^]]*w\.cfg:(\d+)\]"),
                          ([sys.executable, "-m", "edgestick", "proxy", "-c", "-f", str(cfg)],
                           r"w\.cfg:(\d+):")):
            r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
            assert r.returncode == 0, r.stdout + r.stderr
            found.append(re.findall(loc + r".*?((?:anonymous acl|acl '\w+') will never match.*)",
                                    r.stdout + r.stderr))
        assert found[1] == found[0]
        assert len(found[0]) == 6, found[0]
