"""`option tcp-check` health checks as HAProxy 2.6 runs them (src/tcpcheck.c): a sequence
of `tcp-check connect|send|send-binary|expect|comment` steps on one connection (a new one
at each `connect`), and HAProxy's verdicts and messages for `show stat` (check_status,
last_chk): L7OK "(tcp-check)" when every step passed; L7RSP "TCPCHK did not match content
'P' at step N" when the server closed without the pattern; L7TOUT " at step N of
tcp-check (expect string 'P')" when it ran out of time; L4CON/SOCKERR with the system's
words. Steps are numbered from 1 over all the rules, comments included; a rule's comment
(or the last `tcp-check comment` before it) ends the message."""
from __future__ import annotations

import asyncio
import binascii
import os
import re
import socket
from dataclasses import dataclass
from typing import Optional

EXPECT_KINDS = ("string", "rstring", "binary", "rbinary")


@dataclass
class Step:
    kind: str                           # connect | send | expect | comment
    data: bytes = b""                   # send: the bytes; expect string/binary: the pattern
    regex: Optional[re.Pattern] = None  # expect rstring/rbinary
    match: str = ""                     # expect: string | rstring | binary | rbinary
    pattern: str = ""                   # as written (the messages name it)
    negate: bool = False
    min_recv: int = 0
    port: Optional[int] = None          # connect
    addr: Optional[str] = None
    comment: Optional[str] = None

    @property
    def label(self) -> str:
        """How HAProxy names the step in its messages."""
        if self.kind == "connect":
            return "connect" + (f" port {self.port}" if self.port else "")
        if self.kind == "expect":
            return f"expect {self.match} '{self.pattern}'"      # ('!' unsaid, as HAProxy)
        return self.kind


def parse_line(line, words) -> Step:
    """One `tcp-check` line (words after the keyword); ConfigError on a bad one."""
    if not words:
        raise line.error("'tcp-check' expects 'comment', 'connect', 'send', 'send-binary' "
                         "or 'expect'.")
    sub, args = words[0], list(words[1:])
    comment = None
    if "comment" in args[:-1] and sub != "comment":
        i = args.index("comment")
        comment = args[i + 1]
        del args[i:i + 2]
    if sub == "comment":
        if len(args) != 1:
            raise line.error("'tcp-check comment' expects a string as argument.")
        return Step("comment", comment=args[0])
    if sub == "connect":
        step = Step("connect", comment=comment)
        i = 0
        while i < len(args):
            a = args[i]
            if a == "port" and i + 1 < len(args) and args[i + 1].isdigit():
                step.port = int(args[i + 1])
                i += 2
            elif a == "addr" and i + 1 < len(args):
                step.addr = args[i + 1]
                i += 2
            elif a in ("default", "linger"):
                i += 1
            else:
                raise line.error(f"'tcp-check connect' option '{a}' is not supported by "
                                 "edgestick (supported: port, addr, default, linger, comment)")
        return step
    if sub in ("send", "send-binary"):
        if len(args) != 1:
            what = "string" if sub == "send" else "hexadecimal string"
            raise line.error(f"'tcp-check {sub}' expects a {what} as argument.")
        if sub == "send":
            return Step("send", data=args[0].encode("latin-1"), comment=comment)
        try:
            return Step("send", data=binascii.unhexlify(args[0]), comment=comment)
        except (binascii.Error, ValueError):
            raise line.error(f"'tcp-check send-binary' : '{args[0]}' is not a hexadecimal "
                             "string.") from None
    if sub == "expect":
        step = Step("expect", comment=comment)
        while args and args[0] == "min-recv":
            if len(args) < 2 or not args[1].lstrip("-").isdigit():
                raise line.error("'tcp-check expect min-recv' expects an integer.")
            step.min_recv = int(args[1])
            args = args[2:]
        if args and args[0] == "!":
            step.negate, args = True, args[1:]
        if len(args) != 2 or args[0] not in EXPECT_KINDS:
            raise line.error("'tcp-check expect' : expects [min-recv N] [comment C] [!] "
                             "string|rstring|binary|rbinary <pattern> (other forms are not "
                             "supported by edgestick)")
        step.match, step.pattern = args
        try:
            if step.match == "string":
                step.data = step.pattern.encode("latin-1")
            elif step.match == "binary":
                step.data = binascii.unhexlify(step.pattern)
            else:
                step.regex = re.compile(step.pattern.encode("latin-1"), re.S)
        except (binascii.Error, ValueError, re.error) as e:
            raise line.error(f"'tcp-check expect {step.match}' : bad pattern "
                             f"'{step.pattern}': {e}") from None
        return step
    raise line.error(f"'tcp-check {sub}' is not supported by edgestick (supported: comment, "
                     "connect, send, send-binary, expect)")


