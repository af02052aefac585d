"""HTTP/1.1 messages: parsing, body framing and serialising, with HAProxy 2.6's rules.

Heads are taken in three ways, all giving the same message: a head seen lately, byte for
byte, comes from a bounded memo (a client's or a flood's repeated requests, a server's
repeated answers); a plain head (CRLF lines, printable `name: value` headers, HTTP/1.x)
is split in Python (_plain_request; responses with regular expressions); anything else
goes through httptools (llhttp, C) and, whatever llhttp refuses, the hand-written parser
below, which decides as HAProxy does (llhttp refuses some things HAProxy accepts: folded
lines, bare LF, NUL bytes, unknown methods...). HAProxy's own limits and framing rules
are then applied to the result. A response head already in the form we would write is
relayed as it came (canonical_response).

What HAProxy 2.6 accepts or rejects with its 400 (checked against the real binary):
invalid header names, whitespace before the colon or at the start of a line, lines
without a colon, more than 101 header lines (tune.http.maxhdr), heads larger than the
buffer, Host given twice with different values, invalid/negative/signed Content-Length,
a final Transfer-Encoding other than `chunked`, `chunked` twice, bad chunk sizes, request
lines that are not `METHOD TARGET HTTP/x.y` (spaces or tabs between), controls, DEL,
non-ASCII bytes or `#` in the target, an absolute-form target whose authority is not the
Host, a websocket upgrade without Sec-WebSocket-Key; with its 422: a transfer coding
besides `chunked`. Accepted: bare LF line ends, obs-fold (its CR LF become spaces),
empty lines before the request line, equal Host headers (one is kept); an absolute-form
target loses its scheme's default port.
Stricter than HAProxy, on purpose (request smuggling shapes; the issue asks for a
rejection): Content-Length together with Transfer-Encoding, and Content-Length given
more than once even with equal values (HAProxy drops CL / merges equal values).

Header names are forwarded in lower case, as HAProxy's HTX does.
"""
from __future__ import annotations

import re

import httptools

MAX_HEADERS = 101          # tune.http.maxhdr
MAX_HEAD = 15292           # largest head HAProxy 2.6 (bufsize 16384) accepted in our probe

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_REQ_LINE = re.compile(r"([!#$%&'*+\-.^_`|~0-9A-Za-z]+)[ \t]+([^ \t\r\n]+)[ \t]+HTTP/(\d)\.(\d)\Z")
# bytes HAProxy refuses in a request target: controls, DEL, non-ASCII, a fragment
_BAD_TARGET = re.compile(r"[\x00-\x20\x7f-\xff#]")
_DEFAULT_PORTS = {"http": ":80", "https": ":443"}
_STATUS_LINE = re.compile(r"HTTP/(\d)\.(\d) (\d\d\d)(?: (.*))?\Z")
_HEX = re.compile(rb"[0-9A-Fa-f]{1,15}\Z")

# Body framing kinds.
NO_BODY, LENGTH, CHUNKED, UNTIL_CLOSE = 0, 1, 2, 3


class BadMessage(Exception):
    """The peer sent something HAProxy answers with 400 (or 502 for a server); `status`:
    another answer HAProxy gives to some requests (422: a transfer coding besides
    `chunked`)."""

    def __init__(self, reason: str, status: int = 400):
        super().__init__(reason)
        self.status = status


class IncompleteHead(Exception):
    """Not an error: the head is not complete yet."""


class Message:
    """A parsed head, as text (latin-1, byte for byte). `headers` is a list of
    [lower-case name, value] pairs in arrival order (tuples in requests parsed the plain
    way and in messages from a memo, whose pairs it shares: replace a pair rather than
    change it, and clear `origin` when changing the list other than through the methods
    below). `origin`:
    the memo's template this message is an unchanged copy of (changing the headers
    through the methods below, or replacing a pair, sets it to None); a template keeps
    the heads serialize_request wrote for it in `wire`."""
    __slots__ = ("method", "target", "version", "status", "reason", "headers",
                 "head_len", "framing", "length", "keep_alive", "upgrade", "origin", "wire")

    def __init__(self):
        self.method = self.target = ""
        self.version = 11
        self.status = 0
        self.reason = ""
        self.headers: list[list[str]] = []
        self.head_len = 0
        self.framing = NO_BODY
        self.length = 0
        self.keep_alive = True
        self.upgrade = False
        self.origin = self.wire = None

    def get(self, name: str, default: str | None = None) -> str | None:
        for h in self.headers:
            if h[0] == name:
                return h[1]
        return default

    def get_all(self, name: str) -> list[str]:
        return [h[1] for h in self.headers if h[0] == name]

    def remove(self, name: str) -> int:
        self.origin = None
        before = len(self.headers)
        self.headers = [h for h in self.headers if h[0] != name]
        return before - len(self.headers)

    def set(self, name: str, value: str) -> None:
        self.remove(name)
        self.headers.append([name, value])

    def add(self, name: str, value: str) -> None:
        self.origin = None
        self.headers.append([name, value])

    def copy(self) -> "Message":
        """A copy with its own header list (the pairs are shared: see above)."""
        m = Message.__new__(Message)
        m.method, m.target, m.version, m.status = self.method, self.target, self.version, self.status
        m.reason, m.head_len, m.framing, m.length = self.reason, self.head_len, self.framing, self.length
        m.keep_alive, m.upgrade = self.keep_alive, self.upgrade
        m.headers = list(self.headers)
        m.origin = m.wire = None
        return m


