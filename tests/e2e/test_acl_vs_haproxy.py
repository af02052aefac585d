"""Differential check of ACL evaluation: HAProxy 2.6 evaluates a list of conditions
(hand-written ones plus seeded random ones) on real requests and answers which matched;
our compiled conditions evaluate the same requests (same method, path, headers, source,
same stick-table history) and must agree on every condition for every request."""
import random
import socket
import subprocess
import time

import pytest

from edgestick.cfgsyntax import split_words
from edgestick.proxy import http1
from edgestick.proxy.acl import Acl, AclError, compile_condition, parse_acl_expr
from edgestick.proxy.sample import Context, SampleError, compile_expr
from edgestick.proxy.stick_table import StickTable

pytestmark = pytest.mark.haproxy

CONDITIONS = [
    "{ path /a/b.html }", "{ path_beg /a/ }", "{ path_end .html }", "{ path_sub b.ht }",
    "{ path_reg ^/a/[a-z]+\\.html$ }", "{ path_dir a }", "{ path_len gt 6 }", "{ path -m len 8 }",
    "{ path -i /A/B.HTML }", "{ path /A/B.HTML }", "{ url_beg /a/b.html? }", "{ url_end x=1 }",
    "{ query -m found }", "{ query x=1 }", "{ query -m len 0 }",
    "{ method GET }", "{ method POST }", "{ method -i get }", "METH_GET", "METH_POST",
    "{ method -m str -i get }", "{ method -i GET }", "{ method get }", "{ method PURGE get }",
    "{ path -m beg -i /A/ }", "{ path_beg -i /A/ }", "{ hdr(host) -m reg -i ^WWW }",
    "{ hdr_reg(host) ^www }", "{ method -m beg G }", "{ path -m sub -i HTML }",
    "{ hdr_cnt gt 3 }", "{ hdr(connection) -m found }", "{ hdr_cnt(connection) 1 }",
    "{ hdr(connection) foo }", "{ req.fhdr(connection) foo }", "{ hdr_cnt 4 }", "{ req.hdr_cnt(x-list) 3 }", "{ hdr(x-list,1) a }",
    "{ hdr(x-list,-1) c }", "{ req.fhdr(x-list) a,b,c }", "{ hdr(x-list,2) b }",
    "{ cook_cnt(sid) 2 }", "{ req.cook(sid) abcd }", "{ path -m len 7:9 }",
    "{ hdr(x-num) -m int 7 }", "{ path,lower -m str /a/b.html }",
    "{ src ::1 }", "{ src ::/0 }", "{ src 0.0.0.0/0 }", "{ src -m int 2130706433 }",
    "{ src -m bool }", "{ src,ipmask(8,64) ::/64 }", "{ src,ipmask(8,64) 127.0.0.0 }",
    "{ src -m str ::1 }", "{ src -m beg 127 }", "{ dst ::1 }", "{ dst 127.0.0.1 }",
    "{ src_conn_cnt(t) ge 0 }", "!{ src_conn_cnt(t) ge 0 }", "{ sc1_tracked }",
    "{ src,in_table(t) }", "!{ src,in_table(t) }", "{ src,table_trackers(t) ge 0 }",
    "!{ src,table_trackers(t) ge 0 }", "{ src,in_table(t2) -m bool }",
    "{ int(5) gt 10 3 }", "{ int(5) 3-7 }", "{ int(5) 5- }", "{ int(5) lt 3 5 }",
    "{ int(2) -m int -- -3 }", "{ hdr_ip(x-ip) -m int 167838211 }", "{ hdr_ip(x-ip) -m bool }",
    "{ hdr(x-num) -m bool }", "{ always_true -m int 1 }", "{ hdr(x-num) -m int 0 }",
    "!{ src,table_http_req_cnt(t) -m ip 2 }", "{ hdr_val(x-num) -m end 0 }",
    "{ sc1_tracked -m str 1 }", "{ src_port -m str -m found }", "!{ sc1_tracked -m len :3 }",
    "{ path }", "!{ path }", "{ src_port }", "{ src }", "{ hdr(host) }", "!{ hdr(nope) }",
    "{ sc1_http_req_cnt }", "{ sc0_http_req_cnt }", "!{ sc0_http_req_cnt }", "{ path -m found }",
    "{ hdr(host),lower -m end .example.com }", "{ src,ipmask(8) 127.0.0.0 }",
    "{ path,length gt 5 }", "{ src,table_http_req_cnt(t) ge 2 }", "{ src,in_table(t2) }",
    "{ hdr_ip(x-ip) 10.0.0.0/8 }", "{ req.hdr_ip(x-ip) fd00::/8 }", "{ url_param(x) 1 }",
    "{ urlp(y) -m found }", "{ hdr_val(x-num) 7 }", "{ path_dir a/b.html }", "{ path_dir b }", "{ hdr_dom(host) .example.com. }",
    "{ hdr(host) www.example.com }", "{ hdr(host) -i WWW.EXAMPLE.COM }",
    "{ hdr_end(host) -i .example.com }", "{ hdr_beg(host) www. }", "{ hdr_dom(host) -i example.com }",
    "{ hdr_sub(host) ampl }", "{ hdr_len(host) 15 }", "{ hdr(x-list) b }", "{ hdr(x-list) c }",
    "{ hdr(x-list) a }", "{ hdr_cnt(x-list) ge 2 }", "{ hdr_cnt(nope) 0 }", "{ hdr(nope) -m found }",
    "!{ hdr(nope) -m found }", "{ hdr(nope) -m len 0 }", "!{ hdr(nope) -m len 0 }",
    "{ hdr(x-num) -m int gt 10 }", "{ hdr_val(x-num) 5:20 }", "{ hdr_val(x-num) lt 0 }",
    "{ hdr(x-ip) -m ip 10.0.0.0/8 }", "{ hdr(x-ip) -m ip fd00::/8 }",
    "{ cook(sid) abc }", "{ cook(SERVERID) s2 }", "{ cook(nope) -m found }",
    "{ src 127.0.0.0/8 }", "{ src 10.0.0.0/8 }", "{ src ::ffff:127.0.0.0/104 }", "LOCALHOST",
    "{ src -m ip 127.0.0.1 }", "{ dst_port gt 1024 }", "{ src_port gt 0 }",
    "{ ssl_fc }", "!{ ssl_fc }", "TRUE", "FALSE", "{ always_true }",
    "{ sc0_tracked }", "!{ sc0_tracked }", "{ sc1_tracked }", "{ sc_tracked(1) }",
    "{ sc_http_req_cnt(0) ge 0 }", "!{ sc_http_req_cnt(0) ge 0 }",
    "{ sc1_http_req_cnt gt 2 }", "{ sc_http_req_cnt(1) eq 1 }", "{ sc1_http_req_rate ge 3 }",
    "{ sc1_conn_cur 1 }", "{ sc1_conn_cnt gt 0 }", "{ sc1_http_err_cnt ge 0 }",
    "{ src_http_req_cnt(t) gt 3 }", "{ src_http_req_cnt(t2) eq 0 }", "{ table_cnt(t) eq 1 }",
    "{ path_beg /a/ } { method GET }", "{ path_beg /z } || { method GET }",
    "{ method POST } or !{ path_beg /a/ }", "{ method POST } { path_beg /a/ } || { hdr(host) -m found }",
    "acl_multi", "!acl_multi", "acl_multi { method GET }",
]

