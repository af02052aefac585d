"""Payload fetches (proxy/payload.py) and HAProxy's three-valued conditions (acl.py's
`cond.tri`), as tcp-request content rules of a TCP frontend evaluate them while
`inspect-delay` waits for data."""
import ssl

import pytest

from edgestick.cfgsyntax import ConfigError
from edgestick.proxy import config
from edgestick.proxy.acl import FAIL, MISS, PASS
from edgestick.proxy.tcp_mode import TcpContext

HEAD = """
defaults
    mode tcp
    timeout client 1s
    timeout server 1s
    timeout connect 1s
frontend f
    bind 127.0.0.1:1
    tcp-request inspect-delay 1s
"""
TAIL = """
    default_backend b
backend b
    server s 127.0.0.1:2
"""


def cond(text: str):
    cfg, _ = config.load_config_text(HEAD + f"    tcp-request content accept if {text}\n" + TAIL)
    return cfg.frontends["f"].tcp_request_content[0].cond


def ctx(data: bytes, final: bool = False, src: str = "127.0.0.1") -> TcpContext:
    c = TcpContext(src, 1000, "127.0.0.1", 1)
    c.payload, c.final, c.may_change = bytearray(data), final, False
    return c


def client_hello(name: str) -> bytes:
    tls_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    tls_ctx.check_hostname = False
    tls_ctx.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = tls_ctx.wrap_bio(incoming, outgoing, server_hostname=name)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


@pytest.mark.parametrize("text, data, final, want", [
    ("{ req.len ge 4 }", b"ab", False, MISS),       # may still grow
    ("{ req.len ge 4 }", b"ab", True, FAIL),
    ("{ req.len ge 4 }", b"abcd", False, PASS),
    ("{ req.len lt 4 }", b"", False, PASS),         # a match does not wait
    ("!{ req.len ge 4 }", b"ab", False, MISS),      # '!' keeps a miss a miss
    ("!{ req.len ge 4 }", b"ab", True, PASS),
    ("{ req.len ge 4 } || { src 127.0.0.1 }", b"", False, PASS),   # a later OR passes
    ("{ req.len ge 4 } || { src 10.0.0.1 }", b"", False, MISS),
    ("{ req.len ge 4 } { src 127.0.0.1 }", b"", False, MISS),      # AND stops at the miss
    ("{ src 10.0.0.1 } { req.len ge 4 }", b"", False, FAIL),       # ... or at a failure
    ("{ req.payload(0,3) -m bin 474554 }", b"GE", False, MISS),    # not all there yet
    ("{ req.payload(0,3) -m bin 474554 }", b"GE", True, FAIL),
    ("{ req.payload(0,3) -m bin 474554 }", b"GET /", False, PASS),
    ("{ req.payload(0,3) -m bin 474554 }", b"PUT /", False, FAIL),  # enough bytes: no wait
    ("{ req.payload(1,0) -m bin 4554 }", b"GE", False, MISS),      # length 0: to the end
    ("{ req.payload(1,0) -m bin 4554 }", b"GET", False, PASS),
    ("{ src 127.0.0.1 }", b"", False, PASS),
])
def test_three_valued_conditions(text, data, final, want):
    assert cond(text).tri(ctx(data, final)) == want


def test_unless_flips_pass_and_fail_keeps_miss():
    cfg, _ = config.load_config_text(HEAD + "    tcp-request content reject unless "
                                     "{ req.len ge 4 }\n" + TAIL)
    c = cfg.frontends["f"].tcp_request_content[0].cond
    assert c.tri(ctx(b"ab")) == MISS
    assert c.tri(ctx(b"ab", True)) == PASS
    assert c.tri(ctx(b"abcd")) == FAIL


def test_ssl_sni_and_hello_type_on_a_split_client_hello():
    hello = client_hello("www.example.test")
    sni = cond("{ req.ssl_sni -m str www.example.test }")
    hello_type = cond("{ req.ssl_hello_type 1 }")
    for cut in (0, 3, 8, 40, len(hello) - 1):
        assert sni.tri(ctx(hello[:cut])) == MISS, cut
        assert hello_type.tri(ctx(hello[:cut])) == MISS, cut
        assert sni.tri(ctx(hello[:cut], True)) == FAIL, cut
    assert sni.tri(ctx(hello)) == PASS
    assert hello_type.tri(ctx(hello)) == PASS
    assert sni.tri(ctx(b"GET / HTTP/1.1\r\n")) == FAIL        # not TLS: no wait
    assert hello_type.tri(ctx(b"GET / HTTP/1.1\r\n")) == FAIL


def test_payload_fetches_give_no_sample_outside_tcp_streams():
    from edgestick.proxy.sample import Context, compile_expr
    plain = Context("127.0.0.1", 1000, "127.0.0.1", 1)
    for text in ("req.len", "req.payload(0,4)", "req.ssl_sni", "req.ssl_hello_type"):
        assert compile_expr(text)(plain) is None
    assert compile_expr("req.payload(2,3)")(ctx(b"abcdefg", True)) == b"cde"
    assert compile_expr("req_len")(ctx(b"abc", True)) == 3


@pytest.mark.parametrize("expr", ["req.payload(0)", "req.payload(a,2)", "req.payload(-1,2)",
                                  "req.len(3)"])
def test_payload_argument_errors(expr):
    with pytest.raises(ConfigError, match="fetch method"):
        cond(f"{{ {expr} -m found }}")


def test_tcp_frontend_on_http_backend_is_refused():
    text = HEAD + "    default_backend h\nbackend h\n    mode http\n    server s 127.0.0.1:2\n"
    with pytest.raises(ConfigError, match="not supported by edgestick"):
        config.load_config_text(text)
