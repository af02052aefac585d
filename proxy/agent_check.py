"""`agent-check`: HAProxy 2.6's agent (src/tcpcheck.c tcpcheck_agent_expect_reply, check.c):
every `agent-inter` a TCP connection to `agent-addr`:`agent-port` (the server's address by
default), `agent-send`'s string if any, then one line back. Its words, in any order
(separated by spaces, tabs or commas; the last of a kind wins; a '#' starts a
description):

  up | down | stopped | fail     the agent's health: the server goes UP or DOWN
  ready | drain | maint          the server's administrative state
  N%                             its weight, relative to the configured one
  maxconn:N                      its maxconn

What the agent cannot be reached for (connection refused, timeout, empty reply) changes
nothing on the server; `show stat` shows it in the agent_* columns and last_agt."""
from __future__ import annotations

import asyncio
import os
import socket
import time

from . import server_health
from .backend import set_linger_rst

# check statuses at or above HAProxy's HCHK_STATUS_L57DATA carry a code
_WITH_CODE = frozenset(("L7OK", "L7OKC", "L7STS"))
# HAProxy's check results: what a status does to the agent's health
_PASSED, _FAILED = frozenset(("L7OK", "L4OK", "L6OK")), frozenset(
    ("L7STS", "L7RSP", "L7TOUT", "L4CON", "L4TOUT", "L6RSP", "L6TOUT", "SOCKERR"))


class AgentState:
    """The agent of one server: its health (HAProxy's agent rise = fall = 1) and what
    `show stat` reports of its last run."""
    __slots__ = ("health", "status", "code", "desc", "duration", "checking")

    def __init__(self):
        self.health = 1
        self.status = "INI"
        self.code = None
        self.desc = ""                  # last_agt
        self.duration = 0
        self.checking = False

    def stat_fields(self) -> dict:
        return {"agent_status": ("* " if self.checking else "") + self.status,
                "agent_code": self.code if self.status in _WITH_CODE else None,
                "agent_duration": self.duration,
                "agent_desc": DESC.get(self.status, "Unknown"), "last_agt": self.desc,
                "agent_rise": 1, "agent_fall": 1, "agent_health": self.health}


DESC = {"INI": "Initializing", "CHECKED": "No status change", "SOCKERR": "Socket error",
        "L4OK": "Layer4 check passed", "L4TOUT": "Layer4 timeout",
        "L4CON": "Layer4 connection problem", "L6OK": "Layer6 check passed",
        "L6TOUT": "Layer6 timeout", "L6RSP": "Layer6 invalid response",
        "L7TOUT": "Layer7 timeout", "L7RSP": "Layer7 invalid response",
        "L7OK": "Layer7 check passed", "L7OKC": "Layer7 check conditionally passed",
        "L7STS": "Layer7 wrong status"}


def attach(backend) -> list:
    """Agent states for the servers with `agent-check`; the servers to run it for."""
    agents = []
    for srv in backend.servers:
        if srv.model.agent_check and srv.agent is None:
            srv.agent = AgentState()
        if srv.agent is not None:
            agents.append(srv)
    return agents


async def loop(srv, delay_s: float, timeouts: dict):
    await asyncio.sleep(delay_s)
    ev = asyncio.get_running_loop()
    agent = srv.agent
    inter_s = srv.model.agent_inter_ms / 1000.0
    while True:
        started = ev.time()
        agent.checking = True
        agent.desc = ""                 # (HAProxy clears it when a check starts)
        try:
            reply, status, desc = await _query(srv, timeouts, inter_s)
        except Exception as e:          # (never let the loop die)
            reply, status, desc = None, "SOCKERR", str(e)
        finally:
            agent.checking = False
        agent.duration = int((ev.time() - started) * 1000)
        if reply is None:
            _report(srv, status, desc)
        else:
            apply_reply(srv, reply)
        await asyncio.sleep(max(0.0, inter_s - (ev.time() - started)))


