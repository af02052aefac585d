"""ACLs' runtime side compared with HAProxy 2.6: `show/get/add/del/clear acl` byte for byte
(entry pointers masked) on ACLs of every kind of pattern (`-f` files of addresses, paths,
regexes and integers, a file shared by two ACLs and by two match methods, inline
patterns, anonymous ACLs), and their effect on the next requests (blocked after `add acl`,
let through after `del acl` / `clear acl`)."""
import re
import socket

import pytest

from proxy_harness import Backends, both, raw_exchange, workdir

pytestmark = pytest.mark.haproxy

FILES = {
    "ips.lst": "198.18.0.0/24\n10.0.0.1\n# comment\n  fd00::/8\n127.0.9.0/255.255.0.255\n",
    "paths.lst": "/api\n/static\n\n",
    "re.lst": "^/user/[0-9]+$\n",
    "ints.lst": "5\n10:20\n",
}

CONFIG = """
global
    stats socket {SOCK} mode 600 level admin
    stats socket {SOCK}.user mode 600 level user
    nbthread 1

defaults
    mode http
    timeout connect 2s
    timeout client 5s
    timeout server 5s

frontend fe
    bind 127.0.0.1:{FE}
    acl blocked src -f {D}/ips.lst
    acl blocked_hdr req.hdr(x-ip) -f {D}/ips.lst 198.18.5.5
    acl p path_beg -f {D}/paths.lst
    acl pi path -i -f {D}/paths.lst
    acl r path_reg -f {D}/re.lst
    acl n req.hdr_cnt(x-n) -f {D}/ints.lst
    acl inl path /a /b
    acl m method GET
    http-request deny deny_status 403 if blocked
    http-request deny deny_status 401 if blocked_hdr
    http-request deny deny_status 429 if { path_end .php }
    http-request return status 200 content-type text/plain lf-string "p" if p
    http-request return status 201 content-type text/plain lf-string "pi" if pi
    http-request return status 202 content-type text/plain lf-string "r" if r
    http-request return status 203 content-type text/plain lf-string "n" if n
    http-request return status 204 if inl m
    http-request return status 299 content-type text/plain lf-string "none" if TRUE
"""

PTR = re.compile(rb"^0x[0-9a-f]+ ", re.M)
METH = re.compile(rb"type=unknown\(0x[0-9a-f]+\)")


def masked(reply: bytes, proxy) -> bytes:
    """Entry pointers, the address HAProxy prints for the method match, the config path."""
    reply = METH.sub(b"type=unknown(PTR)", PTR.sub(b"PTR ", reply))
    return reply.replace(proxy.cfg_path.encode(), b"CFG")


@pytest.fixture(scope="module")
def pair(haproxy_bin):
    b = Backends([]).start()
    try:
        with workdir() as wd:
            d = wd / "acl"
            d.mkdir()
            for name, text in FILES.items():
                (d / name).write_text(text)
            with both(CONFIG.replace("{D}", str(d)), b, wd, haproxy_bin) as (h, e):
                yield h, e, d
    finally:
        b.kill()


def cli_both(h, e, command: str, d) -> bytes:
    command = command.replace("{D}", str(d))
    theirs, ours = h.cli(command), e.cli(command)
    assert masked(ours, e) == masked(theirs, h), command
    return theirs


def status(p, path: str, headers: str) -> int:
    raw = f"GET {path} HTTP/1.1\r\nHost: x\r\n{headers}Connection: close\r\n\r\n".encode()
    return int(raw_exchange(p.port, raw).split(b"\r\n", 1)[0].split()[1])


def statuses(h, e, cases) -> list:
    got = []
    for path, headers in cases:
        theirs, ours = status(h, path, headers), status(e, path, headers)
        assert ours == theirs, (path, headers, ours, theirs)
        got.append(theirs)
    return got


CASES = [("/", ""), ("/", "x-ip: 198.18.0.7\r\n"), ("/", "x-ip: 198.18.9.9\r\n"),
         ("/", "x-ip: 198.18.5.5\r\n"), ("/", "x-ip: 127.0.0.1\r\n"), ("/api/x", ""),
         ("/API", ""), ("/New", ""), ("/user/42", ""), ("/a", ""), ("/c", ""),
         ("/", "x-n: 1\r\n" * 5), ("/", "x-n: 1\r\n" * 7), ("/x.php", "")]

