"""HAProxy 2.6's HTTP cache (src/cache.c, shctx.c, http_ana.c's cacheability checks).

Configuration: `cache NAME` sections (total-max-size MB, max-object-size bytes, max-age s,
process-vary on|off, max-secondary-entries), `http-request cache-use NAME [cond]`,
`http-response cache-store NAME [cond]`, `filter cache NAME`. Runtime: `show cache`, the
cache_lookups / cache_hits columns of `show stat`.

What 2.6.12 does, and so this:
- The key: SHA-1 of "https://" + the first Host value + the request target (an absolute
  target alone); `show cache` prints its first 4 bytes as a little-endian integer. No
  Host: no key, the request neither looks up nor stores.
- cache-use: HTTP/1.1 GET or HEAD only; a request with Authorization, Cache-Control
  max-age* / no-cache* / max-stale* / min-fresh*, or Pragma: no-cache without
  Cache-Control is not served from the cache (Authorization and Cache-Control no-store*
  also keep its response out of it). Each other request counts a lookup, a hit when
  served. Later http-request rules still run; a hit is answered once they are done
  (counted as intercepted when the frontend answered), through the http-response rules
  of the proxy whose rule hit (a frontend's hit never reaches the backend) and the
  frontend's, with `Age` appended to the stored head. HEAD gets the head of a GET's entry;
  If-None-Match (weak comparison, `*`), else If-Modified-Since against Last-Modified
  (else Date, else the time stored), turn a hit into `304 Not Modified` (the stored head).
- cache-store: HTTP/1.1 GET answered 200 by a server, the head as the rule sees it, the
  body before compression. Not stored: a first Pragma header exactly `no-cache`; a
  Cache-Control value private, no-cache, no-store, max-age=0, s-maxage=0 (whole values)
  or no-cache="set-cookie... (unless a later `public`); no max-age / s-maxage / Expires
  and no ETag / Last-Modified; an Age header not a number or above the max-age; a Vary
  header (process-vary off) or one naming other than accept-encoding / referer; with
  Vary on accept-encoding, a Content-Encoding 2.6 does not know; an object above
  max-object-size (its whole stored size, below). A successful (2xx/3xx) unsafe method
  (not GET/HEAD/OPTIONS/TRACE) drops the key's entry.
- Freshness: s-maxage, else max-age (quoted allowed; a bad number: stored expired), else
  Expires - now (0 when past or bad), else the cache's max-age; never above max-age.
- Vary (process-vary on): the secondary key is 8 bytes, the Accept-Encoding bitmap and
  the CRC-32 of the first Referer, both little-endian; the stored bitmap is the
  response's encoding (identity without Content-Encoding) even when the response varies
  on referer alone, as 2.6 does: such an entry is never served. Up to
  max-secondary-entries per key; `show cache` prints the first of them.
- Memory: blocks of 1024 bytes (total-max-size MB of them); an entry takes 112 bytes
  (2.6's struct cache_entry) + 4 per HTX block + the start line (20 + its parts) + each
  header (name + value) + 1 (end of headers) + each body piece (+ 1 for a chunked end);
  `size` and `blocks` in `show cache`. Blocks are reused least recently used first (a
  hit refreshes its entry), dropping the entries they held.
"""
from __future__ import annotations

import hashlib
import re
import struct
import time
import weakref
import zlib
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Optional

from edgestick.cfgsyntax import ConfigError, c_atoi

from . import http1
from .sample import _header_values, _simple

BLOCK = 1024                    # CACHE_BLOCKSIZE
ENTRY_STRUCT = 112              # sizeof(struct cache_entry), 2.6 on x86-64
SL_STRUCT = 20                  # sizeof(struct htx_sl)
AGE_CAP = 2147483648            # CACHE_ENTRY_MAX_AGE
MAX_HEADERS_HTX = 16384 - 1024  # tune.bufsize - tune.maxrewrite
NAME_MAX = 32

# Accept-Encoding / Content-Encoding bitmap (2.6's enum vary_encoding)
GZIP, DEFLATE, BR, COMPRESS, AES128GCM, EXI, PACK200, ZSTD, IDENTITY, STAR, OTHER = (
    1 << i for i in range(11))
VARY_ACCEPT_ENCODING, VARY_REFERER = 1, 2
_VARY_NAMES = {"accept-encoding": VARY_ACCEPT_ENCODING, "referer": VARY_REFERER}
_SAFE_METHODS = ("GET", "HEAD", "OPTIONS", "TRACE")


# ------------------------------------------------------------------ configuration

@dataclass
class CacheSpec:
    """One `cache` section; `store` is its running Cache."""
    name: str
    where: object
    maxage: int = 60
    maxblocks: int = 0
    maxobjsz: int = 0
    process_vary: bool = False
    max_secondary: int = 10
    store: Optional["Cache"] = field(default=None, repr=False)


_STRTOUL = re.compile(r"[ \t\n\v\f\r]*([+-]?)([0-9]+)\Z")


def _strtoul(text: str) -> Optional[int]:
    """C's strtoul with the whole word used (None when not), as an unsigned int."""
    m = _STRTOUL.match(text)
    if m is None:
        return None
    v = int(m.group(2))
    return (-v if m.group(1) == "-" else v) % (1 << 64)




