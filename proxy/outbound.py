"""What a connection to a server carries besides HTTP: TLS (`server ... ssl verify ca-file
sni crt alpn ssl-min-ver ssl-max-ver ciphers verifyhost`) and the PROXY protocol header
(`send-proxy`, `send-proxy-v2`), as HAProxy 2.6 sends them (src/ssl_sock.c,
src/connection.c make_proxy_line). Health checks take the same settings (`check-ssl`,
`check-send-proxy`, inherited when the check goes to the server's own address).

A connection whose SNI comes from the request or which starts with a PROXY header
belongs to what it was opened for: it is pooled under that key (ServerConn.key) and only
reused for the same one, as HAProxy hashes such connections."""
from __future__ import annotations

import ipaddress
import os
import socket
import ssl
import struct
from dataclasses import dataclass
from typing import Any, Optional

PP2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
_TLS_VERSIONS = {"SSLv3": ssl.TLSVersion.SSLv3, "TLSv1.0": ssl.TLSVersion.TLSv1,
                 "TLSv1.1": ssl.TLSVersion.TLSv1_1, "TLSv1.2": ssl.TLSVersion.TLSv1_2,
                 "TLSv1.3": ssl.TLSVersion.TLSv1_3}


@dataclass
class ServerTls:
    """A server line's TLS settings (model.Server.tls)."""
    verify: Optional[str] = None        # none | required (None: ssl-server-verify's default)
    ca_file: Optional[str] = None
    crt: Optional[str] = None
    sni: Optional[str] = None           # sample expression text
    sni_expr: Any = None                # compiled (config)
    verifyhost: Optional[str] = None
    alpn: Optional[str] = None
    min_ver: Optional[str] = None
    max_ver: Optional[str] = None
    ciphers: Optional[str] = None


def check_tls_option(opt: str, value: str) -> Optional[str]:
    """An error message for a bad TLS option value, None when it is good."""
    if opt == "verify" and value not in ("none", "required"):
        return f"'verify' expects 'none' or 'required' (got '{value}')"
    if opt in ("ssl-min-ver", "ssl-max-ver") and value not in _TLS_VERSIONS:
        return (f"'{opt}' : unknown ssl/tls version string '{value}', expects 'SSLv3', "
                "'TLSv1.0', 'TLSv1.1', 'TLSv1.2' or 'TLSv1.3'")
    if opt == "alpn" and any(p != "http/1.1" for p in value.split(",")):
        return (f"'alpn {value}': only 'http/1.1' is supported by edgestick (it speaks "
                "HTTP/1.1 to servers)")
    return None


def client_context(tls: ServerTls) -> ssl.SSLContext:
    """The SSLContext for connections to a server (`tls.verify` already resolved against
    ssl-server-verify by the configuration). Raises OSError/ssl.SSLError on a file that
    cannot be read (configuration errors)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False          # done as HAProxy does, see verify_peer
    if (tls.verify or "required") == "required":
        ctx.verify_mode = ssl.CERT_REQUIRED
        if tls.ca_file:
            ctx.load_verify_locations(cafile=tls.ca_file)
    else:
        ctx.verify_mode = ssl.CERT_NONE
    if tls.crt:
        ctx.load_cert_chain(tls.crt)
    if tls.alpn:
        ctx.set_alpn_protocols(tls.alpn.split(","))
    if tls.min_ver:
        ctx.minimum_version = _TLS_VERSIONS[tls.min_ver]
    if tls.max_ver:
        ctx.maximum_version = _TLS_VERSIONS[tls.max_ver]
    if tls.ciphers:
        ctx.set_ciphers(tls.ciphers)
    return ctx


def verify_peer(ctx: ssl.SSLContext, tls: ServerTls, sni: Optional[str], ssl_object) -> None:
    """HAProxy's name check after the chain check: against `verifyhost`, else against the
    SNI sent, else none. Raises ssl.SSLCertVerificationError on a mismatch."""
    if ctx.verify_mode != ssl.CERT_REQUIRED:
        return
    name = tls.verifyhost or sni
    if not name:
        return
    cert = ssl_object.getpeercert() or {}
    names = [v for k, v in cert.get("subjectAltName", ()) if k == "DNS"]
    if not names:
        names = [v for rdn in cert.get("subject", ()) for k, v in rdn if k == "commonName"]
    if not any(_name_matches(pattern, name) for pattern in names):
        raise ssl.SSLCertVerificationError(f"certificate does not match '{name}'")


def _name_matches(pattern: str, name: str) -> bool:
    """A certificate name against a host name: case-insensitive, a leading '*' covering
    exactly one label."""
    pattern, name = pattern.lower().rstrip("."), name.lower().rstrip(".")
    if pattern.startswith("*."):
        head, dot, rest = name.partition(".")
        return bool(head) and dot == "." and rest == pattern[2:]
    return pattern == name


# ---------------------------------------------------------------------------- PROXY protocol

def proxy_header(version: int, src: Optional[str], src_port: int, dst: Optional[str],
                 dst_port: int) -> bytes:
    """The PROXY protocol header for a client connection (`send-proxy`: version 1, text;
    `send-proxy-v2`: binary, no TLV). Without addresses (a health check): v1 UNKNOWN,
    v2 LOCAL."""
    fam = _family(src, dst)
    if version == 1:
        if fam is None:
            return b"PROXY UNKNOWN\r\n"
        proto = "TCP4" if fam == socket.AF_INET else "TCP6"
        return f"PROXY {proto} {src} {dst} {src_port} {dst_port}\r\n".encode()
    if fam is None:
        return PP2_SIGNATURE + b"\x20\x00\x00\x00"
    if fam == socket.AF_INET:
        addrs = socket.inet_pton(fam, src) + socket.inet_pton(fam, dst)
        fam_byte = 0x11
    else:
        addrs = socket.inet_pton(fam, src) + socket.inet_pton(fam, dst)
        fam_byte = 0x21
    body = addrs + struct.pack("!HH", src_port, dst_port)
    return PP2_SIGNATURE + bytes((0x21, fam_byte)) + struct.pack("!H", len(body)) + body


def _family(src: Optional[str], dst: Optional[str]) -> Optional[int]:
    try:
        a, b = ipaddress.ip_address(src or ""), ipaddress.ip_address(dst or "")
    except ValueError:
        return None
    if a.version != b.version:
        return None
    return socket.AF_INET if a.version == 4 else socket.AF_INET6


def readable(path: str) -> Optional[str]:
    """An error text when `path` cannot be read, else None."""
    try:
        with open(path, "rb"):
            return None
    except OSError as e:
        return os.strerror(e.errno) if e.errno else str(e)
