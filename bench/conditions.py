"""Cost of compiled conditions and sample expressions on the per-request path.

    .venv/bin/python -m bench.conditions

Each line: nanoseconds per evaluation (best of 5 runs of 200k calls), measured on one
request context with a tracked stick-table entry, as the HTTP engine evaluates them.
"""
from __future__ import annotations

import timeit

from edgestick.cfgsyntax import split_words
from edgestick.proxy.acl import compile_condition
from edgestick.proxy.sample import Context, compile_expr
from edgestick.proxy.stick_table import StickTable

CONDITIONS = [
    "if { sc_http_req_rate(0) gt 100 }",                       # seed configs 3 and 4
    "if { sc_http_err_rate(0) gt 20 }",
    "if { path_beg /api }",
    "if { src 10.0.0.0/8 192.168.0.0/16 }",
    "if { hdr(host) -i -m end .example.com }",
    "if !{ method GET HEAD } or { src_http_req_rate(fe) ge 50 }",
    "unless { sc0_tracked }",
]
EXPRESSIONS = ["src", "hdr(host)", "src,ipmask(24)"]


def main() -> int:
    table = StickTable.from_words(
        "fe", "type ip size 100k expire 30s store http_req_rate(10s),http_err_rate(10s)".split())
    row = table.track("198.18.0.10", http_req=True)
    ctx = Context("198.18.0.10", 40000, "198.18.0.1", 80, False, "GET", "/api/items", None,
                  "/api/items", [["host", "www.example.com"], ["user-agent", "bench"]],
                  [(table, row), None, None], table, {"fe": table})
    n = 200_000
    print(f"{'condition / expression':60s} ns/call")
    for text in CONDITIONS:
        c = compile_condition(split_words(text), {})
        best = min(timeit.repeat(lambda: c(ctx), number=n, repeat=5))
        print(f"{text:60s} {best / n * 1e9:7.0f}")
    from edgestick.freq_ctr import now_ms
    ctx.now = now_ms()                   # the engine may read the clock once per request
    for text in CONDITIONS[:2]:
        c = compile_condition(split_words(text), {})
        best = min(timeit.repeat(lambda: c(ctx), number=n, repeat=5))
        print(f"{text + '  (ctx.now set)':60s} {best / n * 1e9:7.0f}")
    ctx.now = None
    for text in EXPRESSIONS:
        e = compile_expr(text)
        best = min(timeit.repeat(lambda: e(ctx), number=n, repeat=5))
        print(f"{text:60s} {best / n * 1e9:7.0f}")
    base = min(timeit.repeat(lambda: None, number=n, repeat=5))
    print(f"{'(empty lambda call, included above)':60s} {base / n * 1e9:7.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
