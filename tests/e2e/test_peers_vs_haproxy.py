"""Peers replication between edgestick and a real HAProxy 2.6 (and between two
edgestick nodes), over loopback: entries made on one side appear on the other with the
same data (conn_cur excepted, as HAProxy never applies it), a fresh node learns the
whole table by resync, and hostile peer traffic only closes that one connection."""
import asyncio
import socket
import subprocess
import threading
import time

import pytest

import haproxy_transcripts as tr
from edgestick.proxy.peers import Peers, show_peers
from edgestick.proxy.stick_table import StickTable, parse_table_args

TABLES = {
    "bk_e": "type ip size 200k expire 30m peers mypeers",
    "tbl_rate": "type ip size 1k expire 10m peers mypeers store gpc0,conn_cur,http_req_cnt,"
                "http_req_rate(10s)",
    "tbl_str": "type string len 12 size 1k expire 10m peers mypeers store gpc(2),server_id,"
               "bytes_in_cnt,gpt0",
    "tbl_int": "type integer size 1k expire 10m peers mypeers store gpc0,sess_rate(1m)",
    "tbl_v6": "type ipv6 size 1k expire 10m peers mypeers store http_err_cnt,bytes_out_rate(1s)",
    "tbl_bin": "type binary len 6 size 1k expire 10m peers mypeers store gpt(2)",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_tables():
    out = []
    for name, words in TABLES.items():
        t = StickTable(name, parse_table_args(words.split())[0])
        if name == "bk_e":
            t.ensure_data_types("server_id", "server_key")
        out.append(t)
    return out


class Loop:
    """An asyncio loop in a thread, for the edgestick side."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def call(self, fn, *args):
        async def run():
            return fn(*args)
        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(10)

    def run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(20)

    def close(self):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


def cli(path, cmd: str) -> str:
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(5)
    with s:
        s.connect(str(path))
        s.sendall(cmd.encode() + b"\n")
        s.shutdown(socket.SHUT_WR)
        out = b""
        while True:
            d = s.recv(65536)
            if not d:
                return out.decode()
            out += d


def wait_for(pred, timeout=8.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def entry_line(loop, table, key):
    def get():
        row = table.lookup(key)
        return None if row is None else table.format_entry(row)
    return loop.call(get)


def same_entry(ours: str, theirs: str, tolerance_ms=3000):
    assert tr.mask(ours.encode()) == tr.mask(theirs.encode()), (ours, theirs)
    a, b = tr.exps(ours.encode()), tr.exps(theirs.encode())
    assert abs(a[0] - b[0]) <= tolerance_ms, (ours, theirs)


@pytest.fixture
def mesh(tmp_path, haproxy_bin):
    hport, eport = free_port(), free_port()
    cfg = tmp_path / "hap.cfg"
    sock = tmp_path / "hap.sock"
    backends = "".join(f"backend {n}\n    stick-table {w}\n" for n, w in TABLES.items())
    cfg.write_text(f"""global
    stats socket {sock} mode 600 level admin
defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s
peers mypeers
    peer hapA 127.0.0.1:{hport}
    peer es1 127.0.0.1:{eport}
{backends}backend bk_e_rules
    stick on src table bk_e
    server s1 127.0.0.1:9 id 1
    server s2 127.0.0.1:9 id 2
""")
    procs = []
    loop = Loop()
    state = {"loop": loop, "sock": sock, "procs": procs, "peers": [], "ports": (hport, eport)}

    def start_haproxy():
        p = subprocess.Popen([haproxy_bin, "-db", "-f", str(cfg), "-L", "hapA"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(p)
        wait_for(lambda: sock.exists() and p.poll() is None, what="haproxy stats socket")
        return p

    def start_edgestick():
        tables = make_tables()
        peers = Peers("mypeers", "es1", [("hapA", "127.0.0.1", hport), ("es1", "127.0.0.1", eport)],
                      tables)
        loop.run(peers.start())
        state["peers"].append(peers)
        return {t.name: t for t in tables}, peers

    state["start_haproxy"] = start_haproxy
    state["start_edgestick"] = start_edgestick
    try:
        yield state
    finally:
        for peers in state["peers"]:
            loop.run(peers.stop())
        for p in procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        loop.close()


def test_replication_both_ways_and_resync(mesh):
    hap = mesh["start_haproxy"]()
    tables, peers = mesh["start_edgestick"]()
    loop, sock = mesh["loop"], mesh["sock"]
    rate, bk, st = tables["tbl_rate"], tables["bk_e"], tables["tbl_str"]

    # HAProxy -> edgestick (the first set may race the session set-up: repeat until seen)
    def learned():
        cli(sock, "set table tbl_rate key 10.1.2.3 data.gpc0 77 data.http_req_rate 12 "
                  "data.http_req_cnt 5")
        return entry_line(loop, rate, "10.1.2.3")
    wait_for(learned, what="HAProxy's entry on edgestick")
    cli(sock, "set table tbl_str key hello\\ world data.gpc 3 data.server_id -7 "
              "data.bytes_in_cnt 99999999999 data.gpt0 4")
    wait_for(lambda: entry_line(loop, st, "hello world"), what="string key")
    for table, key, cmd in ((rate, "10.1.2.3", "show table tbl_rate key 10.1.2.3"),
                            (st, "hello world", "show table tbl_str key hello\\ world")):
        theirs = cli(sock, cmd).splitlines()[1]
        same_entry(entry_line(loop, table, key), theirs + "\n")

    # the other key types, HAProxy -> edgestick
    for cmd, table, key in (("set table tbl_int key 65536 data.gpc0 3 data.sess_rate 4",
                             tables["tbl_int"], 65536),
                            ("set table tbl_v6 key fd00::1 data.http_err_cnt 2 "
                             "data.bytes_out_rate 999", tables["tbl_v6"], "fd00::1")):
        cli(sock, cmd)
        line = wait_for(lambda: entry_line(loop, table, key), what=cmd)
        name = cmd.split()[2]
        same_entry(line, cli(sock, f"show table {name} key {cmd.split()[4]}").splitlines()[1]
                   + "\n")

    # edgestick -> HAProxy: tracked counters (conn_cur stays local), stick entry, gpc array
    def local_changes():
        r = rate.track("10.9.9.9", http_req=True)
        rate.inc_gpc(r, 0)
        rate.release(r)
        held = rate.track("10.9.9.8", http_req=True)      # conn_cur=1 here, 0 over there
        b = bk.get_or_create("10.9.9.9")
        bk.set_server(b, 2, "s2")
        s = st.get_or_create("edge")
        st.inc_gpc(s, 1, legacy=False)
        st.add_bytes_in(s, 1234)
        b = tables["tbl_bin"].get_or_create(b"\x01\x02")
        tables["tbl_bin"].set_gpt(b, 7, 1, legacy=False)
        i = tables["tbl_int"].get_or_create(4294967295)
        tables["tbl_int"].inc_gpc(i, 0)
        return held
    held = loop.call(local_changes)
    wait_for(lambda: "key=edge " in cli(sock, "show table tbl_str key edge"), what="push")
    theirs = wait_for(lambda: cli(sock, "show table tbl_bin").splitlines()[1:2], what="bin")[0]
    assert " key=010200000000 " in theirs and theirs.endswith(" gpt0=0 gpt1=7"), theirs
    same_entry(entry_line(loop, tables["tbl_bin"], b"\x01\x02"), theirs + "\n")
    theirs = wait_for(lambda: cli(sock, "show table tbl_int key 4294967295").splitlines()[1:2],
                      what="int")[0]
    same_entry(entry_line(loop, tables["tbl_int"], 4294967295), theirs + "\n")
    for table, key, cmd in ((rate, "10.9.9.9", "show table tbl_rate key 10.9.9.9"),
                            (bk, "10.9.9.9", "show table bk_e key 10.9.9.9"),
                            (st, "edge", "show table tbl_str key edge")):
        theirs = wait_for(lambda: cli(sock, cmd).splitlines()[1:2], what=cmd)[0]
        same_entry(entry_line(loop, table, key), theirs + "\n")
    assert "conn_cur=1 " in entry_line(loop, rate, "10.9.9.8")
    assert "conn_cur=0 " in wait_for(lambda: cli(sock, "show table tbl_rate key 10.9.9.8"))
    loop.call(rate.release, held)

    # cut off: the session drops, both sides change entries meanwhile, and after the
    # reconnection each side pushes what the other has not acknowledged
    def cut():
        for p in peers.peers:
            if p.session is not None:
                p.session.close()
        r = rate.track("10.7.7.7", http_req=True)
        rate.release(r)
    loop.call(cut)
    cli(sock, "set table tbl_rate key 10.8.8.8 data.gpc0 8")
    wait_for(lambda: entry_line(loop, rate, "10.8.8.8"), timeout=15,
             what="HAProxy's change after the cut")
    theirs = wait_for(lambda: cli(sock, "show table tbl_rate key 10.7.7.7").splitlines()[1:2],
                      timeout=15, what="edgestick's change after the cut")[0]
    same_entry(entry_line(loop, rate, "10.7.7.7"), theirs + "\n")

    # a fresh edgestick node learns everything from HAProxy (resync with remaining expiry)
    loop.run(peers.stop())
    mesh["peers"].remove(peers)
    tables2, peers2 = mesh["start_edgestick"]()
    bk2 = tables2["bk_e"]
    line = wait_for(lambda: entry_line(loop, bk2, "10.9.9.9"), what="resync to edgestick")
    same_entry(line, cli(sock, "show table bk_e key 10.9.9.9").splitlines()[1] + "\n")
    wait_for(lambda: entry_line(loop, tables2["tbl_str"], "hello world"), what="resync str")

    # a restarted HAProxy learns everything from edgestick
    hap.terminate()
    hap.wait(5)
    sock.unlink(missing_ok=True)
    mesh["start_haproxy"]()
    theirs = wait_for(lambda: cli(sock, "show table tbl_rate key 10.1.2.3").splitlines()[1:2],
                      what="resync to HAProxy")[0]
    same_entry(entry_line(loop, tables2["tbl_rate"], "10.1.2.3"), theirs + "\n", 2500)


def test_two_edgestick_nodes_and_hostile_traffic(tmp_path):
    loop = Loop()
    pa, pb = free_port(), free_port()
    names = [("a", "127.0.0.1", pa), ("b", "127.0.0.1", pb)]
    ta, tb = make_tables(), make_tables()
    na, nb = Peers("mypeers", "a", names, ta), Peers("mypeers", "b", names, tb)
    try:
        loop.run(na.start())
        loop.run(nb.start())

        def write():
            r = ta[1].track("198.18.0.1", http_req=True)
            ta[1].release(r)
        loop.call(write)
        wait_for(lambda: entry_line(loop, tb[1], "198.18.0.1"), what="a -> b")
        same_entry(entry_line(loop, tb[1], "198.18.0.1"), entry_line(loop, ta[1], "198.18.0.1"))

        def talk(data: bytes) -> bytes:
            with socket.create_connection(("127.0.0.1", pb), timeout=5) as s:
                s.sendall(data)
                out = b""
                try:
                    while True:
                        d = s.recv(4096)
                        if not d:
                            return out
                        out += d
                except socket.timeout:
                    return out + b"<open>"
        assert talk(b"GET / HTTP/1.0\n\n\n") == b"501\n"
        assert talk(b"HAProxyS 3.0\nb\na 1 1\n") == b"502\n"
        assert talk(b"HAProxyS 2.1\nzz\na 1 1\n") == b"503\n"
        assert talk(b"HAProxyS 2.1\nb\nmallory 1 1\n") == b"504\n"
        # a valid hello then garbage: protocol error, that connection only
        out = talk(b"HAProxyS 2.1\nb\na 1 1\n" + bytes.fromhex("0a 80 05 00 00 00 02 7f"))
        assert out.startswith(b"200\n") and out.endswith(b"\x01\x00")
        out = talk(b"HAProxyS 2.1\nb\na 1 1\n" + bytes((10, 0x82)) + b"\xff" * 11)
        assert out.startswith(b"200\n") and out.endswith(b"\x01\x00")
        # the real session comes back and keeps replicating
        def write2():
            r = ta[1].track("198.18.0.2", http_req=True)
            ta[1].release(r)
        wait_for(lambda: loop.call(write2) or entry_line(loop, tb[1], "198.18.0.2"),
                 what="replication after hostile traffic")
        assert len(tb[1]) == 2 and len(tb[0]) == 0

        # cut off (both ends drop the session), changes meanwhile, reconnect: catch-up from
        # the last acknowledged update id
        def cut_and_write():
            for n in (na, nb):
                for p in n.peers:
                    if p.session is not None:
                        p.session.close()
            for i in range(3, 6):
                r = ta[1].track(f"198.18.0.{i}", http_req=True)
                ta[1].release(r)
        loop.call(cut_and_write)
        wait_for(lambda: all(entry_line(loop, tb[1], f"198.18.0.{i}") for i in range(3, 6)),
                 what="catch-up after reconnect")
        assert "id=a(remote,active)" in wait_for(
            lambda: (lambda t: t if "id=a(remote,active)" in t else None)(
                loop.call(show_peers, [nb])), what="show peers")
    finally:
        loop.run(na.stop())
        loop.run(nb.stop())
        loop.close()


def test_three_node_mesh_converges(tmp_path, haproxy_bin):
    """Two edgestick nodes and one HAProxy, each peering with the two others."""
    hport, p1, p2 = free_port(), free_port(), free_port()
    sock = tmp_path / "hap.sock"
    cfg = tmp_path / "hap.cfg"
    cfg.write_text(f"""global
    stats socket {sock} mode 600 level admin
peers mypeers
    peer hapA 127.0.0.1:{hport}
    peer es1 127.0.0.1:{p1}
    peer es2 127.0.0.1:{p2}
backend tbl_rate
    stick-table {TABLES["tbl_rate"]}
""")
    hap = subprocess.Popen([haproxy_bin, "-db", "-f", str(cfg), "-L", "hapA"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    loop = Loop()
    names = [("hapA", "127.0.0.1", hport), ("es1", "127.0.0.1", p1), ("es2", "127.0.0.1", p2)]
    decl = TABLES["tbl_rate"].split()
    t1 = StickTable("tbl_rate", parse_table_args(decl)[0])
    t2 = StickTable("tbl_rate", parse_table_args(decl)[0])
    n1, n2 = Peers("mypeers", "es1", names, [t1]), Peers("mypeers", "es2", names, [t2])
    try:
        wait_for(lambda: sock.exists(), what="haproxy")
        loop.run(n1.start())
        loop.run(n2.start())

        # write once the mesh is up and every node has had its start-up lesson: a lesson
        # overwrites what it carries (HAProxy's rule), so writes racing it could be undone
        def meshed():
            ours = loop.call(lambda: all(n.synced and all(p.session for p in n.peers
                                                          if not p.local) for n in (n1, n2)))
            hap_view = cli(sock, "show peers")
            flags = int(hap_view.split(" flags=", 1)[1].split(" ", 1)[0], 16)
            # HAProxy's section flags: 0x1/0x2 = resync done from the local/a remote peer
            return ours and hap_view.count("last_status=ESTA") == 2 and flags & 0x3
        wait_for(meshed, timeout=15, what="the mesh")

        def on_es1():
            r = t1.track("198.18.1.1", http_req=True)
            t1.release(r)
        loop.call(on_es1)
        cli(sock, "set table tbl_rate key 198.18.2.2 data.gpc0 9 data.http_req_cnt 3")

        def all_equal():
            theirs = {l.split(" key=")[1].split(" ")[0]: l + "\n"
                      for l in cli(sock, "show table tbl_rate").splitlines()[1:] if l}
            try:
                for t in (t1, t2):
                    for k in ("198.18.1.1", "198.18.2.2"):
                        same_entry(entry_line(loop, t, k), theirs[k])
            except (AssertionError, KeyError):
                return False
            return True
        wait_for(all_equal, timeout=15, what="the three nodes holding the same entries")
    finally:
        loop.run(n1.stop())
        loop.run(n2.stop())
        loop.close()
        hap.terminate()
        hap.wait(5)


def test_edgestick_proxy_process_replicates_with_haproxy(tmp_path, haproxy_bin):
    """The whole chain: `edgestick proxy -f cfg -L es1` with a peers section, next to
    HAProxy with the same section; both stats sockets show the same entries."""
    import sys
    hport, eport = free_port(), free_port()
    peers = f"peers mypeers\n    peer hapA 127.0.0.1:{hport}\n    peer es1 127.0.0.1:{eport}\n"
    body = ("defaults\n    mode http\n    timeout connect 1s\n    timeout client 5s\n"
            "    timeout server 5s\n" + peers +
            f"backend tbl_rate\n    stick-table {TABLES['tbl_rate']}\n")
    hsock, esock = tmp_path / "hap.sock", tmp_path / "es.sock"
    (tmp_path / "hap.cfg").write_text(f"global\n    stats socket {hsock} level admin\n" + body)
    (tmp_path / "es.cfg").write_text(f"global\n    stats socket {esock} level admin\n" + body)
    procs = [subprocess.Popen([haproxy_bin, "-db", "-f", str(tmp_path / "hap.cfg"), "-L", "hapA"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
             subprocess.Popen([sys.executable, "-m", "edgestick", "proxy", "-f",
                               str(tmp_path / "es.cfg"), "-L", "es1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        wait_for(lambda: hsock.exists() and esock.exists(), timeout=15, what="both processes")
        wait_for(lambda: "id=hapA(remote,active)" in cli(esock, "show peers"), timeout=15,
                 what="the session")

        def row(sock, key):
            lines = cli(sock, f"show table tbl_rate key {key}").splitlines()
            return lines[1] + "\n" if len(lines) > 1 else None
        cli(hsock, "set table tbl_rate key 10.1.1.1 data.gpc0 5 data.http_req_rate 9")
        cli(esock, "set table tbl_rate key 10.2.2.2 data.gpc0 6 data.http_req_cnt 3")
        for key in ("10.1.1.1", "10.2.2.2"):
            theirs = wait_for(lambda: row(hsock, key), what=f"{key} on HAProxy")
            ours = wait_for(lambda: row(esock, key), what=f"{key} on edgestick")
            same_entry(ours, theirs)
    finally:
        for p in procs:
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