# Plus conditions drawn from this grammar with a fixed seed (the ones our parser accepts;
# haproxy must accept them too or it does not start and the test fails).
_R_FETCHES = ["path", "url", "query", "method", "src", "src_port", "hdr(host)", "hdr(x-list,1)",
              "hdr(x-list)", "hdr", "req.hdr(x-num)", "hdr_cnt(x-list)", "hdr_cnt", "cook(sid)",
              "cook", "ssl_fc", "always_true", "sc0_http_req_rate", "sc_http_req_cnt(1)",
              "sc1_conn_cur", "sc1_http_req_cnt(t2)", "src_http_req_cnt(t)",
              "src,table_http_req_cnt(t)", "path,lower", "hdr(host),lower", "path,length",
              "hdr_ip(x-ip)", "hdr_val(x-num)", "base", "url_param(x)", "sc1_tracked",
              "table_cnt(t)", "src,ipmask(16)", "req.fhdr(x-list)", "cook_cnt(sid)", "hdr(x-ip)"]
_R_FLAGS = ["", "", "", "-i", "-m str", "-m beg", "-m end", "-m sub", "-m reg", "-m found",
            "-m len", "-m int", "-m ip", "-m bool", "-m dom", "-m dir", "-i -m beg", "-i -m sub"]
_R_VALUES = ["", "/a/b.html", "/a", "a b", "10", "gt 10", "lt 5", "1:5", ":3", "7:", "eq 0",
             "127.0.0.0/8", "10.0.0.0/8", "fd00::/8", "^/a", "example.com", "www", "abc", "x=1",
             "2", "1", "0", "c", "b", "html", "GET", "ge 1", "127.0.0.1", "a,b,c", "a",
             "www.example.com", "-- -3", "12"]