HTX_OVERHEAD = 21      # what HAProxy's internal message adds to its start line parts


def htx_size(msg: Message, is_request: bool) -> int:
    """Size of a head as HAProxy counts it in bytes_in/bytes_out: its internal (HTX)
    form — start-line parts and header names and values, no separators, no Connection
    header — plus a fixed overhead (checked against HAProxy 2.6.12)."""
    n = HTX_OVERHEAD + 8 + (len(msg.method) + len(msg.target) if is_request
                            else 3 + len(msg.reason))
    keep_connection = msg.upgrade or msg.status == 101
    for name, value in msg.headers:
        if name != "connection" or keep_connection:     # HAProxy's parser consumes it
            n += len(name) + len(value)
    if msg.framing == CHUNKED:
        n += 1                          # the end-of-trailers block
    return n


def find_head_end(buf: bytearray | bytes, start: int = 0) -> int:
    """Offset just past the empty line ending the head, or -1."""
    i = buf.find(b"\r\n\r\n", start)
    if i >= 0:
        j = buf.find(b"\n\n", start, i)
        return j + 2 if j >= 0 else i + 4
    j = buf.find(b"\n\n", start)
    if j >= 0:
        return j + 2
    j = buf.find(b"\n\r\n", start)
    return j + 3 if j >= 0 else -1


_FOLD = re.compile(r"\r?\n(?=[ \t])")


def _split_lines(head: str) -> list[str]:
    """The head's lines; a folded header line (obs-fold) is joined to the one before it,
    its CR and LF replaced by spaces (HAProxy's way: `a\\r\\n  b` reads `a    b`)."""
    first, sep, rest = head.partition("\n")
    if "\n " in rest or "\n\t" in rest:
        rest = _FOLD.sub(lambda m: " " * len(m.group()), rest)
        head = first + sep + rest
    if head.count("\n") == head.count("\r\n"):
        return head.split("\r\n")
    return [ln[:-1] if ln.endswith("\r") else ln for ln in head.split("\n")]


_FRAMING_HEADERS = frozenset(("content-length", "transfer-encoding", "connection", "host"))


def _parse_fields(lines: list[str], msg: Message) -> dict:
    """Fill msg.headers; returns the values of the headers that drive framing and
    connection handling ({name: [values]}), collected in the same pass."""
    headers = msg.headers
    special: dict = {}
    for line in lines:
        if not line:
            continue
        if line[0] in " \t":            # obs-fold: joins the previous value
            if not headers:
                raise BadMessage("folded line without a header")
            headers[-1][1] = headers[-1][1] + " " + line.strip(" \t")
            if headers[-1][0] in special:
                special[headers[-1][0]][-1] = headers[-1][1]
            continue
        colon = line.find(":")
        if colon <= 0:
            raise BadMessage("header line without a name or a colon")
        name = line[:colon]
        if not _TOKEN.match(name):
            raise BadMessage("invalid character in a header name")
        name = name.lower()
        value = line[colon + 1:].strip(" \t")
        headers.append([name, value])
        if name in _FRAMING_HEADERS:
            special.setdefault(name, []).append(value)
    if len(headers) > MAX_HEADERS:
        raise BadMessage("too many headers")
    return special


def _conn_tokens(special: dict, msg: Message | None = None) -> tuple[bool, bool]:
    close = ka = False
    for v in special.get("connection", ()):
        for tok in v.split(","):
            tok = tok.strip().lower()
            if tok == "close":
                close = True
            elif tok == "keep-alive":
                ka = True
            elif tok == "upgrade" and msg is not None and msg.get("upgrade") is not None:
                msg.upgrade = True
    return close, ka


def _body_framing(msg: Message, special: dict, is_request: bool) -> None:
    te_values = special.get("transfer-encoding")
    cl_values = special.get("content-length")
    if te_values:
        listed = [t.strip().lower() for v in te_values for t in v.split(",")]
        codings = [t for t in listed if t]
        if not codings or codings[-1] != "chunked" or codings.count("chunked") > 1:
            if is_request:
                raise BadMessage("Transfer-Encoding whose final coding is not chunked")
            msg.framing = UNTIL_CLOSE
            return
        while listed and not listed[-1]:
            listed.pop()
        if is_request and len(listed) > 1:
            raise BadMessage("a transfer coding besides chunked", 422)
        if cl_values:
            if is_request:
                raise BadMessage("Content-Length together with Transfer-Encoding")
            msg.remove("content-length")
        msg.framing = CHUNKED
        return
    if cl_values:
        if len(cl_values) == 1 and cl_values[0].isdigit() and len(cl_values[0]) < 19:
            msg.length = int(cl_values[0])
            msg.framing = LENGTH if msg.length else NO_BODY
            return
        if is_request and (len(cl_values) > 1 or "," in cl_values[0]):
            raise BadMessage("Content-Length given more than once")
        lengths = {v.strip() for cv in cl_values for v in cv.split(",")}
        if len(lengths) != 1:
            raise BadMessage("conflicting Content-Length values")
        value = lengths.pop()
        if not value.isdigit() or len(value) > 18:
            raise BadMessage("invalid Content-Length")
        msg.length = int(value)
        msg.set("content-length", value)
        msg.framing = LENGTH if msg.length else NO_BODY
        return
    msg.framing = NO_BODY if is_request else UNTIL_CLOSE


