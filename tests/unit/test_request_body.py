"""What rules see of a request body (proxy/request_body.py): the numbers HAProxy 2.6.12
gave for the same bytes (req.body_len / req.body_size, probed with `option
http-buffer-request` and a `return` rule printing them)."""
from edgestick.proxy import http1
from edgestick.proxy.request_body import _params, view, whole


def _req(raw: bytes):
    buf = bytearray(raw)
    req = http1.parse_request(buf)
    del buf[:req.head_len]
    return req, buf


def cl(n: int, sent: int, extra: bytes = b""):
    return _req(b"POST /info HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n%s\r\n" % (n, extra)
                + b"z" * sent)


def chunked(body: bytes):
    return _req(b"POST /info HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" + body)


def test_content_length_body():
    req, buf = cl(22, 8)
    v = view(buf, req)
    assert (len(v.data), v.size, v.complete, v.full) == (8, 22, False, False)
    req, buf = cl(22, 22)
    assert view(buf, req).complete and whole(buf, req)


def test_content_length_larger_than_the_buffer():
    for n, seen in ((15000, 15000), (15300, 15210), (20000, 15210), (100000, 15209)):
        req, buf = cl(n, n)
        v = view(buf, req)
        assert (len(v.data), v.size) == (seen, n)
        assert v.full == (n > seen) and v.complete == (n == seen) and whole(buf, req) == (n == seen)
    # every header takes its share of the buffer (10 more: 140 bytes less)
    extra = b"".join(b"X-H%d: v%d\r\n" % (i, i) for i in range(10))
    req, buf = cl(20000, 20000, extra)
    assert len(view(buf, req).data) == 15070


def test_chunked_body():
    req, buf = chunked(b"3\r\nabc\r\n2\r\nde")
    v = view(buf, req)
    assert (v.data, v.size, v.complete) == (b"abcde", 5, False)
    req, buf = chunked(b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
    assert view(buf, req).complete and view(buf, req).data == b"abcde"
    req, buf = chunked(b"3\r\nabc\r\n0\r\nX-T: 1\r\n\r\n")     # trailers
    assert view(buf, req).complete


def test_chunked_larger_than_the_buffer():
    for size, seen, announced in ((100, 15200, 15300), (1000, 15197, 16000),
                                  (4000, 15197, 16000), (16000, 15197, 16000),
                                  (1, 15205, 15206), (7, 15204, 15211), (10, 15200, 15210),
                                  (333, 15197, 15318)):
        body = b"y" * 40000
        raw = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + size]), body[i:i + size])
                       for i in range(0, len(body), size)) + b"0\r\n\r\n"
        req, buf = chunked(raw)
        v = view(buf, req)
        assert (len(v.data), v.size, v.full, v.complete) == (seen, announced, True, False)


def test_body_params_as_haproxy():
    cases = {b"a&b=2": (None, "2"), b"x=1&a=&b=2&b=3": ("", "1"), b"=5&a=1": ("1", "5"),
             b"a=1=2&b": ("1=2", "1=2"), b"b=1;a=2": ("2", "1"), b"": (None, None)}
    for body, (a, first) in cases.items():
        assert next(_params(body, "a"), None) == a, body
        assert next(_params(body, None), None) == first, body
    assert list(_params(b"b=1;a=2&c", None)) == ["1", "2"]


def test_chunks_resume_where_they_stopped():
    """The wait feeds the same decoder as bytes come: one-byte chunks one at a time end
    where the whole body at once does."""
    from edgestick.proxy.request_body import Chunks
    req, buf = chunked(b"")
    chunks = Chunks(req, False)
    while not chunks.full:
        buf += b"1\r\nx\r\n"
        chunks.feed(buf)
    assert chunks.got == len(view(buf, req).data) == 15205