READS = [
    "show acl", "show acl #0", "show acl {D}/ips.lst", "show acl #2", "show acl #3",
    "show acl #99", "show acl /nope", "show acl #zz",
    "get acl {D}/ips.lst 198.18.0.7", "get acl {D}/ips.lst ::ffff:198.18.0.3",
    "get acl {D}/ips.lst 127.0.5.3", "get acl {D}/ips.lst 1.2.3.4",
    "get acl {D}/ips.lst foo", "get acl {D}/paths.lst /api/x", "get acl {D}/paths.lst /API",
    "get acl {D}/ints.lst 15", "get acl {D}/ints.lst abc", "get acl {D}/re.lst /user/1",
    "get acl #2 198.18.5.5", "get acl #10 /a", "get acl #11 GET", "get acl #12 /x.php",
    "show acl #14", "get acl #14 0.0.0.0",
    "get acl", "get acl {D}/ips.lst", "get acl /nope x",
]


def test_cli_reads(pair):
    h, e, d = pair
    for cmd in READS:
        cli_both(h, e, cmd, d)


def test_cli_changes_seen_by_next_request(pair):
    h, e, d = pair
    before = statuses(h, e, CASES)
    steps = [
        "add acl {D}/ips.lst notanip", "add acl {D}/ips.lst 10", "add acl {D}/ips.lst 1.2.3.4/33",
        "add acl {D}/ips.lst 198.18.9.9", "add acl {D}/ints.lst abc", "add acl {D}/ints.lst 7",
        "add acl {D}/paths.lst /New", "add acl #10 /c", "add acl #2 127.0.0.1",
        "add acl /nope x", "add acl #99 x", "add acl", "add acl {D}/ips.lst",
        "add acl #10 x y", "show acl", "show acl {D}/paths.lst", "show acl #10",
        "get acl {D}/ips.lst 198.18.9.9", "get acl {D}/paths.lst /NEW",
    ]
    for cmd in steps:
        cli_both(h, e, cmd, d)
    for p in (h, e):        # PCRE and Python word the reason differently
        assert p.cli(f"add acl {d}/re.lst (").startswith(b"regex '(' is invalid (error=")
    after_add = statuses(h, e, CASES)
    assert after_add != before
    assert after_add[2] == 401 and after_add[4] == 401 and after_add[10] == 204
    steps = [
        "del acl {D}/ips.lst 198.18.9.9", "del acl {D}/ips.lst 198.18.9.9",
        "del acl {D}/ips.lst #0x1", "del acl {D}/ips.lst #zz", "del acl {D}/ips.lst",
        "del acl /nope x", "del acl #2 127.0.0.1", "show acl {D}/ips.lst", "show acl",
    ]
    for cmd in steps:
        cli_both(h, e, cmd, d)
    after_del = statuses(h, e, CASES)
    assert after_del[2] != 401 and after_del[4] != 401
    # an entry deleted through its pointer (each proxy its own)
    for p in (h, e):
        ptr = [ln.split()[0] for ln in p.cli(f"show acl {d}/paths.lst").decode().splitlines()
               if ln.endswith(" /api")][0]
        assert p.cli(f"del acl {d}/paths.lst #{ptr}") == b"\n"
    for cmd in ("clear acl {D}/ips.lst", "clear acl #10", "clear acl /nope", "clear acl",
                "show acl {D}/ips.lst", "show acl", "get acl {D}/ips.lst 198.18.0.7"):
        cli_both(h, e, cmd, d)
    after_clear = statuses(h, e, CASES)
    assert after_clear[1] != 401 and after_clear[9] != 204
    # every ACL command is open at level user (HAProxy 2.6)
    for cmd in ("add acl {D}/ips.lst 198.18.7.7", "show acl {D}/ips.lst",
                "get acl {D}/ips.lst 198.18.7.7", "del acl {D}/ips.lst 198.18.7.7",
                "clear acl #10"):
        c = cmd.replace("{D}", str(d))
        assert masked(cli_user(e, c), e) == masked(cli_user(h, c), h), c


def cli_user(p, command: str) -> bytes:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    with s:
        s.connect(p.sock + ".user")
        s.sendall(command.encode() + b"\n")
        out = b""
        while data := s.recv(65536):
            out += data
        return out


