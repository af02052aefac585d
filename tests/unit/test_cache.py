"""proxy/cache.py's rules, each against what HAProxy 2.6.12 was seen doing (the values
below were read from its `show cache` and responses): the key, what is cacheable, the
freshness, Vary's secondary keys, the entry's size, LRU eviction, `show cache`."""
import hashlib
import struct
import types

import pytest

from edgestick.cfgsyntax import ConfigError
from edgestick.proxy import cache as C
from edgestick.proxy import http1
from edgestick.proxy.config import load_config_text


def response(head: str, body: bytes = b"") -> http1.Message:
    raw = head.replace("\n", "\r\n").encode() + b"\r\n" + body
    return http1.parse_response(bytearray(raw), 0, "GET")


def request(text: str) -> http1.Message:
    return http1.parse_request(bytearray(text.replace("\n", "\r\n").encode() + b"\r\n"))


def test_key_is_sha1_of_https_host_and_target():
    req = request("GET /a?hdr=Cache-Control:%20max-age%3D30 HTTP/1.1\nHost: 127.0.0.1:18080\n")
    digest = C.cache_key(req)
    assert struct.unpack("<I", digest[:4])[0] == 2067773084     # HAProxy's show cache hash
    assert C.cache_key(request("GET /a HTTP/1.1\nX: y\n")) is None     # no Host: no key
    absolute = request("GET http://h/x HTTP/1.1\nHost: h\n")
    assert C.cache_key(absolute) == hashlib.sha1(b"http://h/x").digest()


@pytest.mark.parametrize("headers,expected", [
    ("cache-control: max-age=5", (True, True)),
    ("", (False, True)),                                   # no freshness, no validator
    ('etag: "x"', (True, True)),
    ("last-modified: Wed, 21 Oct 2015 07:28:00 GMT", (True, True)),
    ("expires: garbage", (True, True)),                    # (stored, already stale)
    ("cache-control: public", (False, True)),
    ("cache-control: max-age=5, private", (False, False)),
    ("cache-control: PRIVATE\ncache-control: max-age=5", (False, False)),
    ('cache-control: private="x", max-age=5', (True, True)),   # not the whole value
    ("cache-control: max-age=0, s-maxage=10", (False, False)),
    ('cache-control: max-age=5, no-cache="Set-Cookie"', (True, False)),
    ("cache-control: max-age=5\npragma: no-cache", (False, False)),
    ("cache-control: max-age=5\npragma: no-cache, x", (True, True)),
    ("cache-control: max-age=5\npragma: x\npragma: no-cache", (True, True)),   # the first only
    ("set-cookie: a=b\ncache-control: max-age=5", (True, True)),
])
def test_response_cacheability(headers, expected):
    resp = response("HTTP/1.1 200 OK\ncontent-length: 0\n" + (headers + "\n" if headers else ""))
    assert C._response_cacheable(resp, C.Txn()) == expected


def test_public_makes_a_no_store_request_cacheable_again():
    txn = C.Txn()
    txn.cacheable = txn.cook = False            # (Authorization or no-store in the request)
    resp = response("HTTP/1.1 200 OK\ncache-control: public, max-age=5\ncontent-length: 0\n")
    assert C._response_cacheable(resp, txn) == (True, True)


@pytest.mark.parametrize("headers,expected", [
    ("cache-control: max-age=7", (7, 7)),
    ("cache-control: s-maxage=8, max-age=3", (8, 8)),
    ('cache-control: max-age="9"', (9, 9)),
    ("cache-control: max-age=500", (100, 500)),             # capped by the cache's max-age
    ("cache-control: max-age=abc", (-1, 0)),
    ("cache-control: max-age=-1", (-1, 0)),
    ("expires: Wed, 21 Oct 2015 07:28:00 GMT", (0, 0)),
    ("expires: garbage", (0, 0)),
    ("expires: Wed, 21 Oct 2015 07:28:40 GMT", (40, 40)),   # 40 s from now
    ('etag: "x"', (100, 0)),
])
def test_freshness(headers, expected):
    spec = C.CacheSpec("c", None, maxage=100)
    now = 1445412480                                        # Wed, 21 Oct 2015 07:28:00
    assert C._calc_maxage(response(f"HTTP/1.1 200 OK\n{headers}\n").headers, spec, now) == expected


