"""proxy/compression.py: HAProxy 2.6's choice of algorithm and of responses, its header
edits, and the body relay's encoders (the e2e test compares the same with HAProxy)."""
import zlib

import pytest

from edgestick.cfgsyntax import ConfigError
from edgestick.proxy import compression as comp
from edgestick.proxy import http1
from edgestick.proxy.config import load_config_text

BASE = """defaults
    mode http
    timeout connect 1s
    timeout client 1s
    timeout server 1s
"""


def plan(fe_lines="", be_lines="", defaults=""):
    cfg, _ = load_config_text(BASE + defaults + "frontend f\n    bind :20990\n" + fe_lines
                              + "    default_backend b\nbackend b\n    server s 127.0.0.1:1\n"
                              + be_lines)
    f, b = cfg.frontends["f"].compression, cfg.backends["b"].compression
    return comp.Plan(f, b) if (f or b) else None


def request(*headers, method="GET", version=11):
    m = http1.Message()
    m.method, m.target, m.version = method, "/", version
    m.headers = [[k.lower(), v] for k, v in headers]
    return m


def response(*headers, status=200, length=10, framing=http1.LENGTH):
    m = http1.Message()
    m.status, m.reason, m.framing, m.length = status, "OK", framing, length
    m.headers = [[k.lower(), v] for k, v in headers]
    return m


@pytest.mark.parametrize("value,q", [
    ("gzip", 1000), ("gzip;q=0.5", 500), ("gzip ; q=0.25", 250), ("gzip;q=0", 0),
    ("gzip;q=1.5", 1000), ("gzip;q=2", 1000), ("gzip;q=abc", 1000), ("gzip;Q=0", 1000),
    ("gzip;level=1;q=0.7", 700), ("gzip;q", 1000), ("gzip x;q=0", 1000), ("gzip;q=0.123", 123),
])
def test_qvalue(value, q):
    assert comp._qvalue(value, comp._TOKEN.match(value).end()) == q


def test_algorithm_choice():
    p = plan("    compression algo gzip deflate\n")
    assert p.algos == ("deflate", "gzip")          # last configured first, as HAProxy
    pick = lambda *ae: (p.select(request(*[("Accept-Encoding", v) for v in ae])) or
                        comp.Choice(p, "none")).algo
    assert pick("gzip") == "gzip"
    assert pick("*") == "deflate"
    assert pick("gzip;q=0.5, deflate;q=0.6") == "deflate"
    assert pick("deflate;q=0.6", "gzip;q=0.6") == "deflate"    # must beat, not equal
    assert pick("GZIP") == "gzip"
    assert pick("x-gzip") == "none"
    assert pick("gzip;q=0") == "none"
    assert pick() == "none"
    old = request(("Accept-Encoding", "gzip"), ("User-Agent", "Mozilla/4.0 (compatible)"))
    assert p.select(old) is None


def test_backend_wins_identity_fallback_and_offload():
    p = plan("    compression algo gzip\n    compression offload\n",
             "    compression algo identity\n    compression type text/\n")
    assert p.algos == ("identity",) and p.types == ("text/",) and p.offload
    req = request(("Accept-Encoding", "gzip"), ("X", "1"))
    assert p.select(req).algo == "identity"         # gzip is not the backend's
    assert req.get("accept-encoding") == "gzip"     # fallback: the header stays
    req = request(("Accept-Encoding", "identity"), ("Accept-Encoding", "br"))
    assert p.select(req).algo == "identity"
    assert req.get("accept-encoding") is None       # chosen from it: every one removed


def test_defaults_inherited_offload_not():
    p = plan("    compression algo deflate\n",
             defaults="    compression algo gzip\n    compression offload\n")
    assert p.algos == ("gzip",) and not p.offload   # the backend's own (inherited) list
    cfg, warnings = load_config_text(BASE + "    compression offload\n")
    assert any("'offload' ignored in 'defaults' section" in w for w in warnings)