class SectionParser:
    """The lines of `cache` sections, HAProxy's checks and words (cfg_parse_cache)."""

    def __init__(self, caches: dict, warn):
        self.caches = caches            # name -> CacheSpec, the sections checked so far
        self.warn = warn                # warn(line, message)
        self.current: Optional[CacheSpec] = None

    def open(self, line) -> None:
        self.close()
        w = line.words
        if len(w) < 2:
            raise line.error("'cache' expects a <name> argument")
        if len(w) > 2:
            raise line.error(f"'cache' cannot handle unexpected argument '{w[2]}'.")
        name = w[1][:NAME_MAX]
        if len(w[1]) > NAME_MAX:
            self.warn(line, f"cache name is limited to 32 characters, truncate to '{name}'.")
        if name in self.caches:
            raise line.error(f"Duplicate cache name '{name}'.")
        from .config import _where
        self.current = CacheSpec(name, _where(line))

    def line(self, line) -> None:
        spec, kw, w = self.current, line.keyword, line.words
        arg = w[1] if len(w) > 1 else ""
        if kw not in ("total-max-size", "max-age", "max-object-size", "process-vary",
                      "max-secondary-entries"):
            raise line.error(f"unknown keyword '{kw}' in 'cache' section")
        if len(w) > 2:
            raise line.error(f"'{kw}' cannot handle unexpected argument '{w[2]}'.")
        if kw == "total-max-size":
            size = _strtoul(arg)
            if size is None:
                raise line.error(f"total-max-size wrong value '{arg}'")
            if size > 4095:
                raise line.error(f'"total-max-size" ({arg}) must not be greater than 4095')
            spec.maxblocks = size * 1024 * 1024 // BLOCK
        elif kw == "max-age":
            if not arg:
                self.warn(line, "'max-age' expects an age parameter in seconds.")
            spec.maxage = c_atoi(arg) % (1 << 32)
        elif kw == "max-object-size":
            if not arg:
                self.warn(line, "'max-object-size' expects a maximum file size parameter in "
                                "bytes.")
            size = _strtoul(arg)
            if size is None:
                raise line.error(f"max-object-size wrong value '{arg}'")
            spec.maxobjsz = size % (1 << 32)
        elif kw == "process-vary":
            bad = "'process-vary' expects \"on\" or \"off\" (enable or disable vary processing)."
            if not arg:
                self.warn(line, bad)
            if arg in ("on", "off"):
                spec.process_vary = arg == "on"
            else:
                self.warn(line, bad)
        else:
            if not arg:
                self.warn(line, "'max-secondary-entries' expects a strictly positive number.")
            n = _strtoul(arg)
            if n is None or n % (1 << 32) == 0:
                raise line.error(f"max-secondary-entries wrong value '{arg}'")
            spec.max_secondary = n % (1 << 32)

    def close(self) -> None:
        """The section ends (cfg_post_parse_section_cache)."""
        spec, self.current = self.current, None
        if spec is None:
            return
        w = spec.where
        if spec.maxblocks <= 0:
            raise ConfigError(f"Size not specified for cache '{spec.name}'", w.file, w.line,
                              "cache")
        if not spec.maxobjsz:
            spec.maxobjsz = (spec.maxblocks * BLOCK) >> 8
        elif spec.maxobjsz > spec.maxblocks * BLOCK // 2:
            raise ConfigError('"max-object-size" is limited to an half of "total-max-size" '
                              f"=> {spec.maxblocks * BLOCK // 2}", w.file, w.line, "cache")
        self.caches[spec.name] = spec


def parse_action(p, line, action: str, args, where: str, rule) -> None:
    """`http-request cache-use NAME` / `http-response cache-store NAME`: the name now, the
    cache at the end (check). Like HAProxy, the rule declares the proxy's cache filter
    (implicitly) unless one is declared for that name already."""
    name = args[0] if args else ""
    if not name:
        raise line.error(f"error detected in {p.kind} '{p.name}' while parsing "
                         f"'{where} {action}' rule : expects a cache name.")
    if len(args) > 1:
        raise line.error(f"'{where} {action}' expects either 'if' or 'unless' followed by "
                         f"a condition but found '{args[1]}'.")
    rule.header = name
    if not any(f[1] == name for f in p.cache_filters):
        from .config import _where
        p.cache_filters.append(("implicit", name, _where(line)))


def kw_filter(parser, p, line) -> bool:
    """`filter cache NAME`; False for other filters (compression's)."""
    w = line.words
    if len(w) < 2 or w[1] != "cache" or p.kind == "defaults":
        return False
    if len(w) < 3:
        raise line.error("'cache : expects a <name> argument'", "filter")
    if len(w) > 3:
        raise line.error(f"unknown keyword '{w[3]}'.", "filter cache")
    name = w[2]
    from .config import _where
    for i, (kind, fname, _) in enumerate(p.cache_filters):
        if fname == name:
            if kind != "implicit":
                raise line.error(f"'{p.name}: multiple explicit declarations of the cache "
                                 f"filter '{name}''", "filter")
            del p.cache_filters[i]      # the explicit declaration takes its place
            break
    p.cache_filters.append(("explicit", name, _where(line)))
    return True


def kw_filter_any(parser, p, line) -> None:
    """The `filter` keyword (config.PROXY_KEYWORDS): `filter cache` here, the others
    (compression) in proxy/compression.py; an explicit compression filter's place among
    the cache filters is noted (a cache must come first)."""
    from . import compression
    if kw_filter(parser, p, line):
        return
    compression.kw_filter(parser, p, line)
    from .config import _where
    p.cache_filters.append(("compression", None, _where(line)))