PAYLOADS = [
    b"add acl {D}/ips.lst <<\n198.18.7.1\n\n", b"add acl {D}/ips.lst x <<\n198.18.7.3\n\n",
    b"add acl #10 q <<\n/p1\n/p2\n\n", b"add acl #10 q <<\n/p3 x\n\n",
    b"show acl {D}/ips.lst\n", b"show acl #10\n",
]


def talk(path: str, data: bytes) -> bytes:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    with s:
        s.connect(path)
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        out = b""
        while data := s.recv(65536):
            out += data
        return out


def test_add_acl_payload(pair):
    """HAProxy 2.6's `add acl ACL PATTERN <<`: the pattern is the payload up to its
    first blank (newlines included); without PATTERN the command is refused."""
    h, e, d = pair
    for data in PAYLOADS:
        data = data.replace(b"{D}", str(d).encode())
        assert masked(talk(e.sock, data), e) == masked(talk(h.sock, data), h), data


ACTIONS = """
global
    stats socket {SOCK} mode 600 level admin

defaults
    mode http
    timeout connect 2s
    timeout client 5s
    timeout server 5s

frontend fe
    bind 127.0.0.1:{FE}
    http-request add-acl({D}/paths.lst) %[req.hdr(a)] if { req.hdr(a) -m found }
    http-request add-acl({D}/nofile.lst) %[req.hdr(a)] if { req.hdr(a) -m found }
    http-request add-acl({D}/ints.lst) %[req.hdr(a)] if { req.hdr(a) -m found }
    http-request del-acl({D}/paths.lst) %[req.hdr(d)] if { req.hdr(d) -m found }
    acl b path -f {D}/paths.lst
    acl i req.hdr_cnt(x) -f {D}/ints.lst
    http-response add-acl({D}/paths.lst) %[res.hdr(r)] if { res.hdr(r) -m found }
    http-request deny if b
    default_backend be

backend be
    server s1 127.0.0.1:{S1}
"""


def test_add_acl_del_acl_actions(haproxy_bin):
    """`http-request add-acl(FILE) KEY` / `del-acl(FILE) KEY` (and `http-response add-acl`)
    edit the reference the ACLs of that file read (named before or after the rule): the same request's later rules
    and the next requests see it; a file no ACL names is not listed; keys an ACL's
    method refuses are not added (HAProxy's counter still moves)."""
    b = Backends(["s1"]).start()
    try:
        with workdir() as wd:
            for name, text in FILES.items():
                (wd / name).write_text(text)
            with both(ACTIONS.replace("{D}", str(wd)), b, wd, haproxy_bin) as (h, e):
                cases = [("/x", ""), ("/zz", ""), ("/x", "a: /zz\r\n"), ("/zz", ""),
                         ("/x", "a: abc\r\n"), ("/zz", "a: /zz\r\n"), ("/zz", "d: /zz\r\n"),
                         ("/zz", ""), ("/api", ""), ("/api", "d: /api\r\n"), ("/api", ""),
                         ("/x", "a: 7\r\n"), ("/rr", ""), ("/x?hdr=r:%20/rr", ""), ("/rr", "")]
                got = statuses(h, e, cases)
                assert got[:4] == [200, 200, 200, 403] and got[6:8] == [200, 200], got
                assert got[-3:] == [200, 200, 403], got       # added by an http-response rule
                for cmd in ("show acl", "show acl {D}/paths.lst", "show acl {D}/ints.lst",
                            "show acl {D}/nofile.lst"):
                    cli_both(h, e, cmd, wd)
    finally:
        b.kill()


RULES = [
    ("http-request add-acl({D}/ips.lst)", "expects exactly 1 arguments."),
    ("http-request del-acl({D}/ips.lst)", "expects exactly 1 arguments."),
    ("http-request add-acl({D}/ips.lst) a b", "expects either 'if' or 'unless' followed by "
     "a condition but found 'b'."),
    ("http-request add-acl() a", None),
    ("http-request add-acl({D}/nofile.lst) x", None),
    ("http-response del-acl({D}/ips.lst) %[res.hdr(x)]", None),
    ("http-request add-acl({D}/ips.lst) %[req.hdr(x)] if { src 127.0.0.1 }", None),
    # (the wording of these two is the log-format's and the rule parser's: not compared)
    ("http-request add-acl({D}/ips.lst) %[req.hdr(x", "'http-request add-acl({D}/ips.lst)'"),
    ("tcp-request content add-acl({D}/ips.lst) x", "got 'add-acl({D}/ips.lst)'"),
]