def test_response_rules():
    p = plan("    compression algo gzip\n    compression type text/html\n")
    ch = p.select(request(("Accept-Encoding", "gzip")))
    html = ("Content-Type", "text/html; charset=utf-8")
    assert ch.applies(request(), response(html))
    assert not ch.applies(request(version=10), response(html))
    old_server = response(html)
    old_server.version = 10
    assert not ch.applies(request(), old_server)
    assert not ch.applies(request(method="HEAD"), response(html))
    assert not ch.applies(request(), response(html, status=206))
    assert ch.applies(request(), response(html, status=203))
    assert not ch.applies(request(), response(html, length=0))
    assert ch.applies(request(), response(html, length=0, framing=http1.CHUNKED))
    assert not ch.applies(request(), response(html, framing=http1.UNTIL_CLOSE))
    assert not ch.applies(request(), response(html, ("Content-Encoding", "")))
    assert not ch.applies(request(), response(html, ("Cache-Control", "a, No-Transform ")))
    assert ch.applies(request(), response(html, ("Cache-Control", "no-transformx")))
    assert not ch.applies(request(), response(("Content-Type", "text/plain")))
    assert not ch.applies(request(), response())
    assert not ch.applies(request(), response(("Content-Type", "Multipart/x")))
    assert ch.applies(request(), response(html, ("ETag", 'W/"x"')))
    assert not ch.applies(request(), response(html, ("ETag", "x")))
    assert not ch.applies(request(), response(html, ("ETag", '"a"'), ("ETag", '"b"')))


def test_head_rewrite():
    p = plan("    compression algo gzip\n")
    ch = p.select(request(("Accept-Encoding", "gzip")))
    r = response(("Content-Type", "text/plain"), ("Content-Length", "10"), ("ETag", '"e"'),
                 ("Vary", "Accept-Encoding"))
    ch.rewrite_head(r)
    assert r.headers == [["content-type", "text/plain"], ["etag", 'W/"e"'],
                         ["vary", "Accept-Encoding"], ["transfer-encoding", "chunked"],
                         ["vary", "Accept-Encoding"], ["content-encoding", "gzip"]]


@pytest.mark.parametrize("algo,decode", [
    ("gzip", lambda b: zlib.decompress(b, 31)), ("deflate", zlib.decompress),
    ("raw-deflate", lambda b: zlib.decompress(b, -15)), ("identity", lambda b: b)])
def test_encoders(algo, decode):
    ch = comp.Choice(plan(f"    compression algo {algo}\n"), algo)
    enc = ch.encoder()
    pieces = [b"hello " * 100, b"", b"world" * 7]
    if enc is None:
        out = b"".join(pieces)
    else:
        out = b"".join(enc.compress(x) + enc.flush(zlib.Z_SYNC_FLUSH) for x in pieces)
        out += enc.flush(zlib.Z_FINISH)
    assert decode(out) == b"".join(pieces)


@pytest.mark.parametrize("text,message", [
    ("    compression\n", "expects 'algo', 'type' or 'offload'"),
    ("    compression algo\n", "expects <algorithm>."),
    ("    compression algo gzip br\n", "'br' is not a supported algorithm."),
    ("    compression type\n", "expects <type>."),
])
def test_parse_errors(text, message):
    with pytest.raises(ConfigError) as e:
        load_config_text(BASE + "frontend f\n    bind :20990\n" + text)
    assert str(e.value).endswith(f"'compression': {message}")


def test_global_settings():
    cfg, warnings = load_config_text("global\n    tune.comp.maxlevel 6\n    maxcomprate 2\n"
                                     "    maxcompcpuusage 90\n" + BASE
                                     + "    compression algo gzip\nbackend b\n")
    c = cfg.backends["b"].compression
    assert (c.level, c.rate_limit) == (6, 2048)
    assert any("maxcompcpuusage" in w and "not enforced" in w for w in warnings)
    with pytest.raises(ConfigError):
        load_config_text("global\n    tune.comp.maxlevel 10\n")


def test_maxcomprate_stops_compression_over_the_limit():
    cfg, _ = load_config_text("global\n    maxcomprate 1\n" + BASE
                              + "    compression algo gzip\nbackend b\n")
    p = comp.Plan(None, cfg.backends["b"].compression)
    ch = p.select(request(("Accept-Encoding", "gzip")))
    before = comp._RATE_IN.read()
    assert ch.applies(request(), response(("Content-Type", "text/plain"))) == (before <= 1024)
    comp._RATE_IN.update(5000)          # 5000 bytes compressed this second: over 1 kB/s
    assert not ch.applies(request(), response(("Content-Type", "text/plain")))
