"""control/runtime_client.py: dump parsing on HAProxy 2.6's own bytes (the transcripts),
reply framing in both modes, addresses, and transport errors on real sockets."""
import ast
import socket
from pathlib import Path
import threading

import pytest

from edgestick.control.runtime_client import (
    DumpError, RuntimeApiError, RuntimeClient, _reply_end, parse_address, parse_table_dump,
    show_table)

TRANSCRIPTS = Path(__file__).resolve().parent.parent / "fixtures" / "haproxy-transcripts"


def replies(name: str) -> list[tuple[str, bytes]]:
    """(command, reply bytes) pairs of a transcript, from its `$ echo '...'` and `repr:` lines."""
    out, cmd = [], None
    for line in (TRANSCRIPTS / name).read_text().splitlines():
        if line.startswith("$ echo '"):
            cmd = line[len("$ echo '"):line.index("' | socat")]
        elif line.startswith("repr: ") and cmd is not None:
            out.append((cmd, ast.literal_eval(line[len("repr: "):])))
            cmd = None
    return out


def reply_to(name: str, command: str, nth: int = 0) -> str:
    found = [r for c, r in replies(name) if c == command]
    return found[nth].decode()


def test_table_list_headers():
    headers, entries = parse_table_dump(reply_to("a-stick-on-src-roundrobin.txt", "show table"))
    assert entries == []
    assert [h.name for h in headers] == ["tbl_nostore", "tbl_bin", "tbl_int", "tbl_str", "tbl_counters", "bk_app"]
    assert (headers[0].type, headers[0].size, headers[0].used) == ("ipv6", 2097152, 0)
    assert (headers[-1].type, headers[-1].size) == ("ip", 204800)


def test_entries_with_counters_rates_and_server_key():
    text = reply_to("a-stick-on-src-roundrobin.txt", "show table bk_app")
    headers, entries = parse_table_dump(text)
    assert headers[0].used == 0
    text = [r for c, r in replies("a-stick-on-src-roundrobin.txt") if c == "show table bk_app"][1].decode()
    headers, entries = parse_table_dump(text)
    assert [e.key for e in entries] == [f"127.0.0.{i}" for i in range(1, 6)]
    first = entries[0]
    assert (first.use, first.exp) == (0, 1800000)
    assert first.data == {"server_id": 1, "server_key": "s1"}


def test_rates_keep_their_period_and_get_ignores_it():
    texts = [r.decode() for c, r in replies("a-stick-on-src-roundrobin.txt")
             if c.startswith("show table tbl_counters") and b"key=127.0.0.7" in r]
    _, entries = parse_table_dump(texts[0])
    e = entries[0]
    assert e.data["gpc0_rate(10000)"] == 17
    assert e.get("gpc0_rate") == 17 and e.get("http_req_rate") == 99 and e.get("gpc0") == 42
    assert e.get("http_err_rate") is None


def test_filtered_dump_from_rate_limit_transcript():
    _, entries = parse_table_dump(reply_to("c-http-req-rate-limit-429.txt", "show table fe_c data.http_req_rate gt 100"))
    assert [(e.key, e.get("http_req_rate"), e.get("conn_cur")) for e in entries] == \
        [("127.0.0.1", 150, 0), ("127.0.0.2", 150, 0)]


def test_arrays_and_string_keys():
    _, entries = parse_table_dump(reply_to("misc-key-order-and-arrays.txt", "show table t_str"))
    a = next(e for e in entries if e.key == "a")
    assert a.data["gpc0"] == 5 and a.data["gpc0_rate(60000)"] == 5 and a.data["gpt1"] == 0
    _, entries = parse_table_dump(reply_to("misc-key-order-and-arrays.txt", "show table t_int"))
    assert [e.key for e in entries] == ["65536", "256", "1", "2", "3"]