def random_conditions(n: int, seed: int = 2026) -> list[str]:
    rng = random.Random(seed)
    out = []
    while len(out) < n:
        c = " ".join(f"{rng.choice(['', '!'])}{{ {rng.choice(_R_FETCHES)} {rng.choice(_R_FLAGS)} "
                     f"{rng.choice(_R_VALUES)} }}".split())
        try:
            compile_condition(("if",) + split_words(c), {})
        except (AclError, SampleError):
            continue
        out.append(c)
    return out


CONDITIONS += random_conditions(150)

# sample expressions whose values haproxy prints (no sample prints as nothing)
EXPRESSIONS = [
    "base32", "base32+src,hex", "url32", "url32+src,hex", "base", "path", "url", "query",
    "method", "hdr(host)", "hdr(x-list)", "hdr(x-list,1)", "hdr(x-list,-2)", "hdr_cnt(x-list)",
    "hdr_cnt", "req.fhdr(x-list)", "cook(sid)", "cook_cnt(sid)", "cook", "src", "src,ipmask(24)",
    "src,ipmask(8,64)", "hdr(host),lower", "path,length", "url_param(x)", "hdr_val(x-num)",
    "hdr_ip(x-ip)", "sc2_http_req_cnt", "sc_http_req_rate(2)", "sc0_http_req_cnt",
    "src_http_req_cnt(tv)", "src,table_http_req_cnt(tv)", "table_cnt(tv)", "table_avl(t2)",
    "sc1_tracked", "sc2_tracked", "sc_trackers(2)", "int(7),add(3)", "sc2_conn_cnt",
    "hdr(connection)", "path,upper", "src,in_table(tv)", "ssl_fc",
    "hdr_ip(x-ip),ipmask(24,64)", "hdr_ip(x-ip),ipmask(24)", "sc2_http_req_cnt,sub(4),div(3)",
    "sc2_http_req_cnt,sub(4),mod(3)", "int(5),hex", "src,hex", "path,add(3)", "src,add(3)",
    "int(5),ipmask(16)", "hdr(x-ip),ipmask(16)", "ssl_fc,lower", "src,bool", "hdr(x-num),neg",
    "hdr(x-ip),table_http_req_cnt(tv)", "ssl_fc,add(3),in_table(tv)", "str(12),in_table(tv)",
    "method,lower", "method,hex", "base32+src,length", "src,length", "hdr_cnt,not",
    "hdr(x-num),sub(2)", "hdr(x-num),add(1)", "int(5),sub(7),sub(1)", "hdr(x-num),neg,add(-2)",
    "always_true,add(1),in_table(tv)", "always_true,mod(3),ipmask(16)", "int(3),in_table(tv)",
]

_V_FETCHES = ["path", "url", "query", "method", "src", "src_port", "hdr(host)", "hdr(x-num)",
              "hdr(x-list)", "cook(sid)", "base", "base32", "url32", "hdr_cnt", "hdr_val(x-num)",
              "hdr_ip(x-ip)", "int(5)", "str(AbC)", "ssl_fc", "always_true", "sc2_http_req_cnt",
              "src_http_req_cnt(tv)", "url_param(x)", "hdr(x-ip)", "req.fhdr(x-list)"]
_V_CONVERTERS = ["lower", "upper", "length", "hex", "ipmask(16)", "ipmask(24,64)", "add(3)",
                 "sub(2)", "mul(2)", "div(2)", "mod(3)", "and(7)", "neg", "not", "bool",
                 "table_http_req_cnt(tv)", "in_table(tv)"]


def random_expressions(n: int, seed: int = 2026) -> list[str]:
    """Fetch + up to two converters, kept when our compiler accepts them (haproxy must
    accept them too, or it does not start)."""
    rng = random.Random(seed)
    out = []
    while len(out) < n:
        e = rng.choice(_V_FETCHES) + "".join("," + rng.choice(_V_CONVERTERS)
                                             for _ in range(rng.randint(0, 2)))
        try:
            compile_expr(e)
        except SampleError:
            continue
        out.append(e)
    return out


EXPRESSIONS += random_expressions(80)