def check(cfg, parser_caches: dict) -> None:
    """After the whole configuration (cache_store_check, post_check_cache): every rule's
    cache exists, compression never before a cache; each cache gets its store."""
    cfg.caches = dict(parser_caches)
    for spec in cfg.caches.values():
        spec.store = Cache(spec)
    for p in cfg.proxies:
        kind = "frontend" if p.kind == "frontend" else ("backend" if p.kind == "backend"
                                                         else "proxy")
        comp_before = False
        for fkind, name, where in p.cache_filters:
            if fkind == "compression":
                comp_before = True
                continue
            if name not in cfg.caches:
                raise ConfigError(f"config: {kind} '{p.name}': unable to find the cache "
                                  f"'{name}' referenced by the filter 'cache'.",
                                  where.file, where.line, "cache")
            if comp_before:
                raise ConfigError(f"config: {kind} '{p.name}': unable to enable the "
                                  f"compression filter before the cache '{name}'.",
                                  where.file, where.line, "filter")
        for rule in p.http_request + p.http_response:
            if rule.action in ("cache-use", "cache-store"):
                if rule.header not in cfg.caches:
                    w = rule.where
                    raise ConfigError(f"config: {kind} '{p.name}': unable to find the cache "
                                      f"'{rule.header}' referenced by the filter 'cache'.",
                                      w.file, w.line, rule.action)
                rule.value = cfg.caches[rule.header]
    if cfg.caches:
        for p in list(cfg.proxies) + list(cfg.defaults.values()):
            p.caching = True


# ------------------------------------------------------------------ helpers

def _values(headers, name: str) -> list[str]:
    """HAProxy's http_find_header(..., full=0): every comma-separated value, trimmed."""
    return _header_values(headers, name, True)


def _first_full(headers, name: str):
    """http_find_header(..., full=1): the first such header's whole value, trimmed."""
    for h in headers:
        if h[0] == name:
            return h[1].strip(" \t")
    return None


_MONTHS = {m: i + 1 for i, m in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"))}
_IMF = re.compile(r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), (\d\d) ([A-Z][a-z][a-z]) (\d{4}) "
                  r"(\d\d):(\d\d):(\d\d) GMT\Z")
_RFC850 = re.compile(r"(Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday), "
                     r"(\d\d)-([A-Z][a-z][a-z])-(\d\d) (\d\d):(\d\d):(\d\d) GMT\Z")
_ASCTIME = re.compile(r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun) ([A-Z][a-z][a-z]) ([ \d]\d) "
                      r"(\d\d):(\d\d):(\d\d) (\d{4})\Z")


def parse_http_date(text: str) -> Optional[int]:
    """HAProxy's parse_http_date (IMF-fixdate, RFC 850, asctime): epoch seconds or None."""
    import calendar
    m = _IMF.match(text)
    if m:
        day, mon, year, hh, mi, ss = m.group(2), m.group(3), m.group(4), *m.group(5, 6, 7)
    else:
        m = _RFC850.match(text)
        if m:
            day, mon, yy, hh, mi, ss = m.group(2, 3, 4, 5, 6, 7)
            year = str(int(yy) + (1900 if int(yy) >= 70 else 2000))
        else:
            m = _ASCTIME.match(text)
            if not m:
                return None
            mon, day, hh, mi, ss, year = m.group(2, 3, 4, 5, 6, 7)
    if mon not in _MONTHS:
        return None
    try:
        return calendar.timegm((int(year), _MONTHS[mon], int(day), int(hh), int(mi), int(ss)))
    except (ValueError, OverflowError):
        return None


def _istmatchi(value: str, word: str) -> bool:
    return value[:len(word)].lower() == word


def cache_key(req) -> Optional[bytes]:
    """sha1_hosturi: None without a Host for an origin-form target."""
    target = req.target
    if not target:
        return None
    if target[:1] == "/" or target == "*" or "://" not in target:
        hosts = _values(req.headers, "host")
        if not hosts:
            return None
        text = "https://" + hosts[0] + target
    else:
        text = target
    return hashlib.sha1(text.encode("latin-1")).digest()


_ENCODING_TAILS = {"a": (("es128gcm", AES128GCM),), "b": (("r", BR),),
                   "c": (("ompress", COMPRESS),), "d": (("eflate", DEFLATE),),
                   "e": (("xi", EXI),), "g": (("zip", GZIP),), "i": (("dentity", IDENTITY),),
                   "p": (("ack200-gzip", PACK200),), "x": (("-gzip", GZIP), ("-compress", COMPRESS)),
                   "z": (("std", ZSTD),)}


def _parse_encoding(value: str):
    """parse_encoding_value: (bit, null weight) or None for an error. As in 2.6, a word
    that starts like a known encoding without being it gives bit 0 and no error."""
    if not value:
        return None
    first, rest = value[0], value[1:]
    bit = 0
    if first == "*":
        bit = STAR
    elif first in _ENCODING_TAILS:
        for tail, b in _ENCODING_TAILS[first]:
            if rest.startswith(tail):
                bit, rest = b, rest[len(tail):]
                break
    else:
        return None
    null = False
    if bit:
        rest = rest.lstrip(" \t")
        if rest:
            if rest[0] != ";":
                return None
            null = rest[1:].lstrip(" \t") == "q=0"
    return bit, null


def _accept_encoding_bitmap(headers) -> Optional[int]:
    """accept_encoding_normalizer: the bitmap of acceptable encodings (None: refused,
    16 values or more)."""
    bitmap, blocked, count = IDENTITY, 0xFFFFFFFF, 0
    for value in _values(headers, "accept-encoding"):
        if count >= 16:
            break
        count += 1
        if not value:
            continue
        got = _parse_encoding(value.lower())
        if got is None:
            bitmap |= OTHER
        elif got[1]:
            blocked &= ~got[0]
        else:
            bitmap |= got[0]
    if bitmap & STAR:
        bitmap = 0xFFFFFFFF
    bitmap &= blocked
    if count == 0:
        bitmap = 0xFFFFFFFF
    if count == 16:
        return None
    return bitmap & 0xFFFFFFFF


