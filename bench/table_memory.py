"""Resident memory of a stick table holding N IPv4 entries.

The configuration under test is the seed's abuse-detection table:
    stick-table type ip size 1m expire 30s store http_req_rate(10s),conn_cur
Each entry is created the way the proxy creates it (track + release of one request from
a distinct source address). Prints the RSS growth in bytes per entry; HAProxy needs
about 70 bytes per entry for the same table.

    .venv/bin/python bench/table_memory.py [N]
"""
from __future__ import annotations

import gc
import sys


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def main(argv: list[str]) -> int:
    n = int(argv[0]) if argv else 1_000_000
    from edgestick.proxy.stick_table import StickTable, parse_table_args

    decl, _ = parse_table_args(
        "type ip size 1m expire 30s store http_req_rate(10s),conn_cur".split())
    decl.size = max(decl.size, n)
    gc.collect()
    before = rss_bytes()
    table = StickTable("http_front", decl)
    now = 10_000_000
    for i in range(n):
        addr = (0xC6120000 + i) & 0xFFFFFFFF          # 198.18.0.0 onwards, as an int key
        row = table.track(addr, http_req=True, now=now)
        table.release(row, now=now)
    gc.collect()
    after = rss_bytes()
    used = table.used if False else len(table)
    print(f"entries: {used}")
    print(f"process RSS: {after / 1e6:.1f} MB (table: {(after - before) / 1e6:.1f} MB)")
    print(f"bytes/entry: {(after - before) / used:.1f} (HAProxy: ~70)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
