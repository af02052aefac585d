"""Loopback application servers for the proxy tests and bench (one process, many ports).

    python echo_backend.py NAME=PORT [NAME=PORT ...]

Each answers HTTP/1.1 with keep-alive; the body says which server answered, the request
line and the headers it received (lower-cased names, in order), so tests see what the
proxy forwarded. Query parameters: status=N (answer N), setcookie=V (add Set-Cookie: V),
hdr=Name: value (add that header; may repeat),
ctype=T (Content-Type T instead of text/plain; empty: none), sleep=S (wait S seconds), size=N (N-byte body),
chunked=1 (chunked response), idle_close=S (close the connection S seconds after the
response, as servers with a short keep-alive timeout do), drop_next=1 (close the connection
when the next request arrives on it, unanswered), upgrade=1 with an Upgrade header (101, the request headers it
received after "seen:", then every byte echoed back after "echo:"). Prints "ready" once every port listens.
"""
import asyncio
import base64
import hashlib
import sys
from urllib.parse import parse_qsl, unquote


def _reason(status):
    return {200: "OK", 404: "Not Found", 500: "Internal Server Error", 501: "Not Implemented",
            503: "Service Unavailable", 403: "Forbidden", 302: "Found"}.get(status, "Status")


class Echo(asyncio.Protocol):
    def __init__(self, name):
        self.name = name
        self.buf = b""
        self.need_body = None
        self.head = None
        self.transport = None
        self.tunnel = False
        self.drop_next = False

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        if self.tunnel:                 # after a 101: echo every byte back
            self.transport.write(b"echo:" + data)
            return
        self.buf += data
        while True:
            if self.head is None:
                i = self.buf.find(b"\r\n\r\n")
                if i < 0:
                    return
                self.head = self.buf[:i].decode("latin-1")
                self.buf = self.buf[i + 4:]
                lines = self.head.split("\r\n")
                hdrs = [ln.split(":", 1) for ln in lines[1:]]
                self.headers = [(k.strip().lower(), v.strip()) for k, v in hdrs]
                cl = [v for k, v in self.headers if k == "content-length"]
                chunked = any(k == "transfer-encoding" for k, _ in self.headers)
                self.need_body = ("chunked", None) if chunked else ("len", int(cl[0]) if cl else 0)
            kind, n = self.need_body
            if kind == "len":
                if len(self.buf) < n:
                    return
                body, self.buf = self.buf[:n], self.buf[n:]
            else:
                end = self.buf.find(b"0\r\n\r\n")
                if end < 0:
                    return
                body, self.buf = self.buf[:end + 5], self.buf[end + 5:]
            head, headers = self.head, self.headers
            self.head = None
            if self.drop_next:          # the race of a server closing an idle connection
                self.transport.close()
                return
            if "drop_next=1" in head.split("\r\n", 1)[0]:
                self.drop_next = True
            if any(k == "upgrade" for k, _ in headers) and "upgrade=1" in head.split("\r\n", 1)[0]:
                key = dict(headers).get("sec-websocket-key", "")
                accept = base64.b64encode(hashlib.sha1(
                    (key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest())
                self.transport.write(
                    b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
                    b"Upgrade: " + dict(headers)["upgrade"].encode() + b"\r\n"
                    b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n" +
                    b"seen:" + "".join(f"{k}: {v}\n" for k, v in headers).encode())
                self.tunnel = True
                if self.buf:
                    self.transport.write(b"echo:" + self.buf)
                return
            asyncio.get_running_loop().create_task(self.answer(head, headers, body))

    async def answer(self, head, headers, body):
        line = head.split("\r\n", 1)[0]
        method, target = line.split(" ")[0], line.split(" ")[1]
        q = dict(parse_qsl(target.partition("?")[2], keep_blank_values=True))
        status = int(q.get("status", 200))
        if "sleep" in q:
            await asyncio.sleep(float(q["sleep"]))
        text = f"server={self.name}\n{method} {target}\n" + "".join(f"{k}: {v}\n" for k, v in headers)
        if body:
            text += f"body-bytes: {len(body)}\n"
        payload = text.encode("latin-1")
        if "size" in q:
            payload = b"x" * int(q["size"])
        extra = []
        if "setcookie" in q:
            extra.append(f"Set-Cookie: {unquote(q['setcookie'])}")
        extra += [unquote(v) for k, v in parse_qsl(target.partition("?")[2]) if k == "hdr"]
        extra.append(f"X-Server: {self.name}")
        ctype = q.get("ctype", "text/plain")
        ctype = f"Content-Type: {ctype}\r\n" if ctype else ""
        if method == "HEAD" or status in (204, 304):
            payload_out = b""
        else:
            payload_out = payload
        if q.get("chunked"):
            head_out = (f"HTTP/1.1 {status} {_reason(status)}\r\n{ctype}"
                        f"Transfer-Encoding: chunked\r\n" + "".join(e + "\r\n" for e in extra) + "\r\n")
            data = head_out.encode() + (b"%x\r\n%s\r\n" % (len(payload_out), payload_out) if payload_out else b"") + b"0\r\n\r\n"
        else:
            head_out = (f"HTTP/1.1 {status} {_reason(status)}\r\n{ctype}"
                        f"Content-Length: {len(payload)}\r\n" + "".join(e + "\r\n" for e in extra) + "\r\n")
            data = head_out.encode() + payload_out
        if not self.transport.is_closing():
            self.transport.write(data)
            if "idle_close" in q:       # then drop the idle keep-alive connection
                asyncio.get_running_loop().call_later(float(q["idle_close"]),
                                                      self.transport.close)


async def main(specs):
    loop = asyncio.get_running_loop()
    servers = []
    for spec in specs:
        name, _, port = spec.partition("=")
        servers.append(await loop.create_server(lambda n=name: Echo(n), "127.0.0.1", int(port),
                                                reuse_address=True))
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    try:
        import uvloop
        uvloop.run(main(sys.argv[1:]))
    except ImportError:
        asyncio.run(main(sys.argv[1:]))
