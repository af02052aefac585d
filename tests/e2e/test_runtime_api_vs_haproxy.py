"""edgestick's runtime API against a live HAProxy 2.6 with the same stick tables: the
same `set/show/clear table` sequences and error cases go to both stats sockets and the
replies must be the same bytes (entry pointers masked, exp= within a tolerance).

HAProxy serves many more commands than edgestick, so `help` and unknown-command
replies are compared through the suggestion algorithm: edgestick's registry loaded with
HAProxy's own command list (read from its `help`) must produce HAProxy's reply."""
import os
import socket
import subprocess
import threading
import time

import asyncio
import pytest

import haproxy_transcripts as tr
from edgestick.proxy.runtime_api import CommandRegistry, RuntimeAPI, split_args
from edgestick.proxy.stick_table import StickTable, parse_table_args

CONFIG = """\
global
    stats socket {dir}/admin.sock mode 600 level admin
    stats socket {dir}/user.sock mode 660 level user
    stats socket {dir}/oper.sock mode 600 level operator

backend t_ip
    stick-table type ip size 1k expire 10m store gpc0,gpc0_rate(10s),conn_cnt,http_req_rate(10s),server_id,bytes_in_cnt,gpt0
backend t_str
    stick-table type string len 8 size 16 expire 1h store gpc(3),gpc_rate(2,1m),gpt(2)
backend t_str32
    stick-table type string size 16 store gpc0
backend t_int
    stick-table type integer size 16 store gpc0
backend t_v6
    stick-table type ipv6 size 2m expire 1h store conn_cur,http_err_rate(1m)
backend t_bin
    stick-table type binary len 6 size 16 store gpc0
backend t_full
    stick-table type ip size 3 expire 1h nopurge store gpc0
backend t_evict
    stick-table type ip size 3 store gpc0
backend t_bare
    stick-table type ip size 200k expire 30m
backend t_stick
    stick-table type ip size 10 expire 30m srvkey addr
    stick on src
    server s1 127.0.0.1:9
"""

SEQUENCE = """\
show table
set table t_ip key 10.0.0.1 data.gpc0 5 data.conn_cnt 3 data.http_req_rate 7 data.server_id -2
set table t_ip key 10.0.0.2 data.gpc0 1 data.bytes_in_cnt 99999999999 data.gpt0 4294967297
set table t_ip key 9.9.9.9
set table t_ip key foo data.gpc0 9
set table t_ip key 1.2.3 data.gpc0 2
set table t_ip key 1.2.3.999 data.gpc0 3
set table t_ip key 300.1.1.1234 data.gpc0 4
set table t_ip key 10.0.0.3 data.gpc0_rate 17 data.gpc0 1 data.nosuch 1
show table t_ip
show table t_ip data.gpc0 gt 1
show table t_ip data.gpc0 ge 1 data.conn_cnt eq 3
show table t_ip data.http_req_rate eq 7
show table t_ip data.server_id lt 0
show table t_ip data.gpc0 ne 5 data.gpc0 ne 1 data.gpc0 ne 9 data.gpc0 le 100
show table t_ip key 10.0.0.1
show table t_ip key 10.0.0.99
show table t_ip key 10.0.0.1 extra words
clear table t_ip key 9.9.9.9
clear table t_ip key 9.9.9.9
clear table t_ip data.gpc0 lt 2
show table t_ip
set table t_str key a\\ b data.gpc 3
set table t_str key x=y\\\\z data.gpt 7
set table t_str key abcdefghijkl data.gpc_rate 4
set table t_str key abcdefgh data.gpc 5
set table t_str key B
set table t_str key tab\\tx
set table t_str key a data.gpc0 1
show table t_str
show table t_str data.gpc eq 5
show table t_str data.gpc_rate gt 0
show table t_str key abcdefghZZZ
set table t_str32 key abcdefghijklmnopqrstuvwxyz0123456789ABCDEF data.gpc0 1
show table t_str32
set table t_int key 65536 data.gpc0 1
set table t_int key 256 data.gpc0 2
set table t_int key 1 data.gpc0 3
set table t_int key 4294967295 data.gpc0 4
set table t_int key 12abc data.gpc0 5
set table t_int key 007 data.gpc0 6
set table t_int key -0 data.gpc0 7
set table t_int key +9 data.gpc0 8
show table t_int
show table t_int key 4294967296
show table t_int key -1
show table t_int key abc
show table t_int key 12
set table t_v6 key ::ffff:1.2.3.4 data.http_err_rate 3
set table t_v6 key fe80::1 data.conn_cur 2
set table t_v6 key 2001:db8:0:0:0:0:0:1
show table t_v6
show table t_v6 key fe80::1
show table t_v6 key zzz
clear table t_v6 key fe80::0:1
show table t_v6
show table t_bin
show table t_bin key 00
clear table t_bin key 00
set table t_bin key 00
show table t_bin data.gpc0 eq 0
clear table t_bin data.gpc0 eq 0
show table t_bare
set table t_bare key 10.1.1.1
set table t_bare key 10.1.1.1 data.server_id 1
set table t_bare key 10.1.1.1 data.gpc0 1
show table t_bare
set table t_stick key 10.2.2.2 data.server_key 5 data.server_id 3
set table t_stick key 10.2.2.3 data.server_name 5
show table t_stick
show table t_stick data.server_key eq 0
show table t_stick data.server_name gt 0
show table nosuch
clear table nosuch key 1.2.3.4
set table nosuch key 1.2.3.4
show table t_ip key
set table t_ip key
clear table t_ip key
show table t_ip foo
show table t_ip data.foo eq 1
show table t_ip data.bytes_out_cnt eq 1
show table t_ip data.gpc0 xx 1
show table t_ip data.gpc0 eq abc
show table t_ip data.gpc0 eq
show table t_ip data.gpc0 eq +1
show table t_ip data.gpc0 eq 1a
show table t_ip data.gpc0 eq 99999999999999999999
show table t_ip data.gpc0 eq -1
show table t_ip data.gpc0 eq 1 data.gpc0 eq 1 data.gpc0 eq 1 data.gpc0 eq 1 data.gpc0 eq 1
show table t_ip data.gpc0 eq 1 junk
show table t_ip data.gpc0 eq 0 data.server_id
show table t_ip data.gpc0 eq 0 data.server_id eq
show table t_ip data.server_name eq 0
clear table
clear table t_ip foo
set table
set table t_ip data.gpc0 1
set table t_ip key 1.2.3.4 data.bytes_out_cnt 5
set table t_ip key 1.2.3.4 data.foo 5
set table t_ip key 1.2.3.4 data.gpc0 abc
set table t_ip key 1.2.3.4 data.gpc0
set table t_ip key 1.2.3.4 data.gpc0 +5
set table t_ip key 1.2.3.4 gpc0 1
set table t_ip key 1.2.3.5 data.gpc0 1 data.gpc0
show table t_ip
set table t_ip
show table t_ip
show cli level
show cli level;show table t_int key 1;show table nosuch
show tables
SHOW TABLE
show table
"""

