"""Reload without loss through the local peer (HAProxy's `-sf`, transcript e §8), with
real processes on loopback: `edgestick proxy -f CFG -L es1 -sf OLDPID` starts beside the
old process, which then soft-stops, teaches its replicated tables to the new one over
the local peer address and exits.

* entries made before the reload, with their counters, server ids and (remaining)
  expiry, are in the new process after it; the edgestick-only variant has no other peer,
  so the old process is the only place they can come from;
* a client making a new connection per request across the reload sees no failure;
* with a real HAProxy 2.6 as the other peer, the new process replicates to it as the old
  one did."""
import re
import socket
import subprocess
import threading
import time

import pytest

from proxy_harness import Backends, PYTHON, free_ports, one_request, wait_port, workdir

CONFIG = """\
global
    stats socket {sock} mode 600 level admin
peers mypeers
    peer es1 127.0.0.1:{eport}
{other}defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s
frontend fe
    bind 127.0.0.1:{fport}
    http-request track-sc0 src table tbl_rate
    http-request sc-inc-gpc0(0) if {{ path /inc }}
    default_backend bk
backend bk
    balance roundrobin
    stick-table type ip size 1k expire 30m peers mypeers
    stick on src
    server s1 127.0.0.1:{s1}
    server s2 127.0.0.1:{s2}
backend tbl_rate
    stick-table type ip size 1k expire 10m peers mypeers store gpc0,http_req_cnt,http_req_rate(10s)
"""
SOURCES = ("127.0.0.2", "127.0.0.3", "127.0.0.4")
LOOP_SRC = "127.0.0.9"
ENTRY = re.compile(r"key=(\S+) use=\d+ exp=(\d+) (.*)")


def cli(sock, cmd: str) -> str:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(str(sock))
        s.sendall(cmd.encode() + b"\n")
        s.shutdown(socket.SHUT_WR)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out.decode()


def table(sock, name: str) -> dict:
    """key -> (exp, data text) of a `show table` dump."""
    return {m[1]: (int(m[2]), m[3]) for m in ENTRY.finditer(cli(sock, f"show table {name}"))}