def _found(step: Step, data: bytes) -> bool:
    if step.match in ("string", "binary"):
        return step.data in data
    if step.match == "rbinary":       # the regex reads the bytes as hexadecimal text
        return step.regex.search(binascii.hexlify(data).upper()) is not None
    return step.regex.search(data) is not None


async def run(steps: list[Step], host: str, port: int, connect_s: float,
              read_s: float) -> tuple[bool, str, Optional[int], str]:
    """Run the steps: (passed, check_status, check_code, last_chk)."""
    loop = asyncio.get_running_loop()
    sock: Optional[socket.socket] = None
    comment = None

    def where(i: int, step: Step) -> str:
        text = f" at step {i} of tcp-check ({step.label})"
        c = step.comment or comment
        return text + (f" comment: '{c}'" if c else "")

    async def connect(target_host: str, target_port: int):
        s = socket.socket(socket.AF_INET6 if ":" in target_host else socket.AF_INET,
                          socket.SOCK_STREAM)
        s.setblocking(False)
        try:
            await asyncio.wait_for(loop.sock_connect(s, (target_host, target_port)), connect_s)
        except BaseException:
            s.close()
            raise
        return s

    try:
        if not steps or steps[0].kind != "connect":
            try:
                sock = await connect(host, port)
            except (TimeoutError, asyncio.TimeoutError):
                return False, "L4TOUT", None, "at initial connection step of tcp-check"
            except OSError as e:
                return False, "L4CON", None, (f"{_strerror(e)} at initial connection step "
                                              "of tcp-check")
        data = b""
        for i, step in enumerate(steps, 1):
            if step.kind == "comment":
                comment = step.comment
                continue
            if step.kind == "connect":
                if sock is not None:
                    sock.close()
                    sock = None
                try:
                    sock = await connect(step.addr or host, step.port or port)
                except (TimeoutError, asyncio.TimeoutError):
                    return False, "L4TOUT", None, where(i, step).lstrip()
                except OSError as e:
                    return False, "L4CON", None, _strerror(e) + where(i, step)
                data = b""
                continue
            if step.kind == "send":
                try:
                    await loop.sock_sendall(sock, step.data)
                except OSError as e:
                    return False, "SOCKERR", None, _strerror(e) + where(i, step)
                continue
            # expect: read until the pattern shows, the server closes, or time runs out
            async def receive(data: bytes) -> tuple[bytes, bool]:
                """(what was received, whether the server closed)"""
                while True:
                    if len(data) >= step.min_recv and not step.negate and _found(step, data):
                        return data, False
                    if step.negate and _found(step, data):
                        return data, False
                    chunk = await loop.sock_recv(sock, 16384)
                    if not chunk:
                        return data, True
                    data += chunk
            try:
                data, closed = await asyncio.wait_for(receive(data), read_s)
            except (TimeoutError, asyncio.TimeoutError):
                return False, "L7TOUT", None, where(i, step)
            except OSError as e:
                return False, "SOCKERR", None, _strerror(e) + where(i, step)
            hit = _found(step, data)
            if step.negate and hit:
                return False, "L7RSP", None, (f"TCPCHK matched unwanted content "
                                              f"'{step.pattern}' at step {i}")
            if not step.negate and not hit:
                return False, "L7RSP", None, (f"TCPCHK did not match content "
                                              f"'{step.pattern}' at step {i}")
            if step.negate and not closed:
                return False, "L7TOUT", None, where(i, step)
            data = b""
        return True, "L7OK", 0, "(tcp-check)"
    finally:
        if sock is not None:
            sock.close()


def _strerror(e: OSError) -> str:
    return os.strerror(e.errno) if e.errno else str(e)