class _Collect:
    """httptools callbacks: the head's parts, header names lower-cased as they come."""
    __slots__ = ("url", "headers", "special", "done", "reason")

    def __init__(self):
        self.url = b""
        self.reason = b""
        self.headers: list = []
        self.special: dict = {}
        self.done = False

    def on_url(self, url):
        self.url += url

    def on_status(self, reason):
        self.reason += reason

    def on_header(self, name, value):
        n = name.decode("latin-1").lower()
        v = value.decode("latin-1").rstrip(" \t")
        self.headers.append([n, v])
        if n in _FRAMING_HEADERS:
            special = self.special
            if n in special:
                special[n].append(v)
            else:
                special[n] = [v]

    def on_headers_complete(self):
        self.done = True


def _llhttp(parser_class, head: bytes):
    """(collector, parser) when llhttp takes the head as it is, else None."""
    col = _Collect()
    p = parser_class(col)
    try:
        p.feed_data(head)
    except httptools.HttpParserUpgrade:
        pass
    except httptools.HttpParserError:
        return None
    return (col, p) if col.done else None


_VERSIONS = {"1.1": 11, "1.0": 10}


def _version(text: str) -> int:
    v = _VERSIONS.get(text)
    if v is None:
        major, _, minor = text.partition(".")
        v = int(major) * 10 + int(minor or 0)
    return v


# Heads in the plain shape most clients and servers send (CRLF lines, `name: value`
# headers with printable values and no surrounding blanks, HTTP/1.0 or 1.1) are taken
# apart without llhttp's callbacks: requests by splitting (_plain_request), responses
# with two regular expressions; llhttp and the parser below give exactly the same
# message for these. Anything else (and any head with framing headers other than one
# plain Content-Length) goes the general way.
_TOKEN_B = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_VALUE_B = rb"[!-~](?:[ -~]*[!-~])?"
_PLAIN_FIELDS = rb"((?:" + _TOKEN_B + rb":[ \t]*" + _VALUE_B + rb"\r\n)*)\r\n"
_PLAIN_RESP = re.compile(rb"HTTP/1\.([01]) ([1-9]\d\d) (" + _VALUE_B + rb")\r\n" + _PLAIN_FIELDS)
_PLAIN_FIELD = re.compile(r"([^:]+):[ \t]*([^\r]*)\r\n")


def _plain_fields(m, msg: Message, is_request: bool) -> bool:
    """Headers of a plain head (see above) into msg, framing and connection handling
    included; False when the general way must decide (framing headers, Upgrade...)."""
    found = _PLAIN_FIELD.findall(m.group(4).decode("latin-1"))
    # (a response's pairs are lists: the cookie code rewrites Set-Cookie values in place)
    return _plain_framing([[n.lower(), v] for n, v in found], msg, is_request)


def _plain_framing(headers: list, msg: Message, is_request: bool) -> bool:
    if len(headers) > MAX_HEADERS:
        return False
    msg.headers = headers
    length = None
    hosts = 0
    conn = None
    for name, value in headers:
        if name in _FRAMING_HEADERS:
            if name == "host":
                hosts += 1
            elif name == "connection":
                if conn is not None:
                    return False
                conn = value.lower()
            elif name == "content-length" and length is None and value.isdigit() and len(value) < 19:
                length = int(value)
            else:
                return False
    if hosts > 1:
        return False
    if length is not None:
        msg.length = length
        msg.framing = LENGTH if length else NO_BODY
    else:
        msg.framing = NO_BODY if is_request else UNTIL_CLOSE
    if conn is None:
        msg.keep_alive = msg.version >= 11
    elif conn == "close":
        msg.keep_alive = False
    elif conn == "keep-alive":
        msg.keep_alive = True
    else:
        return False
    return True


# Heads seen lately, byte for byte (a client's requests, a flood's, a server's answers
# often repeat exactly): the result of the analysis is reused. Bounded in entries and in
# head size (at most ~4 MB whatever the peers send); a head the memo does not hold costs
# one dictionary miss more.
_MEMO_SIZE = 512
_MEMO_HEAD = 2048
_REQ_MEMO: dict[bytes, Message] = {}
_REQ_SEEN: set[bytes] = set()
_RESP_MEMO: dict[bytes, tuple | None] = {}         # canonical_response's
_RESP_MSG_MEMO: dict[bytes, Message] = {}          # parse_response's
# the last head found in each memo, compared in place first (no key to build): a head
# ends at its first CRLFCRLF, so a buffer starting with it holds that very head
_last_req: tuple = (None, None)
_last_resp: tuple = (None, None)
# when request heads do not repeat (256 misses in a row), the request memo is left aside
# for the next 4096 heads: its look-ups would only cost
_req_misses = 0
_req_memo_off = 0