@pytest.mark.parametrize("rule,message", RULES, ids=[r[0].split("(")[0] + str(i)
                                                     for i, r in enumerate(RULES)])
def test_action_check_verdicts(haproxy_bin, rule, message):
    """`-c` on add-acl/del-acl rules: both accept or both refuse with HAProxy's words."""
    import subprocess
    import sys
    with workdir() as d:
        (d / "ips.lst").write_text(FILES["ips.lst"])
        cfg = d / "t.cfg"
        cfg.write_text("defaults\n    mode http\n    timeout connect 1s\n    timeout client 1s\n"
                       "    timeout server 1s\nfrontend fe\n    bind 127.0.0.1:1\n"
                       f"    acl b src -f {d}/ips.lst\n    {rule.replace('{D}', str(d))}\n")
        for argv in ([haproxy_bin, "-c", "-f", str(cfg)],
                     [sys.executable, "-m", "edgestick", "proxy", "-c", "-f", str(cfg)]):
            r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
            out = r.stdout + r.stderr
            if message is None:
                assert r.returncode == 0, (argv[0], out)
            else:
                assert r.returncode != 0, (argv[0], out)
                assert message.replace("{D}", str(d)) in out, (argv[0], out)
                assert "t.cfg:9" in out.replace("[", "").replace(" ", ""), out


RELOAD = """
global
    stats socket {SOCK} mode 600 level admin

defaults
    mode http
    timeout connect 2s
    timeout client 5s
    timeout server 5s

frontend fe
    bind 127.0.0.1:{FE}
    http-request deny if { path -f {D}/p.lst }
    http-request return status 200
"""


def test_reload_reads_the_files_again():
    """A reload reads the ACL files again and forgets runtime changes; a reload that fails
    leaves the running patterns (and their runtime changes) as they were."""
    from proxy_harness import one_request, start_proxy
    b = Backends([])
    with workdir() as wd:
        (wd / "p.lst").write_text("/a\n")
        e = start_proxy("edgestick", RELOAD.replace("{D}", str(wd)), b, wd)
        try:
            assert e.cli(f"add acl {wd}/p.lst /c") == b"\n"
            assert [one_request(e.port, p).status for p in ("/a", "/b", "/c")] == [403, 200, 403]
            (wd / "p.lst").write_text("/b\n")
            assert e.cli("reload").startswith(b"Success=1")
            assert [one_request(e.port, p).status for p in ("/a", "/b", "/c")] == [200, 403, 200]
            assert e.cli(f"add acl {wd}/p.lst /d") == b"\n"
            before = e.cli("show acl")
            (wd / "p.lst").unlink()
            assert e.cli("reload").startswith(b"Reload failed")
            assert [one_request(e.port, p).status for p in ("/b", "/d", "/a")] == [403, 403, 200]
            assert e.cli("show acl") == before
            assert e.cli(f"show acl {wd}/p.lst").count(b"\n") == 3
        finally:
            e.stop()


# keywords followed by converters (HAProxy names some by their sample fetch then)
CHAINED = ["hdr(x),lower a", "hdr(x) a", "src,ipmask(24) 1.2.3.0", "hdr_cnt(x),add(1) 3",
           "cook(x),lower a", "cook(x) a", "url_param(x),lower a", "hdr_ip(x),ipmask(8) 10.0.0.0",
           "req.fhdr(x),lower a", "urlp(x),lower a", "sc0_http_req_rate,add(1) 1"]


def test_show_acl_of_many_conditions(haproxy_bin):
    """`show acl` ids, keywords and lines of the ~200 random conditions (named ACLs of
    several lines, anonymous ones, predefined ones, `!`, `or`) of test_acl_vs_haproxy."""
    from test_acl_vs_haproxy import haproxy_config
    template = ("global\n    stats socket {SOCK} mode 600 level admin\n"
                + haproxy_config(1, None).replace("127.0.0.1:1\n", "127.0.0.1:{FE}\n")
                + "frontend fe2\n    bind 127.0.0.1:{FE2}\n" + "".join(
                    f"    http-request deny if {{ {c} }}\n" for c in CHAINED))
    b = Backends([])
    with workdir() as wd:
        with both(template, b, wd, haproxy_bin, n_frontends=2) as (h, e):
            theirs = cli_both(h, e, "show acl", wd)
            assert theirs.count(b"\n") > 100
            for uid in (0, 5, 50):
                cli_both(h, e, f"show acl #{uid}", wd)
