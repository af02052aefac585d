"""Traffic scenarios shared by the demo, the Vagrant lab and the benchmarks.

Each scenario is bounded by a count *and* a duration and returns a `ScenarioResult` with
its counts. They run in the current network namespace against addresses and interfaces
given as parameters, so the same code runs inside a lab namespace (`lab.run(host,
scenario_argv(...))`, or in-process inside `in_netns(ns)`) and on a VM's real interfaces.

  legit        a legitimate HTTP client (keep-alive or a new connection per request):
               success rate and latencies
  http-flood   an HTTP request flood over real TCP connections from a few real sources
               (the attacker's extra addresses, ATTACKER_SOURCES)
  cred-stuff   credential stuffing: POST /login, which the backend answers 401, so the
               proxy's http_err_rate climbs (403 from the proxy, then an XDP ban)
  syn-flood    spoofed TCP SYNs from thousands of sources (raw frames, AF_PACKET)
  udp-flood    spoofed UDP from thousands of sources

Command line (prints the result as one JSON line on stdout, a summary on stderr):
  python -m edgestick.lab.scenarios NAME --target ADDR[:PORT] --count N --duration S [...]
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import socket
import sys
import time
from dataclasses import asdict, dataclass, field

# The attacker's real extra addresses for the HTTP flood (outside LAN, after .66 = attacker).
ATTACKER_SOURCES = ("198.18.0.67", "198.18.0.68", "198.18.0.69", "198.18.0.70")
HTTP_PORT = 80
REQUEST_TIMEOUT = 2.0           # per connect / per response; a banned source times out
FLOOD_KINDS = {"syn-flood": "syn", "udp-flood": "udp"}


@dataclass
class ScenarioResult:
    name: str
    target: str
    sent: int = 0                                   # requests started / frames sent
    statuses: dict[int, int] = field(default_factory=dict)
    first_status_at: dict[int, int] = field(default_factory=dict)   # status -> request number
    errors: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    latency_ms: dict[str, float] = field(default_factory=dict)     # p50/p90/p99/max of answers
    params: dict = field(default_factory=dict)

    @property
    def ok(self) -> int:
        return sum(n for s, n in self.statuses.items() if 200 <= s < 300)

    @property
    def answered(self) -> int:
        return sum(self.statuses.values())

    @property
    def failed(self) -> int:
        return self.sent - self.ok

    @property
    def success_rate(self) -> float:
        return self.ok / self.sent if self.sent else 0.0

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else 0.0

    @property
    def is_flood(self) -> bool:
        return self.name in FLOOD_KINDS

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(rate=round(self.rate, 1), seconds=round(self.seconds, 3))
        if not self.is_flood:          # frames have no answers to count
            d.update(ok=self.ok, failed=self.failed, success_rate=round(self.success_rate, 4))
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ScenarioResult":
        r = cls(d["name"], d["target"], d["sent"], {int(k): v for k, v in d["statuses"].items()},
                {int(k): v for k, v in d["first_status_at"].items()}, dict(d["errors"]),
                d["seconds"], dict(d["latency_ms"]), dict(d.get("params", {})))
        return r

    def summary(self) -> str:
        statuses = " ".join(f"{s}:{n}" for s, n in sorted(self.statuses.items())) or "-"
        errors = " ".join(f"{k}:{n}" for k, n in sorted(self.errors.items())) or "-"
        line = (f"{self.name} -> {self.target}: sent {self.sent} in {self.seconds:.2f}s "
                f"({self.rate:.0f}/s); statuses {statuses}; errors {errors}")
        if self.latency_ms:
            line += " ; latency ms " + " ".join(f"{k}={v}" for k, v in self.latency_ms.items())
        if not self.is_flood:
            line += f" ; success {self.success_rate:.1%}"
        return line


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    values = sorted(values)
    pick = lambda q: values[min(len(values) - 1, int(q * len(values)))]  # noqa: E731
    return {"p50": round(pick(0.50) * 1000, 2), "p90": round(pick(0.90) * 1000, 2),
            "p99": round(pick(0.99) * 1000, 2), "max": round(values[-1] * 1000, 2)}


@contextlib.contextmanager
def in_netns(ns: str | None):
    """Run the enclosed (synchronous) code in network namespace `ns` (None: stay).

    setns() applies to the calling thread: sockets made inside keep that namespace."""
    if ns is None:
        yield
        return
    from pyroute2 import netns
    netns.pushns(ns)
    try:
        yield
    finally:
        netns.popns()


# ---- HTTP scenarios: real TCP connections ----------------------------------------------

def split_target(target: str, default_port: int = HTTP_PORT) -> tuple[str, int]:
    """ADDR, ADDR:PORT, [V6]:PORT or V6 (no port)."""
    if target.startswith("["):
        host, _, rest = target[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else default_port
    if target.count(":") == 1:
        host, port = target.split(":")
        return host, int(port)
    return target, default_port


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Read one HTTP/1.x response; returns (status, server keeps the connection)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    version, status = lines[0].split(" ", 2)[:2]
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip().lower()
    keep = version == "HTTP/1.1" and headers.get("connection") != "close"
    if "content-length" in headers:
        await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding") == "chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif int(status) not in (204, 304):
        await reader.read()
        keep = False
    return int(status), keep


class _Budget:
    """Hands out request numbers until the count or the deadline runs out, paced to
    `rate` requests/s overall when given."""

    def __init__(self, count: int, duration: float, rate: float | None):
        self.count, self.rate = count, rate
        self.t0 = time.monotonic()
        self.deadline = self.t0 + duration
        self.issued = 0

    async def take(self) -> int | None:
        if self.issued >= self.count:
            return None
        n = self.issued
        self.issued += 1
        if self.rate:
            # Loop: the event loop's cached clock can fire a timer before its time.
            while (delay := self.t0 + n / self.rate - time.monotonic()) > 0 \
                    and time.monotonic() < self.deadline:
                await asyncio.sleep(min(delay, self.deadline - time.monotonic()))
        if time.monotonic() >= self.deadline:
            self.issued -= 1
            self.count = self.issued       # nobody takes more
            return None
        return n + 1


async def _http_run(result: ScenarioResult, host: str, port: int, request: bytes, *,
                    count: int, duration: float, concurrency: int, keepalive: bool,
                    sources: list[str] | None, rate: float | None, timeout: float) -> None:
    budget = _Budget(count, duration, rate)
    latencies: list[float] = []

    def error(kind: str) -> None:
        result.errors[kind] = result.errors.get(kind, 0) + 1

    async def worker(i: int) -> None:
        local = (sources[i % len(sources)], 0) if sources else None
        reader = writer = None
        while (number := await budget.take()) is not None:
            t0 = time.monotonic()
            try:
                if writer is not None and writer.is_closing():
                    writer = _drop(writer)      # the server closed it while we were idle
                if writer is None:
                    reader, writer = await asyncio.wait_for(
                        asyncio.open_connection(host, port, local_addr=local), timeout)
                writer.write(request)
                status, keep = await asyncio.wait_for(_read_response(reader), timeout)
                latencies.append(time.monotonic() - t0)
                result.statuses[status] = result.statuses.get(status, 0) + 1
                result.first_status_at.setdefault(status, number)
                if not (keep and keepalive):
                    writer.close()
                    writer = None
            except asyncio.TimeoutError:
                error("timeout")
                writer = _drop(writer)
            except ConnectionRefusedError:
                error("refused")
                writer = _drop(writer)
            except ConnectionResetError:
                error("reset")
                writer = _drop(writer)
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError,
                    RuntimeError):         # uvloop: a write on a transport closed under us
                error("closed")            # closed mid-response, or not HTTP
                writer = _drop(writer)
            except OSError as e:
                error(errno_name(e))
                writer = _drop(writer)
        _drop(writer)

    t0 = time.monotonic()
    tasks = [asyncio.ensure_future(worker(i)) for i in range(max(1, concurrency))]
    try:
        # Hard bound: the duration plus one request timeout, whatever the network does.
        await asyncio.wait_for(asyncio.gather(*tasks), duration + timeout + 1)
    except asyncio.TimeoutError:
        error("cut")
    result.sent = budget.issued
    result.seconds = time.monotonic() - t0
    result.latency_ms = _percentiles(latencies)


def _drop(writer) -> None:
    if writer is not None:
        writer.transport.abort()
    return None


def errno_name(e: OSError) -> str:
    import errno as errno_mod
    return errno_mod.errorcode.get(e.errno, "oserror").lower() if e.errno else "oserror"


def _http_request(method: str, host: str, path: str, body: bytes = b"",
                  content_type: str = "application/x-www-form-urlencoded") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nhost: {host}\r\nuser-agent: edgestick-lab\r\n"
    if body or method == "POST":
        head += f"content-type: {content_type}\r\ncontent-length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


def _run_http(name: str, target: str, request_for, *, count: int, duration: float,
              concurrency: int, keepalive: bool, sources, rate, timeout, params) -> ScenarioResult:
    host, port = split_target(target)
    result = ScenarioResult(name, f"{host}:{port}", params=params)
    try:
        import uvloop                  # a cheaper client leaves more CPU to what it measures
        run = uvloop.run
    except ImportError:
        run = asyncio.run
    run(_http_run(result, host, port, request_for(host), count=count,
                          duration=duration, concurrency=concurrency, keepalive=keepalive,
                          sources=list(sources) if sources else None, rate=rate,
                          timeout=timeout))
    return result


def legit(target: str, count: int = 100, duration: float = 10.0, keepalive: bool = True,
          concurrency: int = 1, rate: float | None = 5.0, path: str = "/",
          source: str | None = None, timeout: float = REQUEST_TIMEOUT) -> ScenarioResult:
    """A legitimate client: GET `path`, paced to `rate` requests/s (5/s stays well under
    the seed configuration's limit of 100 per 10 s), keep-alive or a new connection per
    request."""
    params = dict(mode="keepalive" if keepalive else "new", concurrency=concurrency, rate=rate,
                  path=path, source=source, count=count, duration=duration)
    return _run_http("legit", target, lambda h: _http_request("GET", h, path),
                     count=count, duration=duration, concurrency=concurrency,
                     keepalive=keepalive, sources=[source] if source else None, rate=rate,
                     timeout=timeout, params=params)


def http_flood(target: str, count: int = 5000, duration: float = 10.0,
               sources: list[str] | tuple[str, ...] = ATTACKER_SOURCES, concurrency: int = 16,
               keepalive: bool = True, path: str = "/", rate: float | None = None,
               timeout: float = REQUEST_TIMEOUT) -> ScenarioResult:
    """An HTTP request flood from a few real sources, `concurrency` connections spread over
    them, as fast as the edge answers."""
    params = dict(sources=list(sources), concurrency=concurrency, path=path,
                  mode="keepalive" if keepalive else "new", count=count, duration=duration)
    return _run_http("http-flood", target, lambda h: _http_request("GET", h, path),
                     count=count, duration=duration, concurrency=concurrency,
                     keepalive=keepalive, sources=sources, rate=rate, timeout=timeout,
                     params=params)


def cred_stuffing(target: str, count: int = 300, duration: float = 10.0,
                  source: str | None = None, concurrency: int = 2, keepalive: bool = True,
                  rate: float | None = None, timeout: float = 1.0) -> ScenarioResult:
    """Many POST /login from one source; the backend answers 401 to all of them. Expect
    401s, then 403 from the proxy (http_err_rate), then timeouts once the shield bans the
    source at XDP. (One request body serves: the edge counts responses, not passwords.)"""
    params = dict(source=source, concurrency=concurrency, count=count, duration=duration,
                  mode="keepalive" if keepalive else "new")
    body = b"user=admin&password=guess"
    return _run_http("cred-stuff", target, lambda h: _http_request("POST", h, "/login", body),
                     count=count, duration=duration,
                     concurrency=concurrency, keepalive=keepalive,
                     sources=[source] if source else None, rate=rate, timeout=timeout,
                     params=params)


# ---- spoofed floods: raw frames through lab.traffic --------------------------------------

def route_to(target: str) -> tuple[str, str]:
    """(interface, next-hop address) the kernel would use to reach `target`."""
    from pyroute2 import IPRoute
    with IPRoute() as ipr:
        route = ipr.route("get", dst=target)[0]
        oif = route.get("RTA_OIF")
        gateway = route.get("RTA_GATEWAY") or target
        ifname = ipr.link("get", index=oif)[0].get("IFLA_IFNAME")
    return ifname, gateway


def link_mac(ifname: str) -> str:
    from pyroute2 import IPRoute
    with IPRoute() as ipr:
        idx = ipr.link_lookup(ifname=ifname)
        if not idx:
            raise ValueError(f"no interface '{ifname}' here")
        return ipr.link("get", index=idx[0])[0].get("IFLA_ADDRESS")


def neighbour_mac(address: str, ifname: str, wait: float = 3.0) -> str:
    """The MAC of an on-link neighbour, resolving it first (a datagram to the discard
    port makes the kernel ARP / solicit for it)."""
    from pyroute2 import IPRoute
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    deadline = time.monotonic() + wait
    with IPRoute() as ipr:
        idx = ipr.link_lookup(ifname=ifname)[0]
        while True:
            for n in ipr.get_neighbours(family=family, ifindex=idx):
                if n.get("NDA_DST") == address and n.get("NDA_LLADDR") and n["state"] not in (0x20, 0x01):
                    return n.get("NDA_LLADDR")      # not FAILED / INCOMPLETE
            if time.monotonic() >= deadline:
                raise TimeoutError(f"no link-layer address for {address} on {ifname}")
            with socket.socket(family, socket.SOCK_DGRAM) as s:
                with contextlib.suppress(OSError):
                    s.sendto(b"", (address, 9))
            time.sleep(0.1)


def flood(kind: str, target: str, count: int = 100_000, duration: float = 10.0,
          sources: int = 4096, dport: int = HTTP_PORT, iface: str | None = None,
          dst_mac: str | None = None, pps: float | None = None, seed: int = 1) -> ScenarioResult:
    """Spoofed frames ('syn' or 'udp') from `sources` distinct addresses of the lab's
    spoofing ranges (the family follows `target`), through lab.traffic's bounded sender."""
    from . import traffic

    host, dport = split_target(target, dport)       # a port in the target wins
    out_if, next_hop = route_to(host)
    iface = iface or out_if
    dst_mac = dst_mac or neighbour_mac(next_hop, iface)
    family = 6 if ":" in host else 4
    frames = traffic.build_frames(kind, traffic.spoofed_sources(sources, family, seed), host,
                                  link_mac(iface), dst_mac, dport=dport, seed=seed)
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    with sock:
        sock.bind((iface, 0))
        sent = traffic.send_frames(sock, frames, count, duration, pps)
    name = "syn-flood" if kind == "syn" else f"{kind}-flood"
    result = ScenarioResult(name, f"[{host}]:{dport}" if family == 6 else f"{host}:{dport}",
                            sent=sent.sent, seconds=sent.seconds,
                            params=dict(iface=iface, dst_mac=dst_mac, sources=len(frames),
                                        dport=dport, pps=pps, count=count, duration=duration))
    if sent.errors:
        result.errors["send"] = sent.errors
    return result


def syn_flood(target: str, **kw) -> ScenarioResult:
    return flood("syn", target, **kw)


def udp_flood(target: str, **kw) -> ScenarioResult:
    kw.setdefault("dport", 53)
    return flood("udp", target, **kw)


SCENARIOS = ("legit", "http-flood", "cred-stuff", "syn-flood", "udp-flood")


def run(name: str, target: str, **kw) -> ScenarioResult:
    """Run scenario `name` with the keyword arguments its function takes."""
    fn = {"legit": legit, "http-flood": http_flood, "cred-stuff": cred_stuffing,
          "syn-flood": syn_flood, "udp-flood": udp_flood}.get(name)
    if fn is None:
        raise ValueError(f"unknown scenario '{name}' (scenarios: {', '.join(SCENARIOS)})")
    return fn(target, **kw)


def scenario_argv(name: str, target: str, python: str | None = None, **options) -> list[str]:
    """The command line running one scenario (for lab.run(host, ...) or ssh)."""
    argv = [python or sys.executable, "-m", "edgestick.lab.scenarios", name, "--target", target]
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            argv.append(flag)
        elif isinstance(value, (list, tuple)):
            for v in value:
                argv += [flag, str(v)]
        elif value is not None and value is not False:
            argv += [flag, str(value)]
    return argv


def parse_result(stdout: str) -> ScenarioResult:
    """The ScenarioResult a scenario command printed (its last JSON line)."""
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith("{"):
            return ScenarioResult.from_dict(json.loads(line))
    raise ValueError(f"no scenario result in output: {stdout[-300:]!r}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m edgestick.lab.scenarios", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", choices=SCENARIOS)
    p.add_argument("--target", required=True, help="ADDR[:PORT] of the edge (port 80 by default)")
    p.add_argument("--count", type=int, help="requests or frames at most")
    p.add_argument("--duration", type=float, default=10.0, help="seconds at most (default 10)")
    p.add_argument("--concurrency", type=int, help="HTTP: parallel connections")
    p.add_argument("--rate", type=float, help="HTTP: requests/s overall (0: unpaced)")
    p.add_argument("--new-connections", action="store_true",
                   help="HTTP: a new TCP connection per request (default keep-alive)")
    p.add_argument("--source", action="append", default=[],
                   help="HTTP: local address to connect from (repeat for several)")
    p.add_argument("--path", help="legit/http-flood: request path (default /)")
    p.add_argument("--sources", type=int, help="floods: distinct spoofed sources (default 4096)")
    p.add_argument("--iface", help="floods: interface to send on (default: the route's)")
    p.add_argument("--dst-mac", help="floods: next hop's MAC (default: resolved)")
    p.add_argument("--pps", type=float, help="floods: frames/s (default: as fast as possible)")
    p.add_argument("--dport", type=int,
                   help="floods: destination port when --target has none (SYN 80, UDP 53)")
    a = p.parse_args(argv)
    if a.count is not None and a.count < 0 or a.duration <= 0:
        p.error("--count must be >= 0 and --duration > 0")

    kw: dict = {"duration": a.duration}
    if a.count is not None:
        kw["count"] = a.count
    if a.name in FLOOD_KINDS:
        for key in ("sources", "iface", "dst_mac", "pps", "dport"):
            if getattr(a, key) is not None:
                kw[key] = getattr(a, key)
    else:
        kw["keepalive"] = not a.new_connections
        if a.concurrency is not None:
            kw["concurrency"] = a.concurrency
        if a.rate is not None:
            kw["rate"] = a.rate or None
        if a.name == "http-flood":
            if a.source:
                kw["sources"] = a.source
        elif a.source:
            if len(a.source) > 1:
                p.error(f"{a.name} connects from one --source")
            kw["source"] = a.source[0]
        if a.path and a.name != "cred-stuff":
            kw["path"] = a.path
    try:
        result = run(a.name, a.target, **kw)
    except (OSError, ValueError, TimeoutError) as e:
        print(f"scenario {a.name}: {e}", file=sys.stderr)
        return 1
    print(result.summary(), file=sys.stderr)
    print(json.dumps(result.to_dict()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