def parse_request(buf: bytearray | bytes, start: int = 0) -> Message | None:
    """Parse one request head from buf[start:]. None = incomplete. Raises BadMessage."""
    global _last_req, _req_misses, _req_memo_off
    if _req_memo_off:
        _req_memo_off -= 1
        end = buf.find(b"\r\n\r\n", start) + 4
        if 3 < end and end - start <= MAX_HEAD:
            msg = _plain_request(bytes(buf[start:end]))
            if msg is not None:
                return msg
        return _parse_request(buf, start)
    last_key, known = _last_req
    if last_key is not None and buf.startswith(last_key, start):
        _req_misses = 0
        msg = known.copy()
        msg.origin = known
        return msg
    end = buf.find(b"\r\n\r\n", start) + 4
    if end > 3:
        key = bytes(buf[start:end])
        known = _REQ_MEMO.get(key)
        if known is not None:
            _req_misses = 0
            _last_req = (key, known)
            msg = known.copy()
            msg.origin = known
            return msg
        _req_misses += 1
        if _req_misses >= 256:
            _req_misses = 0
            _req_memo_off = 4096
        msg = _plain_request(key) if end - start <= MAX_HEAD else None
        if msg is None:
            msg = _parse_request(buf, start)
    else:
        msg = _parse_request(buf, start)
    if msg is not None and end > 3 and msg.head_len == end - start <= _MEMO_HEAD:
        # the head ends at its first CRLFCRLF: the message depends on `key` alone; it
        # is kept from its second sighting on (a head seen once costs a set insertion)
        if key in _REQ_SEEN:
            known = msg.copy()
            known.headers = [tuple(h) for h in msg.headers]
            if len(_REQ_MEMO) >= _MEMO_SIZE:
                _REQ_MEMO.clear()
            _REQ_MEMO[key] = known
            _last_req = (key, known)
        else:
            if len(_REQ_SEEN) >= 2 * _MEMO_SIZE:
                _REQ_SEEN.clear()
            _REQ_SEEN.add(key)
    return msg


_NOT_PLAIN = bytes(range(0x20, 0x7F)) + b"\r\n"      # translate() deletes these
_TOKEN_NAMES: dict[str, str] = {}       # tokens seen as method or header name -> lower case


def _plain_request(head: bytes) -> Message | None:
    """The request head `head` (ending at its first CRLFCRLF) when it is plain (see
    above; no tabs either), else None."""
    if head.translate(None, _NOT_PLAIN):
        return None                     # control characters, tabs, bytes above 0x7e
    text = head.decode("ascii")
    lines = text.split("\r\n")
    n = len(lines)                      # the last two are the empty line's ""
    if text.count("\n") != n - 1 or text.count("\r") != n - 1:
        return None                     # a bare CR or LF
    parts = lines[0].split(" ")
    if len(parts) != 3:
        return None
    method, target, version = parts
    if version == "HTTP/1.1":
        v = 11
    elif version == "HTTP/1.0":
        v = 10
    else:
        return None
    tokens = _TOKEN_NAMES
    if target[:1] != "/" or "#" in target or (method not in tokens and _token(method) is None):
        return None                     # (the general way checks other target forms)
    headers = []
    for i in range(1, n - 2):
        name, sep, value = lines[i].partition(":")
        low = tokens.get(name)
        if low is None:
            low = _token(name)
            if low is None:
                return None
        value = value.lstrip(" ")
        if not sep or not value or value[-1] == " ":
            return None
        headers.append((low, value))
    msg = Message()
    msg.version = v
    if not _plain_framing(headers, msg, True):
        return None
    msg.method, msg.target, msg.head_len = method, target, len(head)
    return msg


def _token(name: str) -> str | None:
    """`name` in lower case when it is a valid method or header name, else None; short
    ones are remembered in _TOKEN_NAMES (bounded)."""
    if not _TOKEN.match(name):
        return None
    low = name.lower()
    if len(name) <= 64:
        if len(_TOKEN_NAMES) >= 4096:
            _TOKEN_NAMES.clear()
        _TOKEN_NAMES[name] = low
    return low


def _parse_request(buf, start: int) -> Message | None:
    """The general way: llhttp, then the parser above for what llhttp refuses."""
    # Empty lines before the request line are skipped, as HAProxy does.
    s, n = start, len(buf)
    while s < n and (buf[s] == 10 or (buf[s] == 13 and buf[s + 1:s + 2] == b"\n")):
        s += 1 if buf[s] == 10 else 2
    end = find_head_end(buf, s)
    if end < 0:
        if n - s > MAX_HEAD:
            raise BadMessage("request head too large")
        return None
    if end - s > MAX_HEAD:
        raise BadMessage("request head too large")
    head = bytes(buf[s:end])
    msg = Message()
    got = _llhttp(httptools.HttpRequestParser, head)
    if got is not None:
        col, p = got
        msg.method = p.get_method().decode("latin-1")
        msg.target = col.url.decode("latin-1")
        msg.version = _version(p.get_http_version())
        if msg.version < 10:
            raise BadMessage("HTTP/0.9 request")
        msg.headers = col.headers
        special = col.special
        if len(msg.headers) > MAX_HEADERS:
            raise BadMessage("too many headers")
    else:
        text = head.decode("latin-1")
        lines = _split_lines(text)
        m = _REQ_LINE.match(lines[0])
        if m is None:
            raise BadMessage("invalid request line")
        special = _parse_fields(lines[1:], msg)
        msg.method, msg.target = m.group(1), m.group(2)
        msg.version = int(m.group(3)) * 10 + int(m.group(4))
    hosts = special.get("host", ())
    if len(hosts) > 1:
        if any(h.lower() != hosts[0].lower() for h in hosts[1:]):
            raise BadMessage("Host given more than once, with different values")
        first = True                    # equal values: HAProxy keeps the first
        kept = []
        for h in msg.headers:
            if h[0] == "host":
                if not first:
                    continue
                first = False
            kept.append(h)
        msg.headers, hosts = kept, hosts[:1]
    _check_target(msg, hosts[0] if hosts else None)
    _body_framing(msg, special, True)
    close, ka = _conn_tokens(special, msg)
    if msg.upgrade and msg.get("sec-websocket-key") is None and any(
            t.strip().lower() == "websocket" for t in msg.get("upgrade", "").split(",")):
        raise BadMessage("websocket upgrade without Sec-WebSocket-Key")
    msg.keep_alive = (not close) if msg.version >= 11 else (ka and not close)
    msg.head_len = end - start
    return msg