async def _query(srv, timeouts: dict, inter_s: float):
    """One agent run: (reply line, None, None), or (None, status, description) when
    there is no line to read."""
    host = srv.model.agent_addr or srv.host
    port = srv.model.agent_port
    connect_s = min((timeouts.get("connect") or srv.model.agent_inter_ms) / 1000.0, inter_s)
    read_s = (timeouts.get("check") or srv.model.agent_inter_ms) / 1000.0
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET,
                         socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        try:
            await asyncio.wait_for(loop.sock_connect(sock, (host, port)), connect_s)
        except (TimeoutError, asyncio.TimeoutError):
            return None, "L4TOUT", ""
        except OSError as e:
            return None, "L4CON", os.strerror(e.errno) if e.errno else ""

        async def exchange() -> bytes:
            data = b""
            if srv.model.agent_send:
                await loop.sock_sendall(sock, srv.model.agent_send.encode("latin-1"))
            while True:
                chunk = await loop.sock_recv(sock, 4096)
                if not chunk:
                    return data
                data += chunk
                if b"\n" in data or b"\r" in data or len(data) >= 16384:
                    return data
        try:
            data = await asyncio.wait_for(exchange(), read_s)
        except (TimeoutError, asyncio.TimeoutError):
            return None, "L7TOUT", ""
        except OSError as e:
            return None, "L7RSP", os.strerror(e.errno) if e.errno else ""
        if not data:
            return None, "L7RSP", "TCPCHK got an empty response at step 2"
        end = min((i for i in (data.find(b"\n"), data.find(b"\r")) if i >= 0), default=-1)
        if end < 0:
            # the agent closed in the middle of its line: nothing applied, its status kept
            return None, srv.agent.status, "Ignoring incomplete line from agent"
        return data[:end].split(b"\0", 1)[0].decode("latin-1"), None, None
    finally:
        set_linger_rst(sock)
        sock.close()


def _report(srv, status: str, desc: str):
    """A run without a line to apply: the status is shown; only a status the agent
    itself gave (L7STS) could take the server down, which these never are."""
    agent = srv.agent
    agent.status, agent.code, agent.desc = status, 0, desc
    if status in _PASSED and agent.health < 1:
        agent.health = 1
        _notify_success(srv)
    elif status == "L7STS" and agent.health == 0:
        srv.set_state(False)


def parse_reply(line: str) -> tuple:
    """The words of an agent line: (health word, admin word, weight word, maxconn
    value, first unknown word, description)."""
    hs = as_ = ps = cs = err = None
    desc = ""
    pos, n = 0, len(line)
    while pos < n:
        ch = line[pos]
        if ch in " \t,":
            pos += 1
            continue
        if ch == "#":
            desc = line[pos + 1:].lstrip(" \t")
            break
        end = pos + 1
        while end < n and line[end] not in "\t ,":
            end += 1
        word = line[pos:end]
        pos = end + 1
        low = word.lower()
        if low in ("up", "down", "stopped", "fail"):
            hs = word
        elif low in ("ready", "drain", "maint"):
            as_ = word
        elif word[:1].isdigit() and "%" in word:
            ps = word
        elif low.startswith("maxconn:"):
            cs = word[len("maxconn:"):]
        elif err is None:
            err = word
    return hs, as_, ps, cs, err, desc.lstrip(" \n")


def apply_reply(srv, line: str):
    """What the agent said, in HAProxy's order: the admin state, the weight, maxconn,
    then the health with its message (last_agt)."""
    agent = srv.agent
    hs, as_, ps, cs, err, desc = parse_reply(line)
    wrn = None
    if as_ is not None:
        _set_admin(srv, as_.lower())
    from . import server_cli            # (as `set server ... weight/maxconn` take them)
    if ps is not None:
        weight, msg = server_cli.parse_weight_change(srv, ps)
        if msg is None:
            server_cli.set_weight(srv, weight)
        wrn = wrn or msg
    if cs is not None:
        from .sample import RUNNING
        msg = server_cli.parse_maxconn_change(RUNNING.frontends.values(), srv, cs)
        wrn = wrn or msg
    agent.code = 0
    if hs is not None:
        up = hs.lower() == "up"
        msg = desc
        if not msg or up:
            msg = err or wrn or msg
        agent.status = "L7OK" if up else "L7STS"
        agent.desc = f"via agent : {hs}" + (f" ({msg})" if msg else "")
        agent.health = 1 if up else 0
        if up:
            _notify_success(srv)
        else:
            srv.set_state(False)
        return
    agent.status = "CHECKED"
    if err:
        agent.desc = f"agent reports an error : {err}"
    elif wrn:
        agent.desc = f"agent warns : {wrn}"
    else:
        agent.desc = ""


def _notify_success(srv):
    """HAProxy's check_notify_success: UP unless in maintenance, tracking a DOWN server
    or its health check says otherwise."""
    if srv.admin_maint:
        return
    if srv.track is not None and not srv.track.op_up:
        return
    if srv.model.check and srv.health < srv.model.rise:
        return
    srv.set_state(True)


def _set_admin(srv, word: str):
    """drain / maint / ready as `set server ... state` does them."""
    maint, drain = word == "maint", word == "drain"
    if (srv.admin_maint and srv.via_maint is None) == maint and srv.admin_drain == drain:
        return
    srv.admin_maint, srv.admin_drain = maint, drain
    srv.last_change = time.monotonic()
    if maint:
        srv.drop_idle()
    srv.backend.recalc()