# commands whose replies depend on when they run: ~50 ms apart on both sides
TIMED = """\
set table t_full key 10.0.0.1 data.gpc0 1
set table t_full key 10.0.0.2 data.gpc0 2
set table t_full key 10.0.0.3 data.gpc0 3
set table t_full key 10.0.0.1 data.gpc0 11
set table t_full key 10.0.0.4 data.gpc0 4
show table t_full
set table t_evict key 10.0.0.1 data.gpc0 1
set table t_evict key 10.0.0.2 data.gpc0 2
set table t_evict key 10.0.0.3 data.gpc0 3
set table t_evict key 10.0.0.1 data.gpc0 11
set table t_evict key 10.0.0.4 data.gpc0 4
show table t_evict
set table t_evict key 10.0.0.5 data.gpc0 5
show table t_evict
"""

USER_SEQUENCE = """\
show table
show table t_ip
show table t_ip data.gpc0 ge 0
show table t_ip key 10.0.0.1
show table t_ip key
show table t_int key abc
show table t_bin key 00
set table t_ip key 10.0.0.7 data.gpc0 1
set table t_ip data.gpc0 1
clear table t_ip key 10.0.0.1
clear table t_ip
set table t_ip
show table t_ip foo
show cli level
operator
user
show cli level
"""

RAW_EXCHANGES = [
    b"prompt\nshow cli level\nshow table t_int key 1\nshow tables\nquit\n",
    b"prompt;show cli level\n",
    b"show cli level\nshow cli level\n",
    b"show cli level;quit;show cli level\n",
    b"quit\n",
    b"show cli level",
    b"show cli level\r\n",
    b"user;show cli level;show table t_int key 1;operator\n",
    b"show table t_int key 1;show cli level\n",
    b"show table t_ip key 1.2.3.4\\;\n",
    b"  show\ttable   t_int  \n",
]

# Inputs whose best suggestions have no tie at the cut-off: on ties HAProxy keeps the
# command registered first, and its internal registration order is not visible in `help`.
UNKNOWN = ["foo", "show", "table", "show tabl", "clear", "help", "help show", "help table",
           "help foo", "help show table foo", "", "SHOW TABLE", "shwo table", "stat",
           "show stats", "enable srv", "show servers", "clear tables x", "set", "get",
           "disable", "add", "show ssl"]


def talk(path, data: bytes, timeout=5.0) -> bytes:
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(timeout)
    with s:
        s.connect(path)
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        out = b""
        while True:
            d = s.recv(65536)
            if not d:
                return out
            out += d


