"""Maps compared with HAProxy 2.6: the map converters (every match type, the output types,
defaults) on the same requests, backends chosen through a map, the map CLI commands
(`show/get/add/set/del/clear map`) byte for byte with entry pointers masked, changes made
through the CLI seen by the next request, and the configuration errors of `-c`."""
import copy
import re
import socket
import subprocess
import sys

import pytest

from proxy_harness import (Backends, Client, both, mask_table, one_request, raw_exchange,
                           start_proxy, workdir)

pytestmark = pytest.mark.haproxy

# map files: comments only in column 1, indented '#' keys, blank lines, tabs, CRLF,
# trailing blanks, a key without value, duplicate keys, regexes, ranges, IPv4/IPv6 nets
MAPS = {
    "hosts.map": "# host -> backend\nwww.example.com be_static\napi.example.com\tbe_api\n\n"
                 "  static.example.com   be_static   \nAPI.example.com be_static\n",
    "paths.map": "/api be_api\n/api/v2 be_v2\n/api/v2/admin be_admin\n/a be_a\n"
                 "/dup first\n/dup second\n\t #hash hashval\nkeyonly\n/crlf crlfval\r\n",
    "words.map": "/api sub_api\nstatic sub_static\n/dup first\n/dup second\nexample.com dom_ex\n"
                 "/v1/ v1\n.org. org\n",
    "ends.map": ".jpg image\n.png image\n/v2 end_v2\n",
    "regex.map": "^/user/([0-9]+)$ user-\\1\n^/img/(.*)\\.(png|jpg)$ \\2:\\1\n^/api api\n",
    "limits.map": "5 five\n1:10 low\n20-30 mid\n100 hundred\n5 fiveagain\n",
    "tiers.map": "127.0.0.0/8 internal\n127.0.0.2 vip\n127.0.9.0/255.255.0.255 masked\n"
                 "::ffff:10.0.0.0/104 mapped\nfd00::/8 v6\nfd00:1::/32 v6one\n"
                 "2002:0a00::/24 sixto4\n::1 lo6\n",
    "ints.map": "a 1\nb -2\nb 3\n",
    "ips.map": "a 198.18.0.1\nb fd00::1\n",
    "intip.map": "1:9 198.18.0.9\n10 fd00::a\n",
    "short.map": "10.1 x\n",                   # HAProxy's maps refuse short IPv4 forms
    "list.acl": "/api\n/static\n",   # ACL files and expressions take reference ids too
}

DEFAULTS = """
defaults
    mode http
    timeout connect 2s
    timeout client 5s
    timeout server 5s
"""

CONFIG = """
global
    stats socket {SOCK} mode 600 level admin
    stats socket {SOCK}.user mode 600 level user
    nbthread 1
""" + DEFAULTS + """
frontend fe
    bind 127.0.0.1:{FE}
    acl from_file path -f {D}/list.acl
    http-request set-header X-Pre 1 if TRUE
    http-request set-header X-Pre 2 if TRUE METH_GET
    http-request set-header X-Tier %[src,map_ip({D}/tiers.map,free)]
    http-request return status 200 content-type text/plain lf-string "str=%[req.hdr(k),map_str({D}/paths.map,none)] map=%[req.hdr(k),map({D}/paths.map)] beg=%[req.hdr(k),map_beg({D}/paths.map,none)] sub=%[req.hdr(k),map_sub({D}/words.map,none)] dir=%[req.hdr(k),map_dir({D}/words.map,none)] dom=%[req.hdr(k),map_dom({D}/words.map,none)] end=%[req.hdr(k),map_end({D}/ends.map,none)] reg=%[req.hdr(k),map_reg({D}/regex.map,none)] regm=%[req.hdr(k),map_regm({D}/regex.map,none)] int=%[req.hdr(k),map_int({D}/limits.map,none)] ip=%[req.hdr(k),map_ip({D}/tiers.map,none)] sint=%[req.hdr(k),map_str_int({D}/ints.map,7)] sip=%[req.hdr(k),map_str_ip({D}/ips.map,0.0.0.1)] begint=%[req.hdr(k),map_beg_int({D}/ints.map)] tier=%[req.hdr(x-tier)] n=%[req.hdr(k),map_str_int({D}/ints.map,7),add(1)] cnt=%[req.hdr_cnt(k),map_int({D}/limits.map,none)] iip=%[req.hdr_cnt(k),map_ip({D}/tiers.map,none)] hdom=%[req.hdr(host),map_dom({D}/words.map,none)] intip=%[req.hdr(k),map_int_ip({D}/intip.map,::)]\\n" if { path /show }
    http-request return status 403 content-type text/plain lf-string "int acl\\n" if { path /acl } { req.hdr(k),map_str_int({D}/ints.map,0) -m int gt 2 }
    http-request deny deny_status 429 if { req.hdr(k),map_int({D}/limits.map) -m str low }
    use_backend be_api if { req.hdr(host),lower,map({D}/hosts.map,be_default) -m str be_api }
    use_backend be_static if { req.hdr(host),lower,map({D}/hosts.map,be_default) be_static }
    default_backend be_default

backend be_api
    server s1 127.0.0.1:{S1}

backend be_static
    server s2 127.0.0.1:{S2}

backend be_default
    server s3 127.0.0.1:{S3}
"""

