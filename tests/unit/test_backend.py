"""proxy/backend.py pieces with HAProxy's arithmetic: health counter, weighted map,
`balance source` hash, cookie dates, cacheability."""
from edgestick.proxy import backend, http1, model


def _srv(name, weight=1, rise=2, fall=3, check=True):
    return model.Server(name, "127.0.0.1", 1, id=int(name[1:]), weight=weight, check=check,
                        rise=rise, fall=fall)


def _backend(*servers, balance="roundrobin"):
    return backend.Backend(model.Proxy("bk", "backend", servers=list(servers), balance=balance))


def test_health_counter_like_haproxy():
    b = _backend(_srv("s1", rise=2, fall=3))
    s = b.servers[0]
    assert s.state == "UP" and s.health == 2          # starts UP, "down at first failure"
    backend.apply_check_result(s, False)
    assert s.state == "DOWN" and s.health == 0
    backend.apply_check_result(s, True)
    assert s.state == "DOWN"
    backend.apply_check_result(s, True)               # rise 2
    assert s.state == "UP" and s.health == 4          # top: rise + fall - 1
    for expected in ("UP", "UP", "DOWN"):             # fall 3 from the top
        backend.apply_check_result(s, False)
        assert s.state == expected


def test_weighted_map_and_round_robin():
    b = _backend(_srv("s1"), _srv("s2"), _srv("s3"))
    assert [b.pick(None).name for _ in range(6)] == ["s1", "s2", "s3"] * 2
    b.servers[1].op_up = False
    b.recalc()
    assert [b.pick(None).name for _ in range(4)] == ["s1", "s3", "s1", "s3"]
    m = backend._weighted_map(_backend(_srv("s1", 2), _srv("s2", 1)).servers)
    assert [s.name for s in m] == ["s1", "s1", "s2"]          # as HAProxy's static-rr


def test_fwrr_order_like_haproxy():
    """Sequences observed on HAProxy 2.6 for these weights."""
    for weights, expected in (
            ((3, 1, 2), "s1 s3 s1 s2 s1 s3 s1 s3 s1 s2 s1 s3"),
            ((2, 1), "s1 s1 s2 s1 s1 s2"),
            ((5, 3, 1), "s1 s1 s2 s1 s3 s2 s1 s1 s2 s1 s1 s2 s1 s3 s2 s1 s1 s2"),
            ((1, 1, 1), "s1 s2 s3 s1 s2 s3")):
        b = _backend(*[_srv(f"s{i + 1}", w) for i, w in enumerate(weights)])
        got = [b.pick(None).name for _ in range(len(expected.split()))]
        assert got == expected.split()


def test_source_hash_is_the_address_xor():
    assert backend._source_hash("127.0.0.1", 3) == 0x7F000001
    assert backend._source_hash("127.0.0.1", 1) == 0
    assert backend._source_hash("::1", 2) == 1
    b = _backend(_srv("s1"), _srv("s2"), _srv("s3"), balance="source")
    assert b.pick("127.0.0.1").name == ["s1", "s2", "s3"][0x7F000001 % 3]


def test_cookie_dates():
    # b-transcript: 1795764112 -> (t + 3) >> 2 = 448941028 -> "awkvk"
    assert backend.encode_cookie_date(1795764112) == "awkvk"
    assert backend.decode_cookie_date("awkvk") == 448941028 << 2


def test_cacheability_rules():
    req = http1.parse_request(b"GET / HTTP/1.1\r\n\r\n")
    post = http1.parse_request(b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n")

    def resp(*hdrs, status=200):
        return http1.parse_response(
            ("HTTP/1.1 %d X\r\n" % status + "".join(h + "\r\n" for h in hdrs) + "\r\n").encode(),
            0, "GET")
    assert not backend.response_cacheable(req, resp())          # 2.6.12: needs freshness
    assert backend.response_cacheable(req, resp("Last-Modified: x"))
    assert backend.response_cacheable(req, resp("Cache-Control: max-age=60"))
    assert not backend.response_cacheable(req, resp("Cache-Control: no-cache"))
    assert not backend.response_cacheable(post, resp("Last-Modified: x"))
    assert not backend.response_cacheable(req, resp("ETag: 1", status=302))