def _check_target(msg: Message, host: str | None) -> None:
    """HAProxy's checks of a request target: no control, DEL, non-ASCII byte or
    fragment; an absolute-form target (`scheme:...`) loses its scheme's default port
    (http :80, https :443) and its authority (userinfo aside) must be the Host header's
    value when there is one (RFC 9112 3.2.2; both without the default port)."""
    target = msg.target
    if _BAD_TARGET.search(target):
        raise BadMessage("invalid character in the request target")
    if target[:1] == "/" or target == "*" or msg.method == "CONNECT":
        return
    scheme, colon, rest = target.partition(":")
    if not colon:
        return                          # (llhttp and the request line parser refuse these)
    if rest[:2] == "//":
        end = rest.find("/", 2)
        authority = rest[2:] if end < 0 else rest[2:end]
        path = "" if end < 0 else rest[end:]
    else:
        authority, path = "", rest
    port = _DEFAULT_PORTS.get(scheme.lower())
    if port and authority.endswith(port):
        authority = authority[:-len(port)]
        msg.target = f"{scheme}://{authority}{path}"
    if host is not None:
        if port and host.endswith(port):
            host = host[:-len(port)]
        if authority.rpartition("@")[2].lower() != host.lower():
            raise BadMessage("the target's authority is not the Host header's value")


def parse_response(buf: bytearray | bytes, start: int, request_method: str) -> Message | None:
    """Parse one response head from buf[start:]. None = incomplete. Raises BadMessage."""
    if request_method == "HEAD":            # (the memo holds answers to other methods)
        return _parse_response(buf, start, request_method)
    end = buf.find(b"\r\n\r\n", start) + 4
    if end < 4 or end - start > _MEMO_HEAD:
        return _parse_response(buf, start, request_method)
    key = bytes(buf[start:end])
    known = _RESP_MSG_MEMO.get(key)
    if known is None:
        msg = _parse_response(buf, start, request_method)
        if msg is None or msg.head_len != end - start:
            return msg
        # the head ends at its first CRLFCRLF: the message depends on `key` alone
        known = msg.copy()
        known.headers = [tuple(h) for h in msg.headers]
        if len(_RESP_MSG_MEMO) >= _MEMO_SIZE:
            _RESP_MSG_MEMO.clear()
        _RESP_MSG_MEMO[key] = known
        return msg
    msg = known.copy()
    msg.origin = known
    return msg


def _parse_response(buf, start: int, request_method: str) -> Message | None:
    m = _PLAIN_RESP.match(buf, start)
    if m is not None and m.end() - start <= MAX_HEAD:
        msg = Message()
        msg.version = 10 if m.group(1) == b"0" else 11
        status = msg.status = int(m.group(2))
        if _plain_fields(m, msg, False):
            if request_method == "HEAD" or status < 200 or status in (204, 304):
                msg.framing = NO_BODY
                msg.length = 0
            msg.reason = m.group(3).decode("latin-1")
            msg.head_len = m.end() - start
            return msg
    end = find_head_end(buf, start)
    if end < 0:
        if len(buf) - start > MAX_HEAD:
            raise BadMessage("response head too large")
        return None
    head = bytes(buf[start:end])
    msg = Message()
    got = _llhttp(httptools.HttpResponseParser, head)
    if got is not None:
        col, p = got
        msg.version = _version(p.get_http_version())
        msg.status = p.get_status_code()
        msg.reason = col.reason.decode("latin-1")
        msg.headers = col.headers
        special = col.special
        if len(msg.headers) > MAX_HEADERS:
            raise BadMessage("too many headers")
    else:
        lines = _split_lines(head.decode("latin-1"))
        m = _STATUS_LINE.match(lines[0])
        if m is None:
            raise BadMessage("invalid status line")
        special = _parse_fields(lines[1:], msg)
        msg.version = int(m.group(1)) * 10 + int(m.group(2))
        msg.status = int(m.group(3))
        msg.reason = m.group(4) or ""
    status = msg.status
    if request_method == "HEAD" or status < 200 or status in (204, 304):
        msg.framing = NO_BODY
        msg.length = 0
    else:
        _body_framing(msg, special, False)
    close, ka = _conn_tokens(special)
    msg.keep_alive = (not close) if msg.version >= 11 else (ka and not close)
    msg.head_len = end - start
    return msg


_CANONICAL_RESP = re.compile(rb"HTTP/1\.1 ([1-9]\d\d) " + _VALUE_B + rb"\r\n(?:[!#$%&'*+\-.^_`|~0-9a-z]+: "
                             + _VALUE_B + rb"\r\n)*\r\n")


def canonical_response(buf: bytearray, request_method: str) -> tuple[int, int, int, int] | None:
    """(status, head length, body length, number of lines of the head, its empty line
    included) of a final response whose head is already the bytes serialize_response
    would write for it (HTTP/1.1, lower-case `name: value` lines, no Connection, no
    Transfer-Encoding, one Content-Length): such a head can be relayed as it came. None:
    parse it (parse_response) and serialise it."""
    global _last_resp
    key, known = _last_resp
    if key is not None and buf.startswith(key):
        end = len(key)
    else:
        end = buf.find(b"\r\n\r\n") + 4
        if end < 4:
            return None
        key = bytes(buf[:end])
        known = _RESP_MEMO.get(key, False)
        if known is False:
            known = _canonical_head(buf, end)
            if end <= _MEMO_HEAD:
                if len(_RESP_MEMO) >= _MEMO_SIZE:
                    _RESP_MEMO.clear()
                _RESP_MEMO[key] = known
        _last_resp = (key, known)
    if known is None:
        return None
    status, length, lines = known
    if request_method == "HEAD" or status in (204, 304):
        return status, end, 0, lines
    return status, end, length, lines