REQUESTS = [
    "GET /a/b.html?x=1 HTTP/1.1\r\nHost: www.example.com\r\nX-List: a, b\r\nX-List: c\r\n"
    "X-Num: 12\r\nCookie: sid=abc; SERVERID=s2\r\nX-IP: 10.1.2.3\r\n\r\n",
    "GET /a/b.html HTTP/1.1\r\nHost: WWW.example.com\r\nX-Num: -3\r\nX-IP: fd00::1\r\n\r\n",
    "POST /z/index HTTP/1.1\r\nHost: api.example.org\r\nContent-Length: 0\r\n"
    "Cookie: SERVERID=s1\r\nX-List: b\r\n\r\n",
    "GET /A/B.HTML? HTTP/1.1\r\nhost: www.example.com\r\nx-num: 20\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: x\r\nX-Num: abc\r\nX-IP: nonsense\r\n\r\n",
    "OPTIONS /a/ HTTP/1.1\r\nHost: www.example.com\r\n\r\n",
    "get /a/b.html HTTP/1.1\r\nHost: www.example.com\r\n\r\n",
    "GET /a/b.html?y=2&x=1 HTTP/1.1\r\nHost: www.example.com:8080\r\nX-List: a,b,c\r\n\r\n",
    "PURGE /a/b.html HTTP/1.1\r\nHost: www.example.com\r\nCookie: a=1\r\nCookie: sid=abc\r\n"
    "X-List:\r\nX-Num: 007\r\n\r\n",
    "DELETE /a//b.html?x=1&x=1 HTTP/1.1\r\nHost: example.com\r\nCookie: sid=abcd; sid=abc\r\n"
    "X-IP: ::ffff:10.0.0.1\r\n\r\n",
    "GET /c HTTP/1.1\r\nHost: a\r\nConnection: foo, Keep-Alive\r\nX-List: x\r\n\r\n",
]


def haproxy_config(port: int, port6: int | None) -> str:
    lines = ["defaults", "    mode http", "    timeout connect 5s", "    timeout client 5s",
             "    timeout server 5s", "frontend f", f"    bind 127.0.0.1:{port}",
             f"    bind [::1]:{port6}" if port6 else "",
             "    stick-table type ip size 1k expire 1m store http_req_cnt,http_req_rate(10s),"
             "conn_cur,conn_cnt,http_err_cnt",
             "    acl acl_multi path_beg /z", "    acl acl_multi hdr(host) -i www.example.com"]
    # value requests (X-Values header) are tracked in their own table and answered first
    values = "|".join(f"%[{e}]" for e in EXPRESSIONS)
    lines += ["    http-request track-sc2 src table tv if { hdr(x-values) -m found }",
              f"    http-request return status 200 content-type text/plain lf-string "
              f"\"{values}\" if {{ hdr(x-values) -m found }}",
              "    http-request track-sc1 src table t"]
    for i, c in enumerate(CONDITIONS):
        lines.append(f"    http-request set-var(txn.m{i}) str(1) if {c}")
    fmt = " ".join(f"%[var(txn.m{i})]" for i in range(len(CONDITIONS)))
    lines.append(f"    http-request return status 200 content-type text/plain lf-string \"{fmt}\"")
    lines += ["backend t", "    stick-table type ip size 1k expire 1m store http_req_cnt,"
              "http_req_rate(10s),conn_cur,conn_cnt,http_err_cnt",
              "backend t2", "    stick-table type ip size 1k store http_req_cnt",
              "backend tv", "    stick-table type ip size 1k store http_req_cnt,http_req_rate(10s)"]
    return "\n".join(lines) + "\n"


def free_port(host: str = "127.0.0.1") -> int:
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    s.bind((host, 0))
    port = s.getsockname()[1]
    s.close()
    return port


def with_close(raw: str) -> str:
    return raw.replace("HTTP/1.1\r\n", "HTTP/1.1\r\nConnection: close\r\n", 1)


def ask(host: str, port: int, raw: str) -> tuple[list[bool], tuple]:
    with socket.create_connection((host, port), timeout=5) as s:
        s.sendall(with_close(raw).encode())
        local = s.getsockname()
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), data[:200]
    words = body.decode().split(" ")
    assert len(words) == len(CONDITIONS), data
    return [w == "1" for w in words], local[:2]


