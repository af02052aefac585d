"""Error pages compared with HAProxy 2.6 byte for byte: `errorfile` (inherited from
defaults, the backend's before the frontend's), `errorloc`/`errorloc302`/`errorloc303`,
`http-errors` sections named by `errorfiles` (the last line for a status wins) and by
`deny|return ... errorfiles`, on keep-alive and closing connections (an errorfile without
Content-Length ends the connection)."""

import pytest

from proxy_harness import Backends, both, exchange_and_state, workdir

pytestmark = pytest.mark.haproxy

PAGES = {
    "e503.http": b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n"
                 b"Cache-Control: no-cache\r\n\r\ncustom 503 page\n",
    "e403.http": b"HTTP/1.1 403 Forbidden\r\ncontent-type: text/html\r\n\r\n<h1>go away</h1>\n",
    "e404.http": b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 10"
                 b"\r\n\r\nnot here!\n",
    # as Debian's /etc/haproxy/errors: HTTP/1.0 and its own Connection header
    "d503.http": b"HTTP/1.0 503 Service Unavailable\r\nCache-Control: no-cache\r\n"
                 b"Connection: close\r\nContent-Type: text/html\r\n\r\n<html><body><h1>503 "
                 b"Service Unavailable</h1>\nNo server is available.\n</body></html>\n",
    "s503.http": b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\n"
                 b"content-length: 8\r\n\r\nsection\n",
    "s403.http": b"HTTP/1.1 403 Forbidden\r\ncontent-type: text/plain\r\ncontent-length: 7"
                 b"\r\n\r\nsec403\n",
}

TEMPLATE = """
global
    nbthread 1

http-errors site
    errorfile 503 {DIR}/s503.http
    errorfile 403 {DIR}/s403.http

defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s
    timeout http-keep-alive 5s
    errorfile 503 {DIR}/e503.http

frontend fe
    bind 127.0.0.1:{FE}
    http-request deny if { path /deny }
    http-request deny errorfile {DIR}/e403.http if { path /deny-file }
    http-request return errorfile {DIR}/e404.http if { path /return-file }
    http-request deny deny_status 503 if { path /deny-503 }
    http-request return status 503 errorfiles site if { path /return-section }
    http-request deny deny_status 403 errorfiles site if { path /deny-section }
    use_backend bk_section if { path_beg /section }
    use_backend bk_loc if { path_beg /loc }
    use_backend bk_debian if { path_beg /debian }
    default_backend bk

backend bk
    errorfile 403 {DIR}/e403.http
    http-request deny if { path /backend-deny }

backend bk_section
    errorfiles site
    errorfile 403 {DIR}/e403.http
    http-request deny if { path /section/deny }

backend bk_debian
    errorfile 503 {DIR}/d503.http

backend bk_loc
    errorloc303 503 /maintenance
    errorloc 403 http://err.example.com/403.html
    http-request deny if { path /loc/deny }

frontend fe_loc
    bind 127.0.0.1:{FE2}
    errorloc302 503 http://err.example.com/503.html
    errorfiles site 503
    errorloc 403 /forbidden
    http-request deny if { path /deny }
    default_backend bk
"""

PATHS = ["/x", "/deny", "/deny-file", "/return-file", "/deny-503", "/return-section",
         "/deny-section", "/backend-deny", "/section/x", "/section/deny", "/loc/x",
         "/loc/deny", "/debian"]


@pytest.fixture(scope="module")
def pair(haproxy_bin):
    b = Backends([])                # no server anywhere: every forwarded request gets 503
    with workdir() as wd:
        for name, raw in PAGES.items():
            (wd / name).write_bytes(raw)
        with both(TEMPLATE.replace("{DIR}", str(wd)), b, wd, haproxy_bin, 2) as p:
            yield p


@pytest.mark.parametrize("close", [False, True], ids=["keep-alive", "close"])
@pytest.mark.parametrize("path", PATHS)
def test_error_pages_as_haproxy(pair, path, close):
    h, e = pair
    assert exchange_and_state(e.port, path, close) == exchange_and_state(h.port, path, close)


@pytest.mark.parametrize("path", ["/x", "/deny"])
def test_errorloc_and_section_order_as_haproxy(pair, path):
    h, e = pair
    got = exchange_and_state(e.ports[1], path, False)
    assert got == exchange_and_state(h.ports[1], path, False)
    assert got.startswith(b"HTTP/1.1 503 " if path == "/x" else b"HTTP/1.1 302 Found"), got