def _canonical_head(buf, end: int) -> tuple[int, int, int] | None:
    """(status, Content-Length, lines) for canonical_response, from the head buf[:end]."""
    m = _CANONICAL_RESP.match(buf)
    if m is None or m.end() != end:
        return None
    i = buf.find(b"\r\ncontent-length: ", 0, end)
    if (i < 0 or end > MAX_HEAD or buf.find(b"\r\nconnection:", 0, end) >= 0
            or buf.find(b"\r\ntransfer-encoding:", 0, end) >= 0):
        return None
    j = buf.find(b"\r\n", i + 18, end)
    value = buf[i + 18:j]
    if (not value.isdigit() or len(value) > 18
            or buf.find(b"\r\ncontent-length:", j, end) >= 0):
        return None
    status = int(m.group(1))
    if status < 200:
        return None
    return status, int(value), buf.count(b"\r\n", 0, end)


class ChunkedScanner:
    """Decodes a chunked body as it streams through. feed(data) returns how many bytes
    of data belong to the body (the rest is the next message) and leaves the payload
    in `self.payload` (a list of pieces) and trailer lines in `self.trailers`; raises
    BadMessage on a bad chunk size or framing. HAProxy re-frames chunked bodies the
    same way: what arrived together leaves as one chunk, extensions dropped."""
    __slots__ = ("state", "remaining", "line", "done", "payload", "trailers")

    def __init__(self):
        self.state = 0        # 0 size line, 1 data, 2 CRLF after data, 3 trailers
        self.remaining = 0
        self.line = b""
        self.done = False
        self.payload: list = []
        self.trailers: list = []

    def feed(self, data: bytes | bytearray) -> int:
        i, n = 0, len(data)
        while i < n and not self.done:
            st = self.state
            if st == 1:
                take = min(self.remaining, n - i)
                self.payload.append(bytes(data[i:i + take]))
                i += take
                self.remaining -= take
                if self.remaining == 0:
                    self.state = 2
                continue
            j = data.find(b"\n", i)
            if j < 0:
                self.line += bytes(data[i:])
                if len(self.line) > 4096:
                    raise BadMessage("chunk line too long")
                return n
            line = self.line + bytes(data[i:j])
            self.line = b""
            i = j + 1
            if line.endswith(b"\r"):
                line = line[:-1]
            if st == 0:
                size = line.split(b";", 1)[0].strip(b" \t")
                if not _HEX.match(size):
                    raise BadMessage("invalid chunk size")
                self.remaining = int(size, 16)
                self.state = 1 if self.remaining else 3
            elif st == 2:
                if line:
                    raise BadMessage("missing CRLF after chunk data")
                self.state = 0
            else:                      # trailers end with an empty line
                if not line:
                    self.done = True
                else:
                    self.trailers.append(line)
        return i

    def take(self) -> bytes:
        """The decoded data so far re-framed as one chunk (plus the last chunk and
        trailers once the body is complete)."""
        data = b"".join(self.payload)
        self.payload.clear()
        out = b"%x\r\n%s\r\n" % (len(data), data) if data else b""
        if self.done:
            out += b"0\r\n" + b"".join(t + b"\r\n" for t in self.trailers) + b"\r\n"
        return out


def serialize_request(msg: Message, extra: list[tuple[str, str]] | None = None,
                      close: bool = False) -> bytes:
    """Request head for a server: lower-case names, the client's Connection header
    dropped (keep-alive is HTTP/1.1's default towards servers; an HTTP/1.0 request
    says `connection: keep-alive`, as HAProxy does)."""
    origin = msg.origin
    if origin is not None and not extra:        # an unchanged copy of a memo's head
        wire = origin.wire
        if wire is None:
            wire = origin.wire = {}
        head = wire.get(close)
        if head is None:
            head = wire[close] = _serialize_request(origin, None, close)
        return head
    return _serialize_request(msg, extra, close)


def _serialize_request(msg: Message, extra, close: bool) -> bytes:
    parts = [msg.method, " ", msg.target, " HTTP/1.0\r\n" if msg.version == 10 else " HTTP/1.1\r\n"]
    upgrade = msg.upgrade
    for name, value in msg.headers:
        if name == "connection":
            if upgrade:                 # a protocol upgrade: `connection: Upgrade`, once
                parts.append("connection: Upgrade\r\n")
                upgrade = False
            continue
        parts += (name, ": ", value, "\r\n")
    if extra:
        for name, value in extra:
            parts += (name, ": ", value, "\r\n")
    if close and not msg.upgrade:       # option httpclose / http-server-close
        parts.append("connection: close\r\n")
    elif msg.version == 10 and not msg.upgrade:
        parts.append("connection: keep-alive\r\n")
    parts.append("\r\n")
    return "".join(parts).encode("latin-1")