def secondary_key(headers, signature: int) -> Optional[bytes]:
    """http_request_build_secondary_key: None when the Accept-Encoding part fails."""
    ae = 0
    if signature & VARY_ACCEPT_ENCODING:
        ae = _accept_encoding_bitmap(headers)
        if ae is None:
            return None
    ref = 0
    if signature & VARY_REFERER:
        first = _first_full(headers, "referer")
        if first is not None:
            ref = zlib.crc32(first.encode("latin-1"))
    return struct.pack("<II", ae, ref)


def _keys_match(stored: bytes, wanted: bytes) -> bool:
    """secondary_key_cmp: the stored encodings all acceptable, the Referer hash equal."""
    ref = struct.unpack_from("<I", stored)[0]
    new = struct.unpack_from("<I", wanted)[0]
    if ref & OTHER or (ref & new) != ref:
        return False
    return stored[4:] == wanted[4:]


def _strl2llrc(text: str) -> Optional[int]:
    digits = text[1:] if text[:1] == "-" else text
    if not digits or not digits.isdigit() or not digits.isascii():
        return None
    return int(text)


# ------------------------------------------------------------------ storage

class Entry:
    """One stored response (HAProxy's cache_entry and its row of blocks)."""
    __slots__ = ("key", "hash", "secondary", "signature", "expire", "validated", "age",
                 "last_modified", "etag", "reason", "headers", "pieces", "trailers",
                 "chunked", "size", "blocks", "complete", "indexed", "count", "last_clear")

    def __init__(self, digest: bytes, signature: int, secondary: bytes):
        self.hash = digest
        self.key = struct.unpack_from("<I", digest)[0]
        self.signature = signature
        self.secondary = secondary
        self.expire = self.validated = self.age = self.last_modified = 0
        self.etag = None
        self.reason = "OK"
        self.headers: list = []
        self.pieces: list[bytes] = []
        self.trailers: list[bytes] = []
        self.chunked = False
        self.size = ENTRY_STRUCT
        self.blocks = 0
        self.complete = False
        self.indexed = False
        self.count = 0                  # secondary entries of its key (the last one's)
        self.last_clear = 0