def wait_for(pred, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def edgestick(cfg, *args, log=None):
    return subprocess.Popen([PYTHON, "-m", "edgestick", "proxy", "-f", str(cfg), "-L", "es1", *args],
                            stdout=log, stderr=log)


class ClientLoop(threading.Thread):
    """New connection per request until stopped (at most 20000 requests, 20 s)."""

    def __init__(self, port: int):
        super().__init__(daemon=True)
        self.port, self.stop, self.results = port, threading.Event(), []

    def run(self):
        deadline = time.monotonic() + 20
        while not self.stop.is_set() and len(self.results) < 20000 and time.monotonic() < deadline:
            try:
                r = one_request(self.port, "/", src=LOOP_SRC)
                self.results.append(r.status if r is not None else "no response")
            except OSError as e:
                self.results.append(repr(e))


@pytest.mark.parametrize("with_haproxy", [False, True], ids=["edgestick-only", "with-haproxy"])
def test_reload_hands_the_tables_over_and_loses_no_request(with_haproxy, haproxy_bin):
    backends = Backends(["s1", "s2"]).start()
    procs = []
    with workdir() as tmp:
        try:
            fport, eport, hport, hfport = free_ports(4)
            other = f"    peer hapB 127.0.0.1:{hport}\n" if with_haproxy else ""
            ports = dict(eport=eport, other=other, s1=backends.ports["s1"], s2=backends.ports["s2"])
            cfg = tmp / "es.cfg"
            cfg.write_text(CONFIG.format(sock=tmp / "es.sock", fport=fport, **ports))
            log = open(tmp / "es.log", "wb")
            if with_haproxy:
                (tmp / "hap.cfg").write_text(CONFIG.format(sock=tmp / "hap.sock", fport=hfport, **ports))
                procs.append(subprocess.Popen([haproxy_bin, "-db", "-f", str(tmp / "hap.cfg"), "-L", "hapB"],
                                              stdout=log, stderr=log))
                wait_port(hfport, procs[-1])
            old = edgestick(cfg, log=log)
            procs.append(old)
            wait_port(fport, old)
            if with_haproxy:
                wait_for(lambda: "state=EST" in cli(tmp / "es.sock", "show peers"), 10, "the peers session")

            for i, src in enumerate(SOURCES):          # counters differ per source
                for _ in range(i + 1):
                    assert one_request(fport, "/inc", src=src).status == 200
                assert one_request(fport, "/", src=src).status == 200
            before = {name: table(tmp / "es.sock", name) for name in ("tbl_rate", "bk")}
            assert set(SOURCES) <= set(before["tbl_rate"]) and set(SOURCES) <= set(before["bk"])

            loops = [ClientLoop(fport) for _ in range(2)]
            for loop in loops:
                loop.start()
            wait_for(lambda: all(len(loop.results) >= 20 for loop in loops), 10, "the client loops")
            new = edgestick(cfg, "-sf", str(old.pid), log=log)
            procs.append(new)
            old.wait(15)                               # the old process finished and left
            served_before = [len(loop.results) for loop in loops]
            wait_for(lambda: all(len(loop.results) >= n + 20 for loop, n in zip(loops, served_before)),
                     10, "requests served by the new process")
            for loop in loops:
                loop.stop.set()
                loop.join(10)
            assert new.poll() is None
            results = [r for loop in loops for r in loop.results]
            assert set(results) == {200}, [r for r in results if r != 200][:5]

            after = {name: table(tmp / "es.sock", name) for name in ("tbl_rate", "bk")}
            for name in ("tbl_rate", "bk"):
                for src in SOURCES:
                    exp_before, data_before = before[name][src]
                    exp_after, data_after = after[name][src]
                    if name == "tbl_rate":             # the rate has moved on meanwhile
                        data_before = re.sub(r"http_req_rate\(10000\)=\d+", "", data_before)
                        data_after = re.sub(r"http_req_rate\(10000\)=\d+", "", data_after)
                    assert data_after == data_before, (name, src)
                    assert exp_before - 20_000 < exp_after <= exp_before   # remaining, not renewed
            assert re.search(r"gpc0=3 http_req_cnt=4", after["tbl_rate"]["127.0.0.4"][1])
            text = (tmp / "es.log").read_text()
            assert "learned the tables from the old process (complete)" in text
            assert "tables handed over to the new process: confirmed" in text

            if with_haproxy:                           # the new process replicates as the old did
                assert one_request(fport, "/inc", src="127.0.0.5").status == 200
                wait_for(lambda: "gpc0=1" in table(tmp / "hap.sock", "tbl_rate").get("127.0.0.5", (0, ""))[1],
                         10, "the new process's entry on HAProxy")
                hap = table(tmp / "hap.sock", "tbl_rate")
                for src in SOURCES:
                    assert hap[src][1].split()[:2] == after["tbl_rate"][src][1].split()[:2]
        finally:
            for p in procs:
                if p.poll() is None:
                    p.terminate()
                    try:
                        p.wait(8)
                    except subprocess.TimeoutExpired:
                        p.kill()
                        p.wait()
            backends.kill()


def test_new_connections_go_to_the_new_process_while_the_old_one_still_listens():
    """The steering alone: the old process is not told to stop (-sf names no process), so
    both listen on the port; every new connection still reaches the new one (without the
    reuseport program the kernel would spread them over both)."""
    procs = []
    with workdir() as tmp:
        try:
            (fport,) = free_ports(1)
            cfg = tmp / "p.cfg"
            cfg.write_text(f"""global
    stats socket {tmp}/p.sock mode 600 level admin
defaults
    mode http
    timeout client 5s
frontend fe
    bind 127.0.0.1:{fport}
    http-request track-sc0 src table t
    http-request return status 200
backend t
    stick-table type ip size 1k expire 10m store http_req_cnt
""")
            procs.append(edgestick(cfg, log=subprocess.DEVNULL))
            wait_port(fport, procs[0])
            gone = subprocess.Popen([PYTHON, "-c", "pass"])
            gone.wait()                                # a pid with no process behind it
            log = open(tmp / "new.log", "wb")
            procs.append(edgestick(cfg, "-sf", str(gone.pid), log=log))
            wait_for(lambda: b"started" in (tmp / "new.log").read_bytes(), 10, "the new process")
            for _ in range(40):
                assert one_request(fport, "/", src="127.0.0.7").status == 200
            assert procs[0].poll() is None             # the old one still runs and listens
            assert "http_req_cnt=40" in cli(tmp / "p.sock", "show table t")   # the new one's table
        finally:
            for p in procs:
                if p.poll() is None:
                    p.terminate()
                    p.wait(8)


def test_one_hand_over_at_a_time_and_remote_resync_waits_for_it():
    """The new process accepts one session from its own peer name (a second one gets
    300, HAProxy's "try again later"), and asks no remote peer for a lesson while it
    waits for the old process's."""
    import asyncio

    from edgestick.proxy.peers import Peers, encode_hello
    from edgestick.proxy.stick_table import StickTable, parse_table_args

    async def scenario():
        lport, rport = free_ports(2)
        t = StickTable("t", parse_table_args("type ip size 1k expire 1m peers p store gpc0".split())[0])
        new = Peers("p", "es1", [("es1", "127.0.0.1", lport), ("remote", "127.0.0.1", rport)], [t],
                    expect_local=True)
        remote_got = []

        async def remote(reader, writer):            # a remote peer that records what it is sent
            await reader.readline()
            await reader.readline()
            await reader.readline()
            writer.write(b"200\n")
            remote_got.append(await reader.read(2))
        server = await asyncio.start_server(remote, "127.0.0.1", rport)
        await new.start()
        try:
            statuses = []
            for _ in range(2):
                reader, writer = await asyncio.open_connection("127.0.0.1", lport)
                writer.write(encode_hello("es1", "es1", 4242))
                statuses.append(await reader.readline())
            # the remote session comes up (the connector calls it) but gets no RESYNC REQUEST
            await asyncio.sleep(1.5)
            assert new.peers[1].session is not None and not new.synced
            return statuses, remote_got
        finally:
            await new.stop()
            server.close()

    statuses, remote_got = asyncio.run(scenario())
    assert statuses == [b"200\n", b"300\n"]
    assert b"\x00\x00" not in b"".join(remote_got)       # no RESYNC REQUEST while waiting