def test_escaped_keys_are_unescaped():
    text = ("# table: t, type: string, size:16, used:2\n"
            "0x1: key=a\\ b\\=c\\\\d use=1 exp=0 gpc0=1\n"
            "0x2: key=\\x01\\t use=0 exp=5 gpc0=2\n\n")
    _, entries = parse_table_dump(text)
    assert [e.key for e in entries] == ["a b=c\\d", "\x01\t"]
    assert entries[0].use == 1


def test_error_replies_raise_with_the_servers_message():
    for cmd, reply in replies("a-stick-on-src-roundrobin.txt"):
        if reply in (b"No such table\n\n", b"Filter entry #1: Unknown data type\n\n"):
            with pytest.raises(DumpError, match=reply.decode().strip()):
                parse_table_dump(reply.decode())
    assert parse_table_dump("\n") == ([], [])     # `show table t key K` on an absent key


def test_interactive_reply_framing():
    stream = b"\n> \n> # table: fe, type: ip, size:1024, used:1\n0x1: key=1.2.3.4 use=0 exp=1 gpc0=1\n\n> Unknown data type\n\n> "
    ends, pos = [], 0
    while (end := _reply_end(stream, pos)) >= 0:
        ends.append(stream[pos:end - 2])
        pos = end
    assert ends == [b"\n", b"\n", b"# table: fe, type: ip, size:1024, used:1\n0x1: key=1.2.3.4 use=0 exp=1 gpc0=1\n\n",
                    b"Unknown data type\n\n"]
    assert _reply_end(b"# table: x\n> not yet", 0) == -1


def test_addresses():
    assert parse_address("/run/haproxy.sock") == (socket.AF_UNIX, "/run/haproxy.sock")
    assert parse_address("unix@/x.sock") == (socket.AF_UNIX, "/x.sock")
    assert parse_address("ipv4@127.0.0.1:9999") == (socket.AF_INET, ("127.0.0.1", 9999))
    assert parse_address("127.0.0.1:9999") == (socket.AF_INET, ("127.0.0.1", 9999))
    assert parse_address("ipv6@[::1]:9999") == (socket.AF_INET6, ("::1", 9999))
    for bad in ("", "127.0.0.1", "host:0", "host:x"):
        with pytest.raises(ValueError):
            parse_address(bad)


def test_connect_error_is_clear(tmp_path):
    with pytest.raises(RuntimeApiError, match="cannot connect to .*missing.sock"):
        RuntimeClient(str(tmp_path / "missing.sock"), timeout=1).command("show table")


def _serve_once(path, reply: bytes, close: bool, got: list):
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(path)
    srv.listen(1)

    def run():
        conn, _ = srv.accept()
        got.append(conn.recv(4096))
        conn.sendall(reply)
        if close:
            conn.close()
        else:
            conn.recv(4096)           # hold the connection open until the client leaves
            conn.close()
        srv.close()
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


@pytest.mark.parametrize("close", [True, False])
def test_reply_ends_at_eof_or_at_the_terminator(tmp_path, close):
    path = str(tmp_path / f"s{int(close)}.sock")
    dump = reply_to("c-http-req-rate-limit-429.txt", "show table fe_c data.http_req_rate gt 100").encode()
    got: list = []
    t = _serve_once(path, dump, close, got)
    entries = show_table(RuntimeClient(path, timeout=3), "fe_c", "data.http_req_rate gt 100")
    t.join(3)
    assert got == [b"show table fe_c data.http_req_rate gt 100\n"]
    assert [e.key for e in entries] == ["127.0.0.1", "127.0.0.2"]


def test_timeout_when_the_server_says_nothing(tmp_path):
    path = str(tmp_path / "mute.sock")
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(path)
    srv.listen(1)
    try:
        with pytest.raises(RuntimeApiError, match="timed out"):
            RuntimeClient(path, timeout=0.3).command("show table")
    finally:
        srv.close()


def test_multiline_command_refused():
    with pytest.raises(ValueError):
        RuntimeClient("/nonexistent").command("show table\nclear table x")