KEYS = [
    "/api", "/api/v2/x", "/api/v2/admin/y", "/a", "/ab", "/dup", "#hash", "keyonly",
    "/keyonly", "/crlf", "", "x/api/y", "/static/x", "www.example.com", "x.example.com.y",
    "/img/cat.png", "/user/42", "/user/x", "/pic.jpg", "/v2", "/api/v2",
    "5", "7", "25", "100", "-3", "abc", "10.1.2.3",
    "127.0.0.2", "127.0.9.3", "127.5.6.7", "10.9.8.7", "::ffff:127.0.0.2", "fd00:1::5",
    "fd00:2::5", "2002:0a01:0203::1", "::1", "::127.0.0.2", "192.0.2.1",
    "a", "b", "c", "www.example.com:8080", "/x/static?q", "static", "/v1", "/a/v1/b",
    "/a/v1x", "a.org", "x.org.uk", "/static", "Static",
]

PTR = re.compile(rb"^0x[0-9a-f]+ ", re.M)


def masked(reply: bytes, proxy) -> bytes:
    """Entry pointers (HAProxy prints addresses) and each proxy's own config path."""
    return PTR.sub(b"PTR ", reply).replace(proxy.cfg_path.encode(), b"CFG")


@pytest.fixture(scope="module")
def pair(haproxy_bin):
    b = Backends(["s1", "s2", "s3"]).start()
    try:
        with workdir() as wd:
            d = wd / "maps"
            d.mkdir()
            for name, text in MAPS.items():
                (d / name).write_bytes(text.encode())
            with both(CONFIG.replace("{D}", str(d)), b, wd, haproxy_bin) as (h, e):
                yield h, e, d
    finally:
        b.kill()


def show(p, key: str, src: str = "127.0.0.1") -> bytes:
    c = Client(p.port, src)
    try:
        r = c.request("/show", headers=[("k", key)], close=True)
        return r.raw_head.split(b"\r\n", 1)[0] + b"\n" + r.body
    finally:
        c.close()


def cli_both(h, e, command: str) -> bytes:
    theirs, ours = h.cli(command), e.cli(command)
    assert masked(ours, e) == masked(theirs, h), command
    return theirs


def test_converters_match_haproxy(pair):
    h, e, _ = pair
    for key in KEYS:
        assert show(e, key) == show(h, key), key
    for src in ("127.0.0.2", "127.0.9.3", "127.1.1.1"):
        assert show(e, "", src) == show(h, "", src), src
    for k in ("a", "b", "z"):                # a map's integer output in an ACL
        raw = f"GET /acl HTTP/1.1\r\nHost: x\r\nk: {k}\r\nConnection: close\r\n\r\n".encode()
        theirs, ours = raw_exchange(h.port, raw), raw_exchange(e.port, raw)
        assert ours.split(b"\r\n")[0] == theirs.split(b"\r\n")[0], k


def request(p, headers: str) -> tuple:
    """(status, server) of one GET / with these header lines."""
    c = Client(p.port)
    try:
        c.send(f"GET / HTTP/1.1\r\n{headers}\r\nConnection: close\r\n\r\n".encode())
        r = c.read_response()
    finally:
        c.close()
    return r.status, r.server


def test_backend_chosen_by_map(pair):
    h, e, _ = pair
    for host in ("www.example.com", "API.EXAMPLE.COM", "static.example.com", "nowhere",
                 "api.example.com"):
        assert request(e, f"Host: {host}") == request(h, f"Host: {host}"), host
    # a condition reading a map: 429 for the "low" range, else the backend
    for k in ("3", "25"):
        raw = f"GET / HTTP/1.1\r\nHost: x\r\nk: {k}\r\nConnection: close\r\n\r\n".encode()
        theirs, ours = raw_exchange(h.port, raw), raw_exchange(e.port, raw)
        assert ours.split(b"\r\n")[0] == theirs.split(b"\r\n")[0], k