def serialize_response(msg: Message, conn_header: str | None) -> bytes:
    """Response head for the client. conn_header: "close", "keep-alive" or None."""
    origin = msg.origin
    if origin is not None:                      # an unchanged copy of a memo's head
        wire = origin.wire
        if wire is None:
            wire = origin.wire = {}
        head = wire.get(conn_header)
        if head is None:
            head = wire[conn_header] = _serialize_response(origin, conn_header)
        return head
    return _serialize_response(msg, conn_header)


def _serialize_response(msg: Message, conn_header: str | None) -> bytes:
    parts = ["HTTP/1.1 %d " % msg.status, msg.reason, "\r\n"]
    keep_connection = msg.status == 101
    for name, value in msg.headers:
        if name == "connection" and not keep_connection:
            continue
        parts += (name, ": ", value, "\r\n")
    if conn_header is not None:
        parts += ("connection: ", conn_header, "\r\n")
    parts.append("\r\n")
    return "".join(parts).encode("latin-1")


def connection_header(request: Message, closing: bool) -> str | None:
    """What HAProxy writes in `connection:` towards the client."""
    if closing:
        return "close"
    if request.version < 11:
        return "keep-alive"
    return None


# HAProxy's built-in error pages (http.c), byte for byte as 2.6.12 sends them.
REASONS = {
    200: b"OK", 400: b"Bad request", 401: b"Unauthorized", 403: b"Forbidden",
    404: b"Not Found", 405: b"Method Not Allowed", 407: b"Unauthorized",
    408: b"Request Time-out", 410: b"Gone", 413: b"Payload Too Large",
    421: b"Misdirected Request", 422: b"Unprocessable Content", 425: b"Too Early",
    429: b"Too Many Requests", 500: b"Internal Server Error", 501: b"Not Implemented",
    502: b"Bad Gateway", 503: b"Service Unavailable", 504: b"Gateway Time-out",
}
_ERROR_TEXT = {
    200: b"Service ready.",
    400: b"Your browser sent an invalid request.",
    401: b"You need a valid user and password to access this content.",
    403: b"Request forbidden by administrative rules.",
    404: b"The resource could not be found.",
    405: b"A request was made of a resource using a request method not supported by that resource",
    407: b"You need a valid user and password to access this content.",
    408: b"Your browser didn't send a complete request in time.",
    410: b"The resource is no longer available and will not be available again.",
    413: b"The request entity exceeds the maximum allowed.",
    421: b"Request sent to a non-authoritative server.",
    422: b"The server cannot process the contained instructions.",
    425: b"Your browser sent early data.",
    429: b"You have sent too many requests in a given amount of time.",
    500: b"An internal server error occurred.",
    501: b".The server does not support the functionality required to fulfill the request.",
    502: b"The server returned an invalid or incomplete response.",
    503: b"No server is available to handle this request.",
    504: b"The server didn't respond in time.",
}
ERROR_STATUSES = frozenset(_ERROR_TEXT)
# Errors after which HAProxy always closes the client connection.
CLOSING_STATUSES = frozenset((400, 408))


def error_body(status: int) -> bytes:
    return b"<html><body><h1>%d %s</h1>\n%s\n</body></html>\n" % (
        status, REASONS[status], _ERROR_TEXT[status])


_ERROR_CACHE: dict[tuple[int, bool], bytes] = {}


def error_response(status: int, close: bool) -> bytes:
    """An error page as HTTP rules send it (lower-case headers, HTX style)."""
    key = (status, close)
    r = _ERROR_CACHE.get(key)
    if r is None:
        body = error_body(status)
        r = (b"HTTP/1.1 %d %s\r\ncontent-length: %d\r\ncache-control: no-cache\r\n"
             b"content-type: text/html\r\n%s\r\n" % (
                 status, REASONS[status], len(body),
                 b"connection: close\r\n" if close or status in CLOSING_STATUSES else b"")) + body
        _ERROR_CACHE[key] = r
    return r


class ErrorPage:
    """A response configured whole: an `errorfile` (read as HAProxy reads one into HTX:
    header names lower-cased, the status line and body kept), or an `errorloc` redirect.
    Without a Content-Length the body ends with the connection, so that closes."""
    __slots__ = ("status", "_keep", "_close", "closes")

    def __init__(self, status: int, start_line: bytes, headers: list[tuple[bytes, bytes]],
                 body: bytes):
        self.status = status
        # its own Connection header goes (the connection's is written); an HTTP/1.0
        # page closes and says nothing more, as HAProxy sends Debian's errorfiles
        headers = [h for h in headers if h[0] != b"connection"]
        http10 = start_line.startswith(b"HTTP/1.0")
        head = start_line + b"\r\n" + b"".join(b"%s: %s\r\n" % h for h in headers)
        self.closes = http10 or not any(n == b"content-length" for n, _ in headers)
        self._close = head + (b"\r\n" if http10 else b"connection: close\r\n\r\n") + body
        self._keep = self._close if self.closes else head + b"\r\n" + body

    @classmethod
    def parse(cls, raw: bytes) -> "ErrorPage":
        """An errorfile's bytes; BadMessage when they are not an HTTP response."""
        end = raw.find(b"\r\n\r\n")
        sep = b"\r\n"
        if end < 0:
            end, sep = raw.find(b"\n\n"), b"\n"
        if end < 0:
            raise BadMessage("no end of headers")
        lines = raw[:end].split(sep)
        parts = lines[0].split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
            raise BadMessage("no status line")
        headers = []
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if not colon or not name.strip():
                raise BadMessage("bad header line")
            headers.append((name.strip().lower(), value.strip()))
        return cls(int(parts[1]), lines[0].rstrip(), headers, raw[end + 2 * len(sep):])

    @classmethod
    def redirect(cls, code: int, location: str) -> "ErrorPage":
        """`errorloc`/`errorloc302` (302) and `errorloc303` (303) pages."""
        return cls(code, b"HTTP/1.1 %d %s" % (code, reason_for(code)),
                   [(b"cache-control", b"no-cache"), (b"content-length", b"0"),
                    (b"location", location.encode("latin-1"))], b"")

    def response(self, close: bool) -> bytes:
        return self._close if close else self._keep