@pytest.mark.parametrize("values,expected", [
    (None, 0xFFFFFFFF),
    (["gzip"], C.IDENTITY | C.GZIP),
    (["GZIP, br"], C.IDENTITY | C.GZIP | C.BR),
    (["gzip;q=0"], C.IDENTITY),
    (["identity;q=0"], 0),
    (["*"], 0xFFFFFFFF),
    (["*, gzip;q=0"], 0xFFFFFFFF & ~C.GZIP),
    (["foo"], C.IDENTITY | C.OTHER),
    (["gz"], C.IDENTITY),                                   # 2.6: starts like gzip, bit 0
    ([""], C.IDENTITY),
    (["x-gzip;q=0.5"], C.IDENTITY | C.GZIP),
    ([", ".join(["gzip"] * 16)], None),                     # 16 values: refused
])
def test_accept_encoding_bitmap(values, expected):
    headers = [["accept-encoding", v] for v in values] if values is not None else []
    assert C._accept_encoding_bitmap(headers) == expected


def test_secondary_keys_and_matching():
    headers = [["accept-encoding", "gzip"], ["referer", "http://a/"]]
    key = C.secondary_key(headers, C.VARY_ACCEPT_ENCODING | C.VARY_REFERER)
    assert key.hex() == "01010000ac284bcd"                  # HAProxy's vary: bytes
    assert C.secondary_key(headers, C.VARY_REFERER).hex() == "00000000ac284bcd"
    stored_gzip = struct.pack("<II", C.GZIP, 0)
    assert C._keys_match(stored_gzip, struct.pack("<II", C.IDENTITY | C.GZIP, 0))
    assert not C._keys_match(stored_gzip, struct.pack("<II", C.IDENTITY | C.BR, 0))
    assert not C._keys_match(struct.pack("<II", C.OTHER, 0), struct.pack("<II", 0xFFFFFFFF, 0))
    # 2.6 stores the response's encoding even when it varies on referer alone: such an
    # entry never matches a request's key (its encoding part is left at 0)
    assert not C._keys_match(struct.pack("<II", C.IDENTITY, 7), struct.pack("<II", 0, 7))


def test_http_dates():
    assert C.parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT") == 1445412480
    assert C.parse_http_date("Wednesday, 21-Oct-15 07:28:00 GMT") == 1445412480
    assert C.parse_http_date("Wed Oct 21 07:28:00 2015") == 1445412480
    assert C.parse_http_date("21 Oct 2015") is None


class _Frontend:
    """What cache-use counts its lookups on."""


def _store(cache_spec, head: str, body: bytes, method="GET"):
    """The store path as the frontend drives it: cache-use's key, cache-store's head,
    the body through the Store."""
    req = request(f"{method} /a?hdr=Cache-Control:%20max-age%3D30 HTTP/1.1\n"
                  "Host: 127.0.0.1:18080\n")
    ctx = types.SimpleNamespace(version=11, method=method, fe=None)
    rule = types.SimpleNamespace(value=cache_spec)
    C.use(rule, ctx, req, _Frontend(), None)
    resp = response(head, body)
    C.store_head(rule, ctx, resp)
    if ctx.cache.store is not None:
        ctx.cache.store.add(body)
        ctx.cache.store.end()
    return resp


def test_entry_size_as_show_cache_prints_it():
    spec = C.CacheSpec("c1", None, maxage=100, maxblocks=1024, maxobjsz=4096)
    spec.store = C.Cache(spec)
    _store(spec, "HTTP/1.1 200 OK\ncontent-type: text/plain\ncontent-length: 109\n"
                 "cache-control: max-age=30\nx-server: s1\n", b"x" * 109)
    lines = C.show_cache([spec.store], 0)
    assert "hash:2067773084 vary:0x0000000000000000 size:355 (1 blocks), refcount:0, " \
           "expire:" in lines                                 # as HAProxy printed it
    # an Age header is taken off the response (its block left unused: 4 bytes more)
    spec.store = C.Cache(spec)
    resp = _store(spec, "HTTP/1.1 200 OK\ncontent-type: text/plain\ncontent-length: 109\n"
                        "age: 5\ncache-control: max-age=30\nx-server: s1\n", b"x" * 109)
    assert resp.get("age") is None
    assert "size:359 (1 blocks)" in C.show_cache([spec.store], 0)
    # over max-object-size by Content-Length: not stored
    spec.store = C.Cache(spec)
    _store(spec, "HTTP/1.1 200 OK\ncontent-length: 5000\ncache-control: max-age=30\n", b"x" * 5000)
    assert "hash:" not in C.show_cache([spec.store], 0)