@pytest.fixture(scope="module")
def haproxy(haproxy_bin, tmp_path_factory):
    port = free_port()
    try:                        # IPv6 loopback, where the host has it
        port6 = free_port("::1")
    except OSError:
        port6 = None
    path = tmp_path_factory.mktemp("acl") / "acl.cfg"
    path.write_text(haproxy_config(port, port6))
    proc = subprocess.Popen([haproxy_bin, "-db", "-f", str(path)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                if port6:
                    socket.create_connection(("::1", port6), 0.2).close()
                break
            except OSError:
                assert proc.poll() is None, proc.stdout.read().decode()
                assert time.monotonic() < deadline, "haproxy did not start"
                time.sleep(0.02)
        yield (port, port6), path.read_text()
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def render(v) -> str:
    """A value as haproxy's log-format prints it."""
    if v is None:
        return ""
    if isinstance(v, bool):
        return "1" if v else "0"
    return str(v)


def test_sample_values_agree_with_haproxy(haproxy):
    (port, port6), _ = haproxy
    exprs = [compile_expr(e) for e in EXPRESSIONS]
    decl = "type ip size 1k expire 1m store http_req_cnt,http_req_rate(10s),conn_cur,conn_cnt," \
           "http_err_cnt".split()
    tables = {"f": StickTable.from_words("f", decl),
              "t2": StickTable.from_words("t2", "type ip size 1k store http_req_cnt".split()),
              "tv": StickTable.from_words(
                  "tv", "type ip size 1k store http_req_cnt,http_req_rate(10s)".split())}
    mismatches = []
    for host, dport in [("127.0.0.1", port)] + ([("::1", port6)] if port6 else []):
        for raw in REQUESTS:
            raw = raw.replace("HTTP/1.1\r\n", "HTTP/1.1\r\nX-Values: 1\r\n", 1)
            sent = with_close(raw)
            with socket.create_connection((host, dport), timeout=5) as s:
                s.sendall(sent.encode())
                src, src_port = s.getsockname()[:2]
                data = b""
                while chunk := s.recv(65536):
                    data += chunk
            theirs = data.partition(b"\r\n\r\n")[2].decode("latin-1").split("|")
            req = http1.parse_request(sent.encode())
            path, _, query = req.target.partition("?")
            row = tables["tv"].track(src, http_req=True)
            ctx = Context(src, src_port, host, dport, False, req.method, path,
                          query if "?" in req.target else None, req.target, req.headers,
                          [None, None, None if row is None else (tables["tv"], row)],
                          tables["f"], tables)
            ours = [render(e(ctx)) for e in exprs]
            if row is not None:
                tables["tv"].release(row)
            for e, a, b in zip(EXPRESSIONS, theirs, ours):
                if e == "sc_trackers(2)" and a.isdigit() and b.isdigit() and \
                        int(a) == int(b) + 1:
                    # HAProxy may release the previous connection's stream a moment after
                    # sending its last byte: that tracker can still count here
                    continue
                if a != b:
                    mismatches.append(f"{host} {raw.split(chr(13))[0]!r}: {e}: haproxy={a!r} "
                                      f"edgestick={b!r}")
    assert not mismatches, "\n".join(mismatches)


def test_conditions_agree_with_haproxy(haproxy):
    (port, port6), text = haproxy
    acls = {}
    for line in text.splitlines():
        words = split_words(line)
        if words and words[0] == "acl":
            acls.setdefault(words[1], Acl(words[1])).exprs.append(parse_acl_expr(words[2:]))
    conds = [compile_condition(("if",) + split_words(c), acls) for c in CONDITIONS]
    decl = "type ip size 1k expire 1m store http_req_cnt,http_req_rate(10s),conn_cur,conn_cnt," \
           "http_err_cnt".split()
    tables = {"f": StickTable.from_words("f", decl), "t": StickTable.from_words("t", decl),
              "t2": StickTable.from_words("t2", "type ip size 1k store http_req_cnt".split())}
    mismatches = []
    sends = [("127.0.0.1", port, raw) for raw in REQUESTS] + \
            [("::1", port6, raw) for raw in REQUESTS if port6]
    for n, (host, dport, raw) in enumerate(sends):
        theirs, (src, src_port) = ask(host, dport, raw)
        req = http1.parse_request(with_close(raw).encode())     # the bytes haproxy saw
        path, _, query = req.target.partition("?")
        row = tables["t"].track(src, http_req=True)      # http-request track-sc1 src table t
        sc1 = None if row is None else (tables["t"], row)
        ctx = Context(src, src_port, host, dport, False, req.method, path,
                      query if "?" in req.target else None, req.target, req.headers,
                      [None, sc1, None], tables["f"], tables)
        ours = [bool(c(ctx)) for c in conds]
        if row is not None:
            tables["t"].release(row)
        for i, (a, b) in enumerate(zip(theirs, ours)):
            if a != b:
                mismatches.append(f"request {n} from {src} {raw.split(chr(13))[0]!r}: {CONDITIONS[i]!r} "
                                  f"haproxy={a} edgestick={b}")
    assert not mismatches, "\n".join(mismatches)