def mux_error_response(status: int) -> bytes:
    """An error the H1 layer sends on its own (400 malformed, 408 timeout, 422): HAProxy
    writes the raw page, with its original capitalisation (its 422 page has no
    Connection header), and closes."""
    body = error_body(status)
    return (b"HTTP/1.1 %d %s\r\nContent-length: %d\r\nCache-Control: no-cache\r\n"
            b"%sContent-Type: text/html\r\n\r\n" % (
                status, REASONS[status], len(body),
                b"" if status == 422 else b"Connection: close\r\n")) + body


def reason_for(status: int) -> bytes:
    return REASONS.get(status) or _STD_REASONS.get(status, b"Unknown")


_STD_REASONS = {
    100: b"Continue", 101: b"Switching Protocols", 201: b"Created", 202: b"Accepted",
    204: b"No Content", 206: b"Partial Content", 301: b"Moved Permanently", 302: b"Found",
    303: b"See Other", 304: b"Not Modified", 307: b"Temporary Redirect",
    308: b"Permanent Redirect", 409: b"Conflict", 411: b"Length Required",
    412: b"Precondition Failed", 414: b"URI Too Long", 415: b"Unsupported Media Type",
    416: b"Range Not Satisfiable", 417: b"Expectation Failed", 505: b"HTTP Version Not Supported",
}


# The reasons HAProxy 2.6 writes for a status it sets itself (`return`, `deny` with a
# payload, `set-status` without a reason: its http_get_reason), as the binary answers
# `return status N` for 200-599; others by class. (Its error pages and redirects have their
# own wording: REASONS, reason_for.)
STATUS_REASONS = {
    100: b"Continue", 101: b"Switching Protocols",
    200: b"OK", 201: b"Created", 202: b"Accepted", 203: b"Non-Authoritative Information",
    204: b"No Content", 205: b"Reset Content", 206: b"Partial Content",
    207: b"Multi-Status", 210: b"Content Different", 226: b"IM Used",
    300: b"Multiple Choices", 301: b"Moved Permanently", 302: b"Moved Temporarily",
    303: b"See Other", 304: b"Not Modified", 305: b"Use Proxy", 307: b"Temporary Redirect",
    308: b"Permanent Redirect", 310: b"Too many Redirects", 400: b"Bad Request",
    401: b"Unauthorized", 402: b"Payment Required", 403: b"Forbidden", 404: b"Not Found",
    405: b"Method Not Allowed", 406: b"Not Acceptable",
    407: b"Proxy Authentication Required", 408: b"Request Time-out", 409: b"Conflict",
    410: b"Gone", 411: b"Length Required", 412: b"Precondition Failed",
    413: b"Request Entity Too Large", 414: b"Request-URI Too Long",
    415: b"Unsupported Media Type", 416: b"Requested range unsatisfiable",
    417: b"Expectation failed", 418: b"I'm a teapot", 421: b"Misdirected Request",
    422: b"Unprocessable Content", 423: b"Locked", 424: b"Method failure",
    425: b"Too Early", 426: b"Upgrade Required", 428: b"Precondition Required",
    429: b"Too Many Requests", 431: b"Request Header Fields Too Large", 449: b"Retry With",
    450: b"Blocked by Windows Parental Controls", 451: b"Unavailable For Legal Reasons",
    456: b"Unrecoverable Error", 499: b"client has closed connection",
    500: b"Internal Server Error", 501: b"Not Implemented",
    502: b"Bad Gateway or Proxy Error", 503: b"Service Unavailable",
    504: b"Gateway Time-out", 505: b"HTTP Version not supported",
    506: b"Variant also negotiate", 507: b"Insufficient storage", 508: b"Loop detected",
    509: b"Bandwidth Limit Exceeded", 510: b"Not extended",
    511: b"Network authentication required",
    520: b"Web server is returning an unknown error",
}
_CLASS_REASONS = {1: b"Informational", 2: b"Success", 3: b"Redirection", 4: b"Client Error",
                  5: b"Server Error"}


def status_reason(status: int) -> bytes:
    return STATUS_REASONS.get(status) or _CLASS_REASONS.get(status // 100, b"Other")


def simple_response(status: int, headers: list[tuple[str, str]], body: bytes,
                    content_type: str | None, conn_header: str | None) -> bytes:
    """A response built by a rule (`return`, custom `deny`): custom headers first, then
    content-length and content-type, as HAProxy orders them."""
    parts = ["HTTP/1.1 %d %s\r\n" % (status, status_reason(status).decode())]
    for name, value in headers:
        parts += (name.lower(), ": ", value, "\r\n")
    parts.append("content-length: %d\r\n" % len(body))
    if content_type is not None:
        parts += ("content-type: ", content_type, "\r\n")
    if conn_header is not None:
        parts += ("connection: ", conn_header, "\r\n")
    parts.append("\r\n")
    return "".join(parts).encode("latin-1") + body