def cmd_bytes(line: str) -> bytes:
    return line.encode("latin-1") + b"\n"


@pytest.fixture(scope="module")
def both(tmp_path_factory, haproxy_bin):
    d = tmp_path_factory.mktemp("rtapi")
    hdir, edir = d / "haproxy", d / "edgestick"
    hdir.mkdir()
    edir.mkdir()
    cfg_text = CONFIG.format(dir=hdir)
    (d / "haproxy.cfg").write_text(cfg_text)
    proc = subprocess.Popen([haproxy_bin, "-db", "-f", str(d / "haproxy.cfg")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    tables = []
    for name, words, sticky in tr.stick_tables(cfg_text):
        tables.append(StickTable(name, parse_table_args(words)[0]))
        if sticky:
            tables[-1].ensure_data_types("server_id", "server_key")
    api = RuntimeAPI(lambda: tables)

    async def listen():
        await api.listen(str(edir / "admin.sock"), mode=0o600, level="admin")
        await api.listen(str(edir / "user.sock"), mode=0o660, level="user")
        await api.listen(str(edir / "oper.sock"), mode=0o600, level="operator")
    try:
        asyncio.run_coroutine_threadsafe(listen(), loop).result(10)
        deadline = time.monotonic() + 10
        while not os.path.exists(hdir / "oper.sock"):
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "haproxy did not open its stats sockets"
            time.sleep(0.02)
        yield {"haproxy": hdir, "edgestick": edir}
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        asyncio.run_coroutine_threadsafe(api.close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


def compare(both, sock: str, request: bytes, tolerance_ms: int = 3000):
    theirs = talk(str(both["haproxy"] / sock), request)
    ours = talk(str(both["edgestick"] / sock), request)
    assert tr.mask(ours) == tr.mask(theirs), request
    a, b = tr.exps(ours), tr.exps(theirs)
    assert len(a) == len(b) and all(abs(x - y) <= tolerance_ms for x, y in zip(a, b)), request
    return theirs


def test_socket_permissions(both):
    for sock, mode in (("admin.sock", 0o600), ("user.sock", 0o660), ("oper.sock", 0o600)):
        assert (os.stat(both["haproxy"] / sock).st_mode & 0o777) == mode
        assert (os.stat(both["edgestick"] / sock).st_mode & 0o777) == mode


def test_table_commands_and_errors(both):
    for line in SEQUENCE.splitlines():
        compare(both, "admin.sock", cmd_bytes(line))


def test_eviction_and_nopurge(both):
    for line in TIMED.splitlines():
        compare(both, "admin.sock", cmd_bytes(line))
        time.sleep(0.05)


def test_levels(both):
    compare(both, "admin.sock", b"set table t_ip key 10.0.0.1 data.gpc0 5\n")
    for line in USER_SEQUENCE.splitlines():
        compare(both, "user.sock", cmd_bytes(line))
    for line in ("show table t_ip", "show table t_ip key 10.0.0.1", "show cli level",
                 "user", "operator", "set table t_ip key 10.0.0.8 data.gpc0 2",
                 "clear table t_ip key 10.0.0.8"):
        compare(both, "oper.sock", cmd_bytes(line))


def test_connection_modes(both):
    compare(both, "admin.sock", b"set table t_int key 1 data.gpc0 1\n")
    for raw in RAW_EXCHANGES:
        compare(both, "admin.sock", raw)


def test_suggestions_match_haproxy_on_its_own_command_list(both):
    """Load HAProxy's command list (from its `help`) into edgestick's registry: the
    fuzzy suggestions and help listings must then be HAProxy's bytes."""
    help_text = talk(str(both["haproxy"] / "admin.sock"), b"help\n").decode()
    reg = CommandRegistry()
    for line in help_text.splitlines()[1:]:
        if not line.startswith("  ") or line[2:].split()[0] in ("help", "prompt", "quit"):
            continue
        usage = line[2:]
        words = []
        for w in usage[:40].split():
            if w[0] in "<[{(@":
                break
            words.append(w)
        reg.register(tuple(words), lambda cli, a: "", usage)
    assert len(reg.commands) > 80
    for cmd in UNKNOWN:
        theirs = talk(str(both["haproxy"] / "admin.sock"), cmd_bytes(cmd))
        args = split_args(cmd)
        is_help = bool(args) and args[0] == "help"
        ours = reg.usage_message(args[1:] if is_help else args, is_help) + "\n"
        assert ours.encode() == theirs, cmd
    # edgestick's own replies for the cases where HAProxy suggests only table commands
    for cmd in ("show tables", "SHOW TABLE"):
        compare(both, "admin.sock", cmd_bytes(cmd))