def test_unsafe_method_drops_the_entry():
    spec = C.CacheSpec("c1", None, maxage=100, maxblocks=1024, maxobjsz=4096)
    spec.store = C.Cache(spec)
    _store(spec, "HTTP/1.1 200 OK\ncontent-length: 1\ncache-control: max-age=30\n", b"x")
    assert "hash:" in C.show_cache([spec.store], 0)
    _store(spec, "HTTP/1.1 500 Oops\ncontent-length: 1\n", b"x", "POST")
    assert "hash:" in C.show_cache([spec.store], 0)           # (not a success)
    _store(spec, "HTTP/1.1 201 Created\ncontent-length: 1\n", b"x", "POST")
    assert "hash:" not in C.show_cache([spec.store], 0)


def _entry(cache, n: int, size: int = 3000, now: int = 0, signature: int = 0,
           secondary: bytes = b"\0" * 8):
    e = C.Entry(hashlib.sha1(str(n).encode()).digest(), signature, secondary)
    assert cache.reserve(e, 0)
    if not cache.insert(e, now):
        cache.release(e, False)
        return None
    assert cache.reserve(e, size)
    e.complete, e.expire = True, now + 100
    cache.release(e, True)
    return e


def test_least_recently_used_blocks_are_reused_first():
    spec = C.CacheSpec("c", None, maxblocks=16, maxobjsz=8000)
    cache = C.Cache(spec)
    entries = [_entry(cache, i) for i in range(4)]           # 4 blocks each: full
    assert all(e.blocks == 4 for e in entries) and cache.free_head == 0
    cache.touch(entries[0])                                    # a hit refreshes it
    _entry(cache, 4)
    assert entries[0].indexed and not entries[1].indexed
    big = _entry(cache, 5, size=6000)                          # 6 blocks: two entries go
    assert not entries[2].indexed and not entries[3].indexed and big.blocks == 6
    assert cache.free_head == 2                                # the rest of the last row
    assert cache.available() == 16


def test_max_secondary_entries():
    spec = C.CacheSpec("c", None, maxblocks=64, maxobjsz=8000, max_secondary=2)
    cache = C.Cache(spec)
    a = _entry(cache, 1, 100, signature=1, secondary=b"\1" + b"\0" * 7)
    b = _entry(cache, 1, 100, signature=1, secondary=b"\2" + b"\0" * 7)
    c = _entry(cache, 1, 100, signature=1, secondary=b"\4" + b"\0" * 7)
    assert a is not None and b is not None and c is None
    assert len(cache.index[a.key]) == 2


def test_show_cache_loses_the_line_that_overflows_the_buffer():
    """2.6's `show cache` moves past an entry line that did not fit in the output
    buffer: one line in each 16384 bytes is lost (seen with 181 entries)."""
    spec = C.CacheSpec("small", None, maxblocks=1024, maxobjsz=8000)
    cache = C.Cache(spec)
    for i in range(200):
        _entry(cache, i, 100)
    text = C.show_cache([cache], 0)
    assert text.count("hash:") == 199
    assert len(text) <= 2 * C.CLI_BUFFER


@pytest.mark.parametrize("section,message", [
    ("cache\n    total-max-size 1\n", "'cache' expects a <name> argument"),
    ("cache c1\n    max-age 10\n", "Size not specified for cache 'c1'"),
    ("cache c1\n    total-max-size 1\n    max-object-size 600000\n",
     '"max-object-size" is limited to an half of "total-max-size" => 524288'),
    ("cache c1\n    total-max-size 5000\n", '"total-max-size" (5000) must not be greater than 4095'),
    ("cache c1\n    total-max-size 1\n    max-secondary-entries 0\n",
     "max-secondary-entries wrong value '0'"),
    ("cache c1\n    total-max-size 1\n    foo\n", "unknown keyword 'foo' in 'cache' section"),
])
def test_section_errors(section, message):
    with pytest.raises(ConfigError) as e:
        load_config_text(section, "c.cfg")
    assert message in str(e.value)


def test_section_defaults_and_warnings():
    cfg, warnings = load_config_text("cache c1\n    total-max-size 2\n    max-age\n"
                                     "    process-vary maybe\n", "c.cfg")
    spec = cfg.caches["c1"]
    assert (spec.maxblocks, spec.maxobjsz, spec.maxage, spec.process_vary,
            spec.max_secondary) == (2048, 8192, 0, False, 10)
    assert len(warnings) == 2 and "c.cfg:3" in warnings[0]
