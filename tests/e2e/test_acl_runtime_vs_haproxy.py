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
