"""Fetches on the request's first bytes (HAProxy's payload.c): what `tcp-request content`
rules of a TCP frontend read while `tcp-request inspect-delay` holds the connection.

The TCP engine (proxy/tcp_mode.py) runs rules with a TcpContext carrying
  payload      the bytes received from the client so far (not yet sent to a server)
  final        True once no more bytes can change a verdict (delay over, client closed,
               buffer full); until then a fetch lacking data, or whose value may still
               grow, sets
  may_change   which turns a condition's non-match into HAProxy's "missing data": the
               rules wait for more bytes (acl.py's condition.tri)
Any other context (HTTP requests) has no payload: these fetches give no sample there.
"""
from __future__ import annotations

from .sample import FETCHES, FetchDef, SampleError

BUFSIZE = 16384         # HAProxy's tune.bufsize
MAXREWRITE = 1024       # tune.maxrewrite: a request buffer is full at bufsize - maxrewrite


def _int_args(name: str, args: list, need: int, most: int) -> list[int]:
    if len(args) < need:
        raise SampleError(f"fetch method '{name}' expects at least {need} argument(s)")
    if len(args) > most:
        raise SampleError(f"fetch method '{name}' expects at most {most} argument(s)")
    out = []
    for i, a in enumerate(args):
        try:
            v = int(a)
        except ValueError:
            raise SampleError(f"invalid arg {i + 1} in fetch method '{name}' : expects an "
                              f"integer, got '{a}'") from None
        if v < 0:
            raise SampleError(f"invalid arg {i + 1} in fetch method '{name}' : expects a "
                              "positive integer")
        out.append(v)
    return out


def _wants_more(ctx) -> None:
    if not ctx.final:
        ctx.may_change = True


def _len_build(args, cfg):
    if args:
        raise SampleError("fetch method 'req.len' does not take any argument")

    def req_len(ctx):
        data = getattr(ctx, "payload", None)
        if data is None:
            return None
        _wants_more(ctx)
        return len(data)
    return req_len


def _payload_build(args, cfg):
    """req.payload(offset,length): `length` bytes from `offset` (0: to the end of what
    arrived); no sample until they have all arrived."""
    offset, length = _int_args("req.payload", args, 2, 2)
    never = length > BUFSIZE or offset + length > BUFSIZE

    def req_payload(ctx):
        data = getattr(ctx, "payload", None)
        if data is None or never:
            return None
        if offset + length > len(data):
            _wants_more(ctx)
            return None
        if not length:
            _wants_more(ctx)
            return bytes(data[offset:])
        return bytes(data[offset:offset + length])
    return req_payload


def client_hello(data) -> tuple[int, bytes] | None:
    """(handshake type, the record's bytes that arrived) of a TLS record at the start
    of `data`, once its whole first handshake message arrived (HAProxy's
    smp_fetch_ssl_hello_type); None: not a TLS handshake. Raises EOFError when too
    few bytes arrived to tell."""
    if not data:
        raise EOFError
    if not (0x14 <= data[0] <= 0x17 or data[0] == 0xFF):
        return None
    if len(data) < 9:
        raise EOFError
    if data[1] < 3 or ((data[3] << 8) | data[4]) < 4:
        return None
    hs_len = (data[6] << 16) | (data[7] << 8) | data[8]
    if len(data) < hs_len + 9:
        raise EOFError
    rec_len = (data[3] << 8) | data[4]
    return data[5], bytes(data[5:5 + rec_len])


def _sni(data) -> str | None:
    """The server name of a ClientHello as HAProxy's smp_fetch_ssl_hello_sni reads it."""
    if len(data) < 6:
        raise EOFError
    if data[0] != 0x16 or data[1] < 3 or data[5] != 1:     # a ClientHello record
        return None
    rec_len = (data[3] << 8) | data[4]
    if len(data) < 5 + rec_len:
        raise EOFError
    msg = bytes(data[5:5 + rec_len])
    if len(msg) < 4 + 2 + 32 + 1:
        return None
    hs_len = (msg[1] << 16) | (msg[2] << 8) | msg[3]
    end = min(len(msg), 4 + hs_len)
    pos = 4 + 2 + 32
    pos += 1 + msg[pos]                                   # session id
    if pos + 2 > end:
        return None
    pos += 2 + ((msg[pos] << 8) | msg[pos + 1])           # cipher suites
    if pos + 1 > end:
        return None
    pos += 1 + msg[pos]                                   # compression methods
    if pos + 2 > end:
        return None
    ext_end = min(end, pos + 2 + ((msg[pos] << 8) | msg[pos + 1]))
    pos += 2
    while pos + 4 <= ext_end:
        etype = (msg[pos] << 8) | msg[pos + 1]
        elen = (msg[pos + 2] << 8) | msg[pos + 3]
        pos += 4
        if pos + elen > ext_end:
            return None
        if etype == 0 and elen >= 5:                      # server_name: the first name
            name_type = msg[pos + 2]
            nlen = (msg[pos + 3] << 8) | msg[pos + 4]
            if name_type != 0 or 5 + nlen > elen:
                return None
            return msg[pos + 5:pos + 5 + nlen].decode("latin-1")
        pos += elen
    return None


def _sni_build(args, cfg):
    if args:
        raise SampleError("fetch method 'req.ssl_sni' does not take any argument")

    def req_ssl_sni(ctx):
        data = getattr(ctx, "payload", None)
        if data is None:
            return None
        try:
            return _sni(data)
        except EOFError:
            _wants_more(ctx)
            return None
    return req_ssl_sni


def _hello_type_build(args, cfg):
    if args:
        raise SampleError("fetch method 'req.ssl_hello_type' does not take any argument")

    def req_ssl_hello_type(ctx):
        data = getattr(ctx, "payload", None)
        if data is None:
            return None
        try:
            got = client_hello(data)
        except EOFError:
            _wants_more(ctx)
            return None
        return None if got is None else got[0]
    return req_ssl_hello_type


for _names, _out, _build in ((("req.len", "req_len"), "int", _len_build),
                             (("req.payload", "payload"), "bin", _payload_build),
                             (("req.ssl_sni", "req_ssl_sni"), "str", _sni_build),
                             (("req.ssl_hello_type", "req_ssl_hello_type"), "int",
                              _hello_type_build)):
    for _n in _names:
        FETCHES[_n] = FetchDef(_n, _out, _build, {"bin": "bin", "int": "int"}.get(_out, "str"))