CLI_READS = [
    "show map", "show map #1", "show map #4", "show map #0", "show map #99", "show map /nope",
    "get map {D}/paths.map /api/v2/x", "get map {D}/paths.map /zzz",
    "get map {D}/paths.map /dup", "get map {D}/words.map x/api/y",
    "get map {D}/tiers.map 127.0.0.2", "get map {D}/tiers.map 127.0.9.3",
    "get map {D}/tiers.map foo", "get map {D}/limits.map 5", "get map {D}/limits.map abc",
    "get map {D}/ints.map b", "get map {D}/ips.map b", "get map {D}/regex.map /user/42",
    "get map {D}/paths.map", "get map", "show map {D}/limits.map", "show map {D}/paths.map",
]


def test_cli_reads(pair):
    h, e, d = pair
    for cmd in CLI_READS:
        cli_both(h, e, cmd.replace("{D}", str(d)))


def test_cli_changes_seen_by_next_request(pair):
    h, e, d = pair
    steps = [
        "add map {D}/paths.map /new newval", "add map {D}/paths.map /new2",
        "add map {D}/paths.map", "add map {D}/tiers.map notip x", "add map {D}/limits.map 7x x",
        "add map {D}/ints.map c notint",
        "add map {D}/ints.map c 12", "add map /nope x y",
        "set map {D}/paths.map /dup changed", "set map {D}/paths.map /missing x",
        "set map {D}/paths.map /dup", "set map {D}/paths.map #zz x",
        "set map {D}/paths.map #0x1 x", "set map {D}/ints.map a notint",
        "del map {D}/paths.map /api", "del map {D}/paths.map /missing",
        "del map {D}/paths.map", "del map {D}/paths.map #0x1", "del map /nope x",
        "add map {D}/tiers.map 127.0.0.0/24 loopnet", "del map {D}/limits.map 5",
        "show map", "show map {D}/paths.map", "get map {D}/paths.map /dup",
        "get map {D}/paths.map /api/v2/x",
    ]
    for cmd in steps:
        cli_both(h, e, cmd.replace("{D}", str(d)))
    # PCRE and Python word the reason differently; the rest is HAProxy's
    for p in (h, e):
        assert p.cli(f"add map {d}/regex.map ( x").startswith(b"regex '(' is invalid (error=")
    for key in ("/new", "/dup", "/api", "/api/v2/x", "c", "a", "5", "127.0.0.3", "127.0.0.2"):
        assert show(e, key) == show(h, key), key
    assert b"beg=newval" in show(e, "/new")
    # an entry changed through its pointer (each proxy its own)
    for p in (h, e):
        ptr = [ln.split()[0] for ln in p.cli(f"show map {d}/paths.map").decode().splitlines()
               if ln.endswith(" be_v2")][0]
        assert p.cli(f"set map {d}/paths.map #{ptr} v2new") == b"\n"
    assert show(e, "/api/v2/x") == show(h, "/api/v2/x")
    assert b"beg=v2new" in show(e, "/api/v2/x")
    for cmd in ("clear map {D}/paths.map", "show map {D}/paths.map", "clear map /nope",
                "clear map", "show map"):
        cli_both(h, e, cmd.replace("{D}", str(d)))
    assert show(e, "/api") == show(h, "/api")
    # every map command is open at level user (HAProxy 2.6)
    for cmd in ("add map {D}/hosts.map nowhere be_api", "show map {D}/hosts.map",
                "get map {D}/hosts.map nowhere"):
        c = cmd.replace("{D}", str(d))
        assert masked(cli_user(e, c), e) == masked(cli_user(h, c), h), c