class Cache:
    """A cache's index (key -> entries of that key, oldest first) and its blocks: free
    ones at the head of the available list, then rows in least recently used order."""

    def __init__(self, spec: CacheSpec):
        self.spec = spec
        self.index: dict[int, list[Entry]] = {}
        self.free_head = spec.maxblocks
        self.rows: "OrderedDict[int, tuple]" = OrderedDict()   # id -> (entry or None, blocks)
        self.hot = 0                    # blocks of rows being written or read

    # -- blocks (shctx)
    def available(self) -> int:
        return self.spec.maxblocks - self.hot

    def reserve(self, entry: Entry, nbytes: int) -> bool:
        """shctx_row_reserve_hot: room for `nbytes` more in the entry's row, blocks taken
        from the head of the available list (the entries they held dropped)."""
        if nbytes > self.available() * BLOCK:
            return False
        if self.spec.maxobjsz and entry.size + nbytes > self.spec.maxobjsz:
            return False
        need = -(-(entry.size + nbytes) // BLOCK) - entry.blocks
        entry.size += nbytes
        if need <= 0:
            return True
        self.hot += need
        entry.blocks += need
        while need > 0:
            if self.free_head:
                take = min(self.free_head, need)
                self.free_head -= take
                need -= take
                continue
            rid, (old, nblocks) = self.rows.popitem(last=False)
            if old is not None:
                self._unindex(old)
            take = min(nblocks, need)
            need -= take
            self.free_head += nblocks - take
        return True

    def release(self, entry: Entry, keep: bool) -> None:
        """The row goes back to the tail of the available list (kept: still holding the
        entry; else free blocks)."""
        self.hot -= entry.blocks
        self.rows[id(entry)] = (entry if keep else None, entry.blocks)

    def touch(self, entry: Entry) -> None:
        """A read of the entry: its row moves to the tail."""
        if id(entry) in self.rows:
            self.rows.move_to_end(id(entry))

    # -- index
    def _unindex(self, entry: Entry) -> None:
        if not entry.indexed:
            return
        entry.indexed = False
        dups = self.index.get(entry.key)
        if dups is None:
            return
        i = dups.index(entry)
        if entry.signature:
            if i + 1 < len(dups):
                dups[-1].count -= 1
            elif i > 0:
                dups[i - 1].count = entry.count - 1
        del dups[i]
        if not dups:
            del self.index[entry.key]

    def first(self, digest: bytes, now: int) -> Optional[Entry]:
        """entry_exist: the key's first entry, dropped when expired."""
        dups = self.index.get(struct.unpack_from("<I", digest)[0])
        if not dups:
            return None
        entry = dups[0]
        if entry.hash != digest:
            return None
        if entry.expire > now:
            return entry
        self._unindex(entry)
        return None

    def secondary(self, entry: Entry, wanted: bytes, now: int) -> Optional[Entry]:
        """secondary_entry_exist: among the key's entries from `entry` on, the one whose
        secondary key matches (expired ones met on the way dropped)."""
        if not entry.signature:
            return None
        dups = self.index.get(entry.key, [])
        i = dups.index(entry) if entry in dups else len(dups)
        found = None
        for e in list(dups[i:]):
            if _keys_match(e.secondary, wanted):
                found = e
                break
            if e.expire <= now:
                self._remove(e)
        if found is not None and found.expire <= now:
            self._remove(found)
            return None
        return found

    def _remove(self, entry: Entry) -> None:
        """A plain removal from the index (2.6's eb32_delete: counts left as they are)."""
        dups = self.index.get(entry.key)
        if entry.indexed and dups is not None:
            entry.indexed = False
            dups.remove(entry)
            if not dups:
                del self.index[entry.key]

    def insert(self, entry: Entry, now: int) -> bool:
        """insert_entry: False when the key has max-secondary-entries already."""
        dups = self.index.setdefault(entry.key, [])
        dups.append(entry)
        entry.indexed = True
        if not entry.signature:
            return True
        count, last_clear = 0, now
        if len(dups) > 1:
            prev = dups[-2]
            count, last_clear = prev.count, prev.last_clear
            if count >= self.spec.max_secondary:
                if last_clear == now:
                    self._unindex(entry)
                    return False
                # clear_expired_duplicates (a plain removal, counts untouched)
                for e in dups[-2::-1]:
                    if e.expire <= now:
                        self._remove(e)
                count = len(dups) - 1
                if count >= self.spec.max_secondary:
                    dups[-2].last_clear = now
                    self._unindex(entry)
                    return False
        entry.count, entry.last_clear = count + 1, last_clear
        return True

    def show_lines(self, now: int) -> list[tuple[str, bool]]:
        """This cache's part of `show cache`: (line, whether HAProxy may lose it), the
        pointers made up from object ids."""
        out = [(f"{_ptr(self)}: {self.spec.name} (shctx:{_ptr(self.rows)}, available "
                f"blocks:{self.available()})\n", False)]
        for key in sorted(self.index):
            e = self.index[key][0]
            if e.expire > now:
                out.append((f"{_ptr(e)} hash:{key} vary:0x{e.secondary.hex()} "
                            f"size:{e.size} ({e.blocks} blocks), refcount:0, "
                            f"expire:{e.expire - now}\n", True))
        return out


def _ptr(obj) -> str:
    """A pointer as HAProxy prints one (%p of a 47-bit address)."""
    return f"0x{0x7f0000000000 | (id(obj) & 0xffffffffff):x}"


CLI_BUFFER = 16384      # tune.bufsize: the CLI's output buffer


def show_cache(caches, now: int) -> str:
    """`show cache` of every cache. As 2.6 does, an entry line that does not fit in what
    is left of the output buffer is lost (the walk has moved past it when the buffer
    is flushed)."""
    out, used = [], 0
    for cache in caches:
        for line, losable in cache.show_lines(now):
            if used + len(line) > CLI_BUFFER:
                used = 0
                if losable:
                    continue
            out.append(line)
            used += len(line)
    return "".join(out)


# ------------------------------------------------------------------ per request

class Txn:
    """What cache-use worked out for a request (txn->cache_hash and its flags)."""
    __slots__ = ("digest", "secondary", "cacheable", "cook", "hit", "store")

    def __init__(self):
        self.digest = None
        self.secondary = None           # bytes when built (TX_CACHE_HAS_SEC_KEY)
        self.cacheable = self.cook = True
        self.hit = None                 # (Entry, CacheSpec, not-modified) of a hit
        self.store = None               # a Store under way


def _txn(ctx) -> Txn:
    t = getattr(ctx, "cache", None)
    if t is None:
        t = ctx.cache = Txn()
    return t


def use(rule, ctx, req, fe, backend) -> bool:
    """`http-request cache-use`: True on a hit (ctx.cache.hit then says what to serve)."""
    spec = rule.value
    cache = spec.store
    txn = _txn(ctx)
    ignore = req.version < 11 or req.method not in ("GET", "HEAD")
    if not (ignore and req.method not in _SAFE_METHODS):
        # http_check_request_for_cacheability
        headers = req.headers
        pragma = _first_full(headers, "pragma")
        pragma_found = pragma is not None and pragma.lower() == "no-cache"
        if any(h[0] == "authorization" for h in headers):
            txn.cacheable = txn.cook = False
            ignore = True
        cc_found = False
        for value in _values(headers, "cache-control"):
            cc_found = True
            low = value.lower()
            if low.startswith(("max-age", "no-cache", "max-stale", "min-fresh")):
                ignore = True
            elif low.startswith("no-store"):
                txn.cacheable = txn.cook = False
        if not cc_found and pragma_found:
            ignore = True
    if req.method not in _SAFE_METHODS:
        txn.cacheable = txn.cook = False
    digest = cache_key(req)
    if digest is None:
        return False
    txn.digest = digest
    if ignore:
        return False
    _count(fe if backend is None else backend, 0)
    now = int(time.time())
    res = cache.first(digest, now)
    if res is None:
        if spec.process_vary:
            txn.secondary = secondary_key(req.headers, 0xFFFFFFFF)
        return False
    cache.touch(res)
    if res.signature:
        wanted = secondary_key(req.headers, res.signature)
        if wanted is None:
            return False
        txn.secondary = wanted
        res = cache.secondary(res, wanted, now)
        if res is None:
            return False
    if not res.complete:
        return False
    _count(fe if backend is None else backend, 1)
    txn.hit = (res, spec, _not_modified(req.headers, res))
    return True


def _not_modified(headers, entry: Entry) -> bool:
    """should_send_notmodified_response."""
    found = False
    for value in _values(headers, "if-none-match"):
        found = True
        if value == "*":
            return True
        if entry.etag is None:
            break
        if _weak_equal(entry.etag, value):
            return True
    if found:
        return False
    ims = _first_full(headers, "if-modified-since")
    if ims is not None:
        t = parse_http_date(ims)
        if t is not None:
            return entry.last_modified <= t
    return False


def _weak_equal(a: str, b: str) -> bool:
    """http_compare_etags: weak comparison of two valid entity tags."""
    a, b = a.strip(" \t"), b.strip(" \t")
    a = a[2:] if a.startswith("W/") else a
    b = b[2:] if b.startswith("W/") else b
    if len(a) < 2 or len(b) < 2 or a[0] != '"' or a[-1] != '"' or b[0] != '"' or b[-1] != '"':
        return False
    return a == b


# res.cache_hit, res.cache_name: whether (from which cache) the response came
_simple("res.cache_hit", "bool",
        lambda ctx: getattr(getattr(ctx, "cache", None), "hit", None) is not None)
_simple("res.cache_name", "str",
        lambda ctx: (getattr(getattr(ctx, "cache", None), "hit", None) or (None, None))[1]
        and ctx.cache.hit[1].name)


# the counters of each Frontend or Backend: [lookups, hits]
_COUNTERS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _count(proxy, which: int) -> None:
    c = _COUNTERS.get(proxy)
    if c is None:
        c = _COUNTERS[proxy] = [0, 0]
    c[which] += 1


def stat_fields(proxy) -> dict:
    """cache_lookups and cache_hits of a frontend or backend `show stat` row."""
    c = _COUNTERS.get(proxy)
    return {"cache_lookups": c[0], "cache_hits": c[1]} if c else {}


# ------------------------------------------------------------------ storing

def _htx_head(status: int, reason: str, headers) -> int:
    """The head's share of the entry: start line, headers, end of headers, each
    block with its 4-byte info."""
    n = 4 + SL_STRUCT + 8 + 3 + len(reason)
    for name, value in headers:
        n += 4 + len(name) + len(value)
    return n + 5


def _calc_maxage(headers, spec: CacheSpec, now: int) -> tuple[int, int]:
    """http_calc_maxage: (the entry's max age, the response's own for Age)."""
    smaxage = maxage = -1
    for value in _values(headers, "cache-control"):
        for word, which in (("s-maxage", 0), ("max-age", 1)):
            if _istmatchi(value, word) and value[len(word):len(word) + 1] == "=" \
                    and len(value) > len(word) + 1:
                text = value[len(word) + 1:]
                if text[:1] == '"':
                    text = text[1:]
                m = re.match(r"[ \t]*[+-]?[0-9]+", text)
                if m is None:
                    return -1, 0
                v = int(m.group(0))
                if v < 0:
                    return -1, 0
                if which == 0:
                    smaxage = v
                else:
                    maxage = v
    expires = -1
    if maxage == -1 and smaxage == -1:
        exp = _first_full(headers, "expires")
        if exp is not None:
            t = parse_http_date(exp)
            expires = max(0, t - now) if t is not None else 0
    if smaxage > 0:
        return min(smaxage, spec.maxage), smaxage
    if maxage > 0:
        return min(maxage, spec.maxage), maxage
    if expires >= 0:
        return min(expires, spec.maxage), expires
    return spec.maxage, 0


def _response_cacheable(resp, txn: Txn) -> tuple[bool, bool]:
    """http_check_response_for_cacheability on the request's flags: (cacheable, cook)."""
    cacheable, cook = txn.cacheable, txn.cook
    headers = resp.headers
    pragma = _first_full(headers, "pragma")
    if pragma is not None and pragma.lower() == "no-cache":
        return False, False
    fresh = False
    for value in _values(headers, "cache-control"):
        low = value.lower()
        if low == "public":
            cacheable = cook = True
        elif low in ("private", "no-cache", "no-store", "max-age=0", "s-maxage=0"):
            cacheable = cook = False
        elif low.startswith('no-cache="set-cookie'):
            cook = False
        elif low.startswith(("s-maxage", "max-age")):
            fresh = True
    if not fresh:
        fresh = any(h[0] == "expires" for h in headers)
    if not fresh and not any(h[0] in ("etag", "last-modified") for h in headers):
        cacheable = False
    return cacheable, cook


class Store:
    """A response on its way into the cache (its body added as it is relayed)."""
    __slots__ = ("cache", "entry", "maxage")

    def __init__(self, cache: Cache, entry: Entry, maxage: int):
        self.cache, self.entry, self.maxage = cache, entry, maxage

    def __del__(self):
        # a response whose body never came through (denied after cache-store, an error)
        if self.entry is not None:
            self.abandon()

    def add(self, piece: bytes) -> None:
        if self.entry is None or not piece:
            return
        if self.cache.reserve(self.entry, 4 + len(piece)):
            self.entry.pieces.append(piece)
        else:
            self.abort()

    def end(self, trailers=()) -> None:
        """The whole body went through: the entry is complete."""
        entry = self.entry
        if entry is None:
            return
        if entry.chunked:
            # each trailer an HTX block (name and value without ": "), then the end
            extra = sum(4 + len(t) - 2 for t in trailers) + 5
            if not self.cache.reserve(entry, extra):
                self.abort()
                return
            entry.trailers = list(trailers)
        entry.complete = True
        self.cache.release(entry, True)
        self.entry = None

    def abort(self) -> None:
        """The object outgrew what the cache takes: the entry goes."""
        entry = self.entry
        if entry is None:
            return
        self.entry = None
        self.cache._unindex(entry)
        self.cache.release(entry, False)

    def abandon(self) -> None:
        """The stream ended before the body did: as in 2.6 the entry stays, incomplete
        (never served, and no other store for its key until it expires or is evicted)."""
        entry = self.entry
        if entry is None:
            return
        self.entry = None
        self.cache.release(entry, True)


def store_head(rule, ctx, resp) -> None:
    """`http-response cache-store`: whether this response goes into the cache (its head
    as it is now); the body follows through relay_body."""
    txn = getattr(ctx, "cache", None)
    if txn is None or txn.hit is not None or txn.store is not None:
        return
    spec = rule.value
    cache = spec.store
    now = int(time.time())
    if ctx.version < 11:
        return
    status = resp.status
    if ctx.method != "GET":
        if 200 <= status < 400 and ctx.method not in _SAFE_METHODS and txn.digest is not None:
            old = cache.first(txn.digest, now)
            if old is not None:
                cache._unindex(old)
        return
    if txn.digest is None or txn.digest[:4] == b"\0\0\0\0" or status != 200:
        return
    fe_model = ctx.fe.model if ctx.fe is not None else None
    if (getattr(ctx, "comp", None) is not None and fe_model is not None
            and fe_model.compression is not None and rule not in fe_model.http_response):
        return          # compressed by the frontend's filter, before the backend's cache
    headers = resp.headers
    if resp.framing == http1.LENGTH and spec.maxobjsz and (
            SL_STRUCT + 8 + 3 + len(resp.reason) + sum(len(n) + len(v) for n, v in headers)
            + 1 + resp.length > spec.maxobjsz):
        return
    if resp.framing not in (http1.LENGTH, http1.CHUNKED, http1.NO_BODY):
        return                          # (a body up to the close: not stored here)
    signature = 0
    vary = _values(headers, "vary")
    if spec.process_vary:
        for v in vary:
            bit = _VARY_NAMES.get(v.lower())
            if bit is None:
                return
            signature |= bit
        if signature:
            if txn.secondary is None:
                return
            ae, ref = struct.unpack("<II", txn.secondary)
            secondary = struct.pack("<II", ae if signature & VARY_ACCEPT_ENCODING else 0,
                                    ref if signature & VARY_REFERER else 0)
    elif vary:
        return
    cacheable, cook = _response_cacheable(resp, txn)
    if not cacheable or not cook:
        return
    old = cache.first(txn.digest, now)
    if old is not None:
        if signature:
            old = cache.secondary(old, secondary, now)
        if old is not None:
            if not old.complete:
                return
            cache._unindex(old)
    entry = Entry(txn.digest, signature, b"\0" * 8)
    if not cache.reserve(entry, 0):
        return
    if signature:
        entry.secondary = secondary
    entry.expire = now + 2
    if not cache.insert(entry, now):
        cache.release(entry, False)
        return
    maxage, true_maxage = _calc_maxage(headers, spec, now)
    stored = [h for h in headers]
    removed = 0
    ages = _values(headers, "age")
    if ages:
        age = _strl2llrc(ages[0])
        if age is None:
            return _drop(cache, entry)
        if age > 0:
            entry.age = min(age, AGE_CAP)
            if entry.age > true_maxage:
                return _drop(cache, entry)
        # removed from the response itself, its HTX block left unused (4 bytes stored)
        for i, h in enumerate(stored):
            if h[0] == "age":
                del stored[i]
                resp.headers = stored[:]
                resp.origin = None
                break
        removed = 4
    lm = _first_full(headers, "last-modified")
    t = parse_http_date(lm) if lm is not None else None
    if not t:
        d = _first_full(headers, "date")
        t = parse_http_date(d) if d is not None else None
    entry.last_modified = t or now
    for name, value in stored:
        if name == "etag":
            entry.etag = value
    head = _htx_head(status, resp.reason, stored) + removed
    if head + 8 * (len(stored) + 2) > MAX_HEADERS_HTX:
        return _drop(cache, entry)
    if spec.process_vary and signature:
        bits = 0
        for value in _values(headers, "content-encoding"):
            got = _parse_encoding(value)
            if got is None:
                return _drop(cache, entry)
            bits |= got[0]
        entry.secondary = struct.pack("<I", bits or IDENTITY) + entry.secondary[4:]
    if not cache.reserve(entry, head):
        return _drop(cache, entry)
    entry.reason = resp.reason
    entry.headers = [(n, v) for n, v in stored]
    entry.chunked = resp.framing == http1.CHUNKED
    entry.validated = now
    entry.expire = now + maxage
    txn.store = Store(cache, entry, maxage)


def _drop(cache: Cache, entry: Entry) -> None:
    cache._unindex(entry)
    cache.release(entry, False)


def pending(ctx) -> Optional[Store]:
    """The store a cache-store rule started for this response, if any."""
    txn = getattr(ctx, "cache", None)
    return txn.store if txn is not None else None


async def relay_body(fe, c, conn, resp, stream, store: Store, comp, t_server) -> bool:
    """The response body server -> client (compressed when `comp`), its payload into the
    store as it passes; True when the server connection may be reused. A body that does
    not end (timeout, error) leaves nothing in the cache."""
    try:
        return await _relay_body(fe, c, conn, resp, stream, store, comp, t_server)
    finally:
        store.abandon()                 # (a no-op once the entry is complete)


async def _relay_body(fe, c, conn, resp, stream, store: Store, comp, t_server) -> bool:
    from . import compression
    if comp is not None:
        ok = await compression.relay_body(c, conn, resp, stream, comp, t_server,
                                          (fe, stream.be), tap=store.add)
        if ok:
            store.end()
        return ok
    srv = conn.server
    if resp.framing == http1.NO_BODY:
        store.end()
        return True
    if resp.framing == http1.LENGTH:
        left = resp.length
        while left > 0:
            if conn.buf:
                take = min(left, len(conn.buf))
                data = bytes(conn.buf[:take])
                del conn.buf[:take]
                conn.consumed()
                srv.wire_in += take
                left -= take
                c.write(data)
                stream.bytes_out += take
                store.add(data)
                if c.paused:
                    await c.drain()
                continue
            if conn.closed:
                srv.srv_abrt += 1
                return False
            await conn.wait_data(t_server)
        store.end()
        return True
    scanner = http1.ChunkedScanner()
    while not scanner.done:
        if conn.buf:
            used = scanner.feed(conn.buf)
            del conn.buf[:used]
            conn.consumed()
            srv.wire_in += used
            payload = b"".join(scanner.payload)
            data = scanner.take()
            c.write(data)
            stream.bytes_out += len(data)
            stream.adj_out -= len(data) - len(payload)
            store.add(payload)
            if c.paused:
                await c.drain()
            continue
        if conn.closed:
            srv.srv_abrt += 1
            return False
        await conn.wait_data(t_server)
    store.end(scanner.trailers)
    return True


# ------------------------------------------------------------------ serving a hit

async def serve(fe, c, req, ctx, stream, backend) -> bool:
    """Answer from the cache (the http-request rules are done); returns keep-alive."""
    from . import compression
    entry, spec, not_modified = ctx.cache.hit
    now = int(time.time())
    if backend is None:
        fe.stats.intercepted += 1
        stream.be = fe.own_backend      # (a listen's bytes count on its backend too)
    else:                               # (the request reached the backend)
        stream.be = backend
        backend.req_tot += 1
        backend.stot += 1
    rec = stream.log
    if rec is not None:                 # the cache applet stands for the server
        rec.term, rec.applet = "LR", "<CACHE>"
        rec.t_queue = rec.t_connect = rec.t_resp = rec.t_begin
    resp = http1.Message()
    resp.status, resp.reason = (304, "Not Modified") if not_modified else (200, entry.reason)
    resp.headers = [[n, v] for n, v in entry.headers]
    age = max(0, now - entry.validated) + entry.age
    resp.headers.append(["age", str(min(age, AGE_CAP))])
    body = b"".join(entry.pieces)
    with_body = req.method != "HEAD" and not not_modified
    resp.framing = http1.NO_BODY if not with_body else (
        http1.CHUNKED if entry.chunked else http1.LENGTH)
    resp.length = len(body)
    # counted as HAProxy counts (bytes out): the head as the cache gives it, in its HTX
    # size, before the rules and compression change it, and the payload
    counted = http1.htx_size(resp, False) + (len(body) if with_body else 0)
    resp.framing = http1.CHUNKED if entry.chunked else http1.LENGTH
    ctx.status = resp.status
    # compression of the stored (uncompressed) response, as for one from a server
    comp = None
    fm = fe.model.compression
    bm = backend.model.compression if backend is not None else None
    if (fm is not None or bm is not None) and not not_modified:
        choice = compression.Plan(fm, bm).select(req)
        if choice is not None and choice.applies(req, resp):
            comp = ctx.comp = choice
    model = backend.model if backend is not None else fe.model
    closing = (not req.keep_alive or fe.proc.stopping or req.framing != http1.NO_BODY
               or fe.model.options.httpclose)
    if model.http_response or fe.model.http_response:
        # (a frontend's hit: the frontend stands as the stream's backend, as in HAProxy)
        if fe._response_rules(resp, ctx, stream, backend or _AsBackend(fe.model)):
            _, data, ends = fe._error_bytes(502, closing, backend)    # denied: a 502
            stream.status = 502
            stream.bytes_out += len(data)
            # (HAProxy counts what the cache gave too, and the 502 in its HTX size)
            from .frontend import _local_htx
            stream.adj_out += counted + _local_htx(data)
            c.write(data)
            return not (closing or ends)
    if fe.after_rules:
        fe._response_rules(resp, ctx, stream, backend, "http_after_response")
    k = min(resp.status // 100, 5) - 1
    fe.stats.hrsp[k] += 1
    if backend is not None:
        backend.hrsp[k] += 1
    stream.status = resp.status
    payload = b""
    if comp is not None:
        comp.rewrite_head(resp)
        enc = comp.encoder()
        out = b""
        for piece in entry.pieces:
            z = enc.compress(piece) + enc.flush(zlib.Z_SYNC_FLUSH) if enc else piece
            if z:
                out += b"%x\r\n%s\r\n" % (len(z), z)
        if enc is not None:
            z = enc.flush(zlib.Z_FINISH)
            if z:
                out += b"%x\r\n%s\r\n" % (len(z), z)
        payload = out + b"0\r\n\r\n"
        if enc is not None:
            compression._RATE_IN.update(len(body))
            compression._RATE_OUT.update(len(out))
        # (a chunked body's end counts 1 byte, as for a server's response)
        compression._count((fe, backend) if backend is not None else (fe,),
                           len(body) + entry.chunked, len(out), enc is not None, True)
    elif req.method != "HEAD" and not not_modified:
        if entry.chunked:
            payload = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in entry.pieces) \
                + b"0\r\n" + b"".join(t + b"\r\n" for t in entry.trailers) + b"\r\n"
        else:
            payload = body
    head = http1.serialize_response(resp, http1.connection_header(req, closing))
    data = head + payload
    stream.adj_out += counted - len(data)
    stream.bytes_out += len(data)
    c.write(data)
    spec.store.touch(entry)             # (the row goes back at the tail: used last)
    if c.paused:
        await c.drain()
    return not closing


class _AsBackend:
    """What http-response rules count on for a frontend's own hit."""
    __slots__ = ("model", "dresp", "hrsp")

    def __init__(self, model):
        self.model, self.dresp, self.hrsp = model, 0, [0] * 6


# ------------------------------------------------------------------ runtime API

def register_commands(proc, reg) -> None:
    from .runtime_api import ADMIN, PERMISSION_DENIED

    def show(cli, args):
        if not cli.has_level(ADMIN):
            return PERMISSION_DENIED
        cfg = getattr(proc, "cfg", None)
        now = int(time.time())
        return show_cache([spec.store for spec in (cfg.caches.values() if cfg else ())
                           if spec.store is not None], now)

    reg.register(("show", "cache"), show,
                 "show cache                              : show cache status")
