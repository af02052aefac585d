"""`option tcp-check` health checks compared with HAProxy 2.6: the same `tcp-check`
steps against the same small servers (one answers PING with +PONG, one with -ERR, one
answers and closes, one greets first, one says nothing), and the same `show stat`
check_status, check_code and last_chk once the checks have settled; `-c` verdicts."""
import socket
import subprocess
import sys
import threading
import time

import pytest

from proxy_harness import Backends, both, settled_stat_row, workdir

pytestmark = pytest.mark.haproxy

TEMPLATE = """
global
    stats socket {SOCK} mode 600 level admin
    nbthread 1

defaults
    mode tcp
    timeout connect 1s
    timeout client 5s
    timeout server 5s
    timeout check 300ms
    default-server inter 500ms fall 1 rise 1

frontend fe
    bind 127.0.0.1:{FE}
    default_backend pong

backend pong
    option tcp-check
    tcp-check send PING\\r\\n
    tcp-check expect string +PONG
    server s 127.0.0.1:{PONG} check

backend err
    option tcp-check
    tcp-check send PING\\r\\n
    tcp-check expect string +PONG
    server s 127.0.0.1:{ERR} check

backend err_close
    option tcp-check
    tcp-check send PING\\r\\n
    tcp-check expect string +PONG
    server s 127.0.0.1:{ERRCLOSE} check

backend banner
    option tcp-check
    tcp-check expect rstring ^220
    tcp-check send QUIT\\r\\n
    server s 127.0.0.1:{BANNER} check

backend unwanted
    option tcp-check
    tcp-check send PING\\r\\n
    tcp-check expect ! string -ERR
    server s 127.0.0.1:{ERR} check

backend never_closed
    option tcp-check
    tcp-check send PING\\r\\n
    tcp-check expect ! string -ERR
    server s 127.0.0.1:{PONG} check

backend binary
    option tcp-check
    tcp-check send-binary 50494e470d0a
    tcp-check expect binary 2b504f4e47
    server s 127.0.0.1:{PONG} check

backend commented
    option tcp-check
    tcp-check comment hello-step
    tcp-check send PING\\r\\n comment sending
    tcp-check expect string +PONG comment pong-expected
    server s 127.0.0.1:{ERR} check

backend silent
    option tcp-check
    tcp-check expect string hello
    server s 127.0.0.1:{SILENT} check

backend refused
    option tcp-check
    tcp-check connect
    tcp-check send PING\\r\\n
    server s 127.0.0.1:{DEAD} check

backend refused_later
    option tcp-check
    tcp-check connect
    tcp-check send PING\\r\\n
    tcp-check expect string +PONG
    tcp-check connect port {DEAD}
    server s 127.0.0.1:{PONG} check

backend refused_implicit
    option tcp-check
    tcp-check send PING\\r\\n
    server s 127.0.0.1:{DEAD} check

backend no_steps
    option tcp-check
    server s 127.0.0.1:{PONG} check
"""

BACKENDS = ["pong", "err", "err_close", "banner", "unwanted", "never_closed", "binary",
            "commented", "silent", "refused", "refused_later", "refused_implicit", "no_steps"]


class LineServers:
    """Small servers, one per behaviour, on free ports."""

    def __init__(self):
        self.socks = {}
        for mode in ("pong", "err", "errclose", "banner", "silent"):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            s.listen(64)
            self.socks[mode] = s
            threading.Thread(target=self._accept, args=(s, mode), daemon=True).start()
        dead = socket.socket()
        dead.bind(("127.0.0.1", 0))
        self.dead = dead.getsockname()[1]            # bound, never listening: refused
        self._dead = dead

    def port(self, mode):
        return self.socks[mode].getsockname()[1]

    def _accept(self, s, mode):
        while True:
            try:
                c, _ = s.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c, mode), daemon=True).start()

    @staticmethod
    def _serve(c, mode):
        try:
            c.settimeout(3)
            if mode == "banner":
                c.sendall(b"220 hello\r\n")
            while True:
                d = c.recv(100)
                if not d:
                    break
                if mode == "pong":
                    c.sendall(b"+PONG\r\n")
                elif mode in ("err", "errclose"):
                    c.sendall(b"-ERR nope\r\n")
                    if mode == "errclose":
                        break
        except OSError:
            pass
        finally:
            c.close()

    def close(self):
        for s in self.socks.values():
            s.close()
        self._dead.close()


def test_tcp_check_verdicts_as_haproxy(haproxy_bin):
    servers = LineServers()
    b = Backends([])
    b.ports.update({"pong": servers.port("pong"), "err": servers.port("err"),
                    "errclose": servers.port("errclose"), "banner": servers.port("banner"),
                    "silent": servers.port("silent"), "dead": servers.dead})
    try:
        with workdir() as wd, both(TEMPLATE, b, wd, haproxy_bin) as (h, e):
            time.sleep(1.5)                  # the first checks have run everywhere
            cols = ("check_status", "check_code", "last_chk")
            got = {name: tuple(tuple(settled_stat_row(p, name, "s", cols).values())
                               for p in (h, e))
                   for name in BACKENDS}
            diffs = {k: v for k, v in got.items() if v[0] != v[1]}
            assert not diffs, diffs
            assert got["pong"][0] == ("L7OK", "0", "(tcp-check)")
            assert got["err_close"][0][0] == "L7RSP"
    finally:
        servers.close()


@pytest.mark.parametrize("rule,valid", [
    ("tcp-check send PING", True), ("tcp-check expect string +OK", True),
    ("tcp-check expect ! rstring ^-ERR", True), ("tcp-check connect port 25", True),
    ("tcp-check send-binary 0d0a", True), ("tcp-check comment smtp", True),
    ("tcp-check frob", False), ("tcp-check expect", False), ("tcp-check send", False),
])
def test_tcp_check_config_as_haproxy(haproxy_bin, rule, valid):
    with workdir() as d:
        cfg = d / "t.cfg"
        cfg.write_text("defaults\n    mode tcp\n    timeout client 1s\n    timeout server 1s\n"
                       f"    timeout connect 1s\nbackend b\n    option tcp-check\n    {rule}\n")
        for argv in ([haproxy_bin, "-c", "-f", str(cfg)],
                     [sys.executable, "-m", "edgestick", "proxy", "-c", "-f", str(cfg)]):
            r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
            assert (r.returncode in (0, 2)) == valid, (argv[0], r.stdout + r.stderr)