PAYLOADS = [
    b"add map {D}/paths.map <<\n/q1 v1\nbad\n/q2 v2\n\n", b"show map {D}/paths.map\n",
    b"add map {D}/paths.map <<\n/q3   v3  \n\t/q4\tv4\n\n",
    b"add map {D}/tiers.map <<\n198.18.1.1 a\nzz b\n198.18.2.2 c\n\n", b"show map {D}/tiers.map\n",
    b"add map {D}/paths.map /k v <<\n/q5 v5\n\n", b"show cli level <<\nx\n\nshow cli level\n",
    b"add map {D}/paths.map <<\n/q6 v6\n\nshow map {D}/paths.map\n",
    b"add map {D}/paths.map <<\n\n", b"add map {D}/paths.map <<\nlast\n\n",
    b"add map {D}/paths.map <<\n/q7 v7\n", b"add map /nope <<\na b\n\n", b"add map <<\na b\n\n",
    b"add map {D}/paths.map <<\r\n/q8 v8\r\n\r\n", b"show map {D}/paths.map\n", b"show map\n",
]


def talk(path: str, data: bytes) -> bytes:
    """Raw bytes to a stats socket, its whole reply."""
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


def test_add_map_payload(pair):
    """`add map MAP <<` then `key value` lines up to an empty one, read as HAProxy reads
    them (keys run to the first blank, newlines included; entries before a refused one
    stay; a payload cut by the end of the connection runs nothing)."""
    h, e, d = pair
    for data in PAYLOADS:
        data = data.replace(b"{D}", str(d).encode())
        assert masked(talk(e.sock, data), e) == masked(talk(h.sock, data), h), data
    assert show(e, "/q6") == show(h, "/q6")


def cli_user(p, command: str) -> bytes:
    """One command on the proxy's level-user socket."""
    user = copy.copy(p)
    user.sock = p.sock + ".user"
    return user.cli(command)


KEYS_CONFIG = """
global
    stats socket {SOCK} mode 600 level admin
""" + DEFAULTS + """
frontend fe
    bind 127.0.0.1:{FE}
    stick-table type string len 32 size 10 store http_req_cnt
    http-request track-sc0 req.hdr(k),map({D}/paths.map,zz)
    http-request set-header x-a %[req.hdr(k),map_beg({D}/paths.map,zz)]
    acl a1 req.hdr(k),map_sub({D}/words.map) -m found
    http-request deny if a1 !{ path /x } { req.hdr(k),map_end({D}/ends.map) -m found }
    use_backend be_api if { req.hdr(host),map({D}/hosts.map) -m str be_api }
    default_backend be_default

backend be_api
    http-request set-header x-b %[req.hdr(k),map_sub({D}/words.map,zz)]
    server s1 127.0.0.1:{S1}

backend be_default
    stick-table type string len 32 size 10 store http_req_cnt
    stick on req.hdr(k),map_end({D}/ends.map,zz)
    server s3 127.0.0.1:{S3}
"""


def test_maps_in_tracking_sticking_and_backend_rules(haproxy_bin):
    """Maps giving track-sc and stick keys, in named and anonymous ACLs, in a backend's
    rules: the same tables, statuses and `show map` (users, ids) as HAProxy."""
    b = Backends(["s1", "s3"]).start()
    try:
        with workdir() as wd:
            for fname, text in MAPS.items():
                (wd / fname).write_bytes(text.encode())
            with both(KEYS_CONFIG.replace("{D}", str(wd)), b, wd, haproxy_bin) as (h, e):
                for k, host in (("/api", "x"), ("/api/v2", "api.example.com"), ("/dup", "x"),
                                ("a.jpg", "x"), ("static", "api.example.com"),
                                ("static.jpg", "x")):
                    got = [request(p, f"Host: {host}\r\nk: {k}") for p in (h, e)]
                    assert got[0] == got[1], k
                    assert got[0][0] in (200, 403), got
                assert masked(e.cli("show map"), e) == masked(h.cli("show map"), h)
                for table in ("fe", "be_default"):
                    cmd = f"show table {table}"
                    dump = mask_table(h.cli(cmd))
                    assert mask_table(e.cli(cmd)) == dump, cmd
                    assert sum("key=" in line for line in dump) >= 2, dump
    finally:
        b.kill()


RELOAD = """
global
    stats socket {SOCK} mode 600 level admin
""" + DEFAULTS + """
frontend fe
    bind 127.0.0.1:{FE}
    http-request return status 200 content-type text/plain lf-string "v=%[path,map({D}/p.map,none)]"
"""


