"""Traffic for the lab: frames built once with scapy, sent fast and bounded.

scapy builds a Packet in about a millisecond, so floods prebuild a pool of frames and
send their bytes on a raw AF_PACKET socket (70-160k frames/s from one Python process).
Every send loop stops on a count *and* a deadline.
"""
from __future__ import annotations

import ipaddress
import random
import socket
import time
from dataclasses import dataclass

from pyroute2 import netns

from .topology import SPOOF_NET4, SPOOF_NET6


def packet_socket(ns: str, ifname: str) -> socket.socket:
    """A raw AF_PACKET socket bound to `ifname` inside namespace `ns`.

    The socket keeps its namespace after we switch back."""
    netns.pushns(ns)
    try:
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
        s.bind((ifname, 0))
    finally:
        netns.popns()
    return s


def spoofed_sources(count: int, family: int = 4, seed: int = 1) -> list[str]:
    """`count` distinct source addresses from the lab's spoofing ranges (one per /64 for
    IPv6, so each counts as its own source)."""
    rnd = random.Random(seed)
    if family == 4:
        hosts = SPOOF_NET4.num_addresses - 2
        picks = rnd.sample(range(1, hosts + 1), min(count, hosts))
        return [str(SPOOF_NET4[i]) for i in picks]
    base = int(SPOOF_NET6.network_address)
    picks = rnd.sample(range(1, 1 << 16), min(count, (1 << 16) - 1))
    return [str(ipaddress.IPv6Address(base | (i << 64) | 1)) for i in picks]


def build_frames(kind: str, sources: list[str], dst: str, src_mac: str, dst_mac: str,
                 dport: int = 80, payload: int = 18, vlan: int | None = None,
                 seed: int = 1) -> list[bytes]:
    """One frame per source: kind is 'syn' (TCP SYN), 'udp', 'icmp' or 'ack'."""
    from scapy.layers.inet import ICMP, IP, TCP, UDP
    from scapy.layers.inet6 import IPv6, ICMPv6EchoRequest
    from scapy.layers.l2 import Dot1Q, Ether
    from scapy.packet import Raw

    rnd = random.Random(seed)
    frames = []
    for src in sources:
        v6 = ":" in src
        l2 = Ether(src=src_mac, dst=dst_mac)
        if vlan is not None:
            l2 = l2 / Dot1Q(vlan=vlan)
        l3 = IPv6(src=src, dst=dst) if v6 else IP(src=src, dst=dst)
        sport = rnd.randrange(1024, 65535)
        if kind == "syn":
            l4 = TCP(sport=sport, dport=dport, flags="S", seq=rnd.getrandbits(32))
        elif kind == "ack":
            l4 = TCP(sport=sport, dport=dport, flags="A", seq=rnd.getrandbits(32))
        elif kind == "udp":
            l4 = UDP(sport=sport, dport=dport) / Raw(b"\0" * payload)
        elif kind == "icmp":
            l4 = ICMPv6EchoRequest() if v6 else ICMP()
        else:
            raise ValueError(f"unknown frame kind '{kind}'")
        frames.append(bytes(l2 / l3 / l4))
    return frames


@dataclass
class SendResult:
    sent: int
    errors: int
    seconds: float

    @property
    def pps(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else 0.0


def send_frames(sock: socket.socket, frames: list[bytes], count: int, duration: float,
                pps: float | None = None) -> SendResult:
    """Send `count` frames cycling through `frames`, stopping at `duration` seconds at the
    latest; paced to `pps` when given (in batches of 64)."""
    if not frames:
        raise ValueError("no frames to send")
    n = errors = 0
    t0 = time.monotonic()
    deadline = t0 + duration
    pool = len(frames)
    while n < count:
        now = time.monotonic()
        if now >= deadline:
            break
        if pps and t0 + n / pps > now:
            time.sleep(min(t0 + n / pps - now, deadline - now))
            continue
        for _ in range(min(64, count - n)):
            try:
                sock.send(frames[n % pool])
            except OSError:           # ENOBUFS under load: counted, not fatal
                errors += 1
            n += 1
    return SendResult(n - errors, errors, time.monotonic() - t0)
