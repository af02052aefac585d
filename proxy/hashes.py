"""HAProxy's 32-bit hash functions (src/hash.c, full_hash in tools.h), shared by the
hash converters (sample.py) and hash-based load balancing (backend.py)."""
from __future__ import annotations

import binascii

U32 = 0xFFFFFFFF


def sdbm(data: bytes, h: int = 0) -> int:
    """sdbm over `data`, continuing from `h` (HAProxy chains it for base32)."""
    for c in data:
        h = (c + (h << 6) + (h << 16) - h) & U32
    return h


def djb2(data: bytes) -> int:
    h = 5381
    for c in data:
        h = (h * 33 + c) & U32
    return h


def wt6(data: bytes) -> int:
    h0, h1, step0, step1 = 0xA53C965A, 0x5CA6953A, 6, 18
    for t in data:
        h0 = ~(h0 ^ t) & U32
        h1 = ~(h1 + t) & U32
        t = ((h1 << step0) | (h1 >> (32 - step0))) & U32
        h1 = ((h0 << step1) | (h0 >> (32 - step1))) & U32
        h0 = t
        t = ((h0 >> 16) ^ h1) & 0xFFFF
        step0, step1 = t & 0x1F, t >> 11
    return h0 ^ h1


crc32 = binascii.crc32


def full_hash(a: int) -> int:
    """HAProxy's full_hash(): Bob Jenkins' 32-bit avalanche, then a multiply that spreads
    values over the whole range."""
    a = ((a + 0x7ED55D16) + (a << 12)) & U32
    a = ((a ^ 0xC761C23C) ^ (a >> 19)) & U32
    a = ((a + 0x165667B1) + (a << 5)) & U32
    a = ((a + 0xD3A2646C) ^ (a << 9)) & U32
    a = ((a + 0xFD7046C5) + (a << 3)) & U32
    a = ((a ^ 0xB55A4F09) ^ (a >> 16)) & U32
    return (a * 3221225473) & U32


# `hash-type ... <function>` names
BY_NAME = {"sdbm": sdbm, "djb2": djb2, "wt6": wt6, "crc32": crc32}