def test_reload_reads_the_file_again(haproxy_bin):
    """A reload reads the map files again and forgets runtime changes: edgestick after
    `reload` answers as a HAProxy started on the edited file. A failed reload changes
    nothing."""
    b = Backends([])
    with workdir() as wd:
        (wd / "p.map").write_text("/a one\n/b two\n")
        template = RELOAD.replace("{D}", str(wd))
        e = start_proxy("edgestick", template, b, wd)
        try:
            assert e.cli(f"add map {wd}/p.map /c cli") == b"\n"
            assert one_request(e.port, "/c").body == b"v=cli"
            (wd / "p.map").write_text("/a new\n")
            assert e.cli("reload").startswith(b"Success=1")
            h = start_proxy("haproxy", template, b, wd, haproxy_bin=haproxy_bin)
            try:
                for path in ("/a", "/b", "/c"):
                    assert one_request(e.port, path).body == one_request(h.port, path).body
                for cmd in ("show map", f"show map {wd}/p.map"):
                    assert masked(e.cli(cmd), e) == masked(h.cli(cmd), h), cmd
            finally:
                h.stop()
            # a reload that fails (the file is gone) leaves the running map as it was
            before = e.cli("show map")
            (wd / "p.map").unlink()
            assert e.cli("reload").startswith(b"Reload failed")
            assert one_request(e.port, "/a").body == b"v=new"
            assert e.cli("show map") == before
        finally:
            e.stop()


BAD = [
    ("missing file", "http-request set-header x %[req.hdr(k),map({D}/nofile.map,x)]",
     "invalid args in converter 'map' : failed to open pattern file <{D}/nofile.map>"),
    ("no file", "use_backend %[req.hdr(host),map]",
     "invalid args in converter 'map' : failed to open pattern file <>"),
    ("int key", "http-request set-header x %[req.hdr(k),map_int({D}/ints.map,x)]",
     "invalid args in converter 'map_int' : 'a' is not a number at line 1 of file "
     "'{D}/ints.map'"),
    ("ip key", "http-request set-header x %[req.hdr(k),map_ip({D}/ints.map,x)]",
     "invalid args in converter 'map_ip' : 'a' is not a valid IPv4 or IPv6 address at line 1 "
     "of file '{D}/ints.map'"),
    ("short ip key", "http-request set-header x %[src,map_ip({D}/short.map,x)]",
     "invalid args in converter 'map_ip' : '10.1' is not a valid IPv4 or IPv6 address at line 1 "
     "of file '{D}/short.map'"),
    ("int value", "http-request set-header x %[req.hdr(k),map_str_int({D}/paths.map,1)]",
     "invalid args in converter 'map_str_int' : unable to parse 'be_api' at line 1 of file "
     "'{D}/paths.map'"),
    ("int default", "http-request set-header x %[req.hdr(k),map_str_int({D}/ints.map,abc)]",
     "invalid arg 2 in converter 'map_str_int' : failed to parse 'abc' as type 'integer' at "
     "position 2"),
    ("ip default", "http-request set-header x %[req.hdr(k),map_str_ip({D}/ips.map,zz)]",
     "invalid args in converter 'map_str_ip' : map: cannot parse default ip <zz>."),
    ("map file named by an ACL", "acl a path -f {D}/ints.map\n    http-request set-header x "
     "%[req.hdr(k),map({D}/ints.map)]", 'The file "{D}/ints.map" is already used as one column '
     "file and cannot be used by as two column file."),
    ("condition", "http-request deny if { req.hdr(k),map({D}/nofile.map) -m found }",
     "invalid args in converter 'map' : failed to open pattern file <{D}/nofile.map>"),
]


@pytest.mark.parametrize("name,rule,message", BAD, ids=[b[0] for b in BAD])
def test_config_errors_as_haproxy(haproxy_bin, name, rule, message):
    with workdir() as d:
        for fname, text in MAPS.items():
            (d / fname).write_text(text)
        cfg = d / "t.cfg"
        cfg.write_text("defaults\n    mode http\n    timeout connect 1s\n    timeout client 1s\n"
                       "    timeout server 1s\nfrontend fe\n    bind 127.0.0.1:1\n"
                       f"    {rule.replace('{D}', str(d))}\n")
        message = message.replace("{D}", str(d))
        outs = []
        for argv in ([haproxy_bin, "-c", "-f", str(cfg)],
                     [sys.executable, "-m", "edgestick", "proxy", "-c", "-f",
                      str(cfg)]):
            r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
            assert r.returncode != 0, (argv[0], r.stdout + r.stderr)
            outs.append(r.stdout + r.stderr)
        for out in outs:
            assert message in out, out
            line = 8 + rule.count("\n")             # the rule's last line
            assert f"t.cfg:{line}" in out.replace("[", "").replace(" ", ""), out
