"""Maps: HAProxy's map files, their lookups and their runtime edits (src/map.c, pattern.c).

A map file holds `key value` lines. It is loaded once per file name and shared by every
converter naming it (HAProxy's pattern reference); each converter reads it through an
*expression*, an index built for its kind of match. Converters whose indexes would be
alike share one (HAProxy: same index, parse and output functions): `map_sub`, `map_dir`,
`map_dom` and `map_end` of one file share a list, each still matching its own way.

Lookups, as HAProxy 2.6 does them (checked against haproxy 2.6.12 by
tests/e2e/test_maps_vs_haproxy.py):
  str   exact key (dict)                      beg   longest key that prefixes the sample
  ip    longest prefix, IPv4 and IPv6 apart; an IPv4 sample missing the IPv4 keys is tried
        as ::ffff:a.b.c.d against the IPv6 keys, an IPv6 sample missing the IPv6 keys as the
        IPv4 address it carries (::ffff:a.b.c.d, ::a.b.c.d, 2002:AABB:CCDD::/48); IPv4 keys
        with a non-contiguous mask come last, in file order
  int   first key (N, lo:hi, lo-hi) containing the sample, in file order
  sub dir dom end reg regm   first key matching, in file order
Among equal keys the first one wins.

The registry is process-wide, like HAProxy's. Each configuration load reads the files it
names again (a reload sees the files' new contents; runtime edits are lost, as with
HAProxy's new process) and applies them only when the load succeeds; the map and index
objects stay the same, so expressions compiled earlier keep reading current data.
"""
from __future__ import annotations

import itertools
import re
import socket
from contextlib import contextmanager
from typing import Callable, Optional

from .acl import (_V4MAPPED, PATTERN_IDS, AclError, _addr_int, _match_word, build_matcher,
                  compile_regex, embedded_v4, parse_int_range, parse_net, read_pattern_lines)
from .sample import _ip_text, _str_to_int


class MapError(ValueError):
    """A map file or entry that cannot be used; the message is HAProxy's."""


# ---------------------------------------------------------------------------- files

def read_map_lines(path: str) -> list[tuple[int, str]]:
    """The pattern lines of a map file (acl.read_pattern_lines: HAProxy's reader)."""
    try:
        return read_pattern_lines(path)
    except AclError as e:
        raise MapError(str(e)) from None


def split_map_line(text: str) -> tuple[str, str]:
    """`key value`: the key ends at the first space or tab, the value is the rest of the
    line after the blanks that follow, without trailing blanks (may be empty)."""
    i = 0
    while i < len(text) and text[i] not in " \t":
        i += 1
    return text[:i], text[i:].lstrip(" \t").rstrip(" \t")


# ---------------------------------------------------------------------------- keys and values

def parse_int_value(text: str) -> Optional[int]:
    """A map's integer output (map_*_int): an optional '-' and digits, nothing else."""
    if re.fullmatch(r"-?[0-9]+", text) is None:
        return None
    return int(text)


def parse_ip_value(text: str) -> Optional[str]:
    """A map's address output (map_*_ip): IPv4 or IPv6, in its canonical text form."""
    for fam in (socket.AF_INET, socket.AF_INET6):
        try:
            return socket.inet_ntop(fam, socket.inet_pton(fam, text))
        except OSError:
            pass
    return None


_VALUE_PARSERS: dict[str, Callable[[str], object]] = {
    "str": lambda t: t, "int": parse_int_value, "ip": parse_ip_value}
# the data type `get map` names for a value
_VALUE_TYPE = {"str": lambda v: "str", "int": lambda v: "sint",
               "ip": lambda v: "ipv6" if ":" in v else "ipv4"}

# match method -> index kind; methods of one kind share an index
KINDS = {"str": "str", "beg": "beg", "sub": "list", "dir": "list", "dom": "list",
         "end": "list", "reg": "reg", "regm": "regm", "int": "int", "ip": "ip"}


class Entry:
    """One line of a map: key, value text, and the value parsed for each output type."""

    __slots__ = ("id", "key", "value", "typed", "line")

    def __init__(self, eid: int, key: str, value: str, line: int = 0):
        self.id, self.key, self.value, self.line = eid, key, value, line
        self.typed: dict[str, object] = {"str": value}


_ENTRY_IDS = itertools.count(0x5A0000)    # printed like HAProxy's pointers: 0x5a0000...


# ---------------------------------------------------------------------------- indexes

def _prefix_len(mask: int, bits: int) -> Optional[int]:
    """The prefix length of a contiguous mask, None otherwise."""
    plen = bin(mask).count("1")
    return plen if mask == (((1 << plen) - 1) << (bits - plen) if plen else 0) else None


class _PrefixTable:
    """Longest-prefix lookup of integers: {prefix length: {network: [entries]}}."""

    __slots__ = ("bits", "by_len", "lengths")

    def __init__(self, bits: int):
        self.bits = bits
        self.by_len: dict[int, dict[int, list]] = {}
        self.lengths: list[int] = []          # longest first

    def add(self, plen: int, net: int, entry) -> None:
        d = self.by_len.get(plen)
        if d is None:
            d = self.by_len[plen] = {}
            self.lengths = sorted(self.by_len, reverse=True)
        d.setdefault(net, []).append(entry)

    def remove(self, plen: int, net: int, entry) -> None:
        d = self.by_len[plen]
        lst = d[net]
        lst.remove(entry)
        if not lst:
            del d[net]
            if not d:
                del self.by_len[plen]
                self.lengths = sorted(self.by_len, reverse=True)

    def find(self, n: int):
        bits = self.bits
        for plen in self.lengths:
            lst = self.by_len[plen].get(n >> (bits - plen) << (bits - plen))
            if lst:
                return lst[0]
        return None


class MapExpr:
    """One index of a map's entries for a kind of match and an output type."""

    def __init__(self, ref: "MapRef", method: str, out: str):
        self.ref, self.method, self.out = ref, method, out
        self.kind = KINDS[method]
        self.gen = ref.gen
        self.keys: dict[str, list[Entry]] = {}          # str, beg
        self.clear()

    # -- building

    def clear(self) -> None:
        self.keys.clear()                               # in place: finders hold it
        self.beg_lengths: list[int] = []
        self.items: list[tuple] = []                    # list kinds: (entry, compiled key)
        self.v4 = _PrefixTable(32)
        self.v6 = _PrefixTable(128)

    def compile_key(self, key: str):
        """The key as this index keeps it; MapError (HAProxy's message) when it is not one."""
        kind = self.kind
        try:
            if kind in ("reg", "regm"):
                return compile_regex(key)
            if kind == "int":
                return parse_int_range(key)
            if kind == "ip":
                return parse_net(key, short_ipv4=False)
        except AclError as e:
            if kind == "ip":            # maps word every refused network this way
                raise MapError(f"'{key}' is not a valid IPv4 or IPv6 address") from None
            raise MapError(str(e)) from None
        return key

    def check(self, entry_key: str, value: str):
        """(compiled key, typed value) for a new entry, or MapError."""
        typed = _VALUE_PARSERS[self.out](value)
        if typed is None:
            raise MapError(f"unable to parse '{value}'")
        return self.compile_key(entry_key), typed

    def add(self, entry: Entry, compiled) -> None:
        kind = self.kind
        if kind in ("str", "beg"):
            lst = self.keys.get(entry.key)
            if lst is None:
                self.keys[entry.key] = [entry]
                if kind == "beg" and len(entry.key) not in self.beg_lengths:
                    self.beg_lengths = sorted(set(self.beg_lengths) | {len(entry.key)},
                                              reverse=True)
            else:
                lst.append(entry)
        elif kind == "ip":
            fam, net, mask = compiled
            bits = 32 if fam == socket.AF_INET else 128
            plen = _prefix_len(mask, bits)
            if plen is None:                       # IPv4 non-contiguous mask: the list
                self.items.append((entry, (net, mask)))
            else:
                (self.v4 if bits == 32 else self.v6).add(plen, net, entry)
        else:
            self.items.append((entry, compiled))

    def remove(self, entry: Entry) -> None:
        kind = self.kind
        if kind in ("str", "beg"):
            lst = self.keys.get(entry.key)
            if lst and entry in lst:
                lst.remove(entry)
                if not lst:
                    del self.keys[entry.key]
                    if kind == "beg":
                        self.beg_lengths = sorted({len(k) for k in self.keys}, reverse=True)
            return
        if kind == "ip":
            try:
                fam, net, mask = parse_net(entry.key, short_ipv4=False)
            except AclError:
                return
            bits = 32 if fam == socket.AF_INET else 128
            plen = _prefix_len(mask, bits)
            if plen is not None:
                try:
                    (self.v4 if bits == 32 else self.v6).remove(plen, net, entry)
                except (KeyError, ValueError):
                    pass
                return
        self.items = [it for it in self.items if it[0] is not entry]

    # -- lookups: finder(method)(sample) -> (entry, extra) or None

    def tree_index(self, entry: Entry) -> bool:
        """True when HAProxy keeps this entry in a tree (`get map` says idx=tree)."""
        if self.kind in ("str", "beg"):
            return True
        if self.kind == "ip":
            return all(e is not entry for e, _ in self.items)
        return False

    def value_type(self, entry: Entry) -> str:
        """The data type `get map` names for this entry's value."""
        return _VALUE_TYPE[self.out](entry.typed.get(self.out, entry.value))

    def finder(self, method: str) -> Callable:
        kind = self.kind
        if kind == "str":
            keys = self.keys

            def find_str(s):
                lst = keys.get(s)
                return (lst[0], None) if lst else None
            return find_str
        if kind == "beg":
            def find_beg(s):
                keys = self.keys
                n = len(s)
                for length in self.beg_lengths:
                    if length <= n:
                        lst = keys.get(s[:length])
                        if lst:
                            return lst[0], None
                return None
            return find_beg
        if kind == "int":
            def find_int(v):
                for entry, (lo, hi) in self.items:
                    if lo <= v <= hi:
                        return entry, None
                return None
            return find_int
        if kind == "ip":
            return self._find_ip
        if kind in ("reg", "regm"):
            def find_reg(s):
                for entry, rx in self.items:
                    m = rx.search(s)
                    if m is not None:
                        return entry, m
                return None
            return find_reg
        if method == "sub":
            def test(s, key):
                return key in s
        elif method == "end":
            def test(s, key):
                return s.endswith(key)
        else:
            delims = "/?" if method == "dir" else "/?.:"

            def test(s, key):
                return _match_word(s, key.strip(delims), delims)

        def find_list(s):
            for entry, key in self.items:
                if test(s, key):
                    return entry, None
            return None
        return find_list

    def _find_ip(self, text):
        a = _addr_int(text)
        if a is None:
            return None
        fam, n = a
        if fam == socket.AF_INET:
            e = self.v4.find(n) or self.v6.find(_V4MAPPED | n)
            n4 = n
        else:
            e = self.v6.find(n)
            n4 = embedded_v4(n)
            if e is None and n4 is not None:
                e = self.v4.find(n4)
        if e is not None:
            return e, None
        if n4 is not None:
            for entry, (net, mask) in self.items:
                if n4 & mask == net:
                    return entry, None
        return None


def _transplant(src: MapExpr, dst: MapExpr) -> None:
    """`dst` takes `src`'s contents (finders keep reading `dst`)."""
    dst.keys.clear()
    dst.keys.update(src.keys)
    dst.beg_lengths, dst.items, dst.v4, dst.v6 = src.beg_lengths, src.items, src.v4, src.v6
    dst.method = src.method


def regm_value(template: str, m: re.Match) -> str:
    """map_regm's output: the value with \\0-\\9 replaced by the match's groups."""
    def group(g):
        try:
            return m.group(int(g.group(1))) or ""
        except IndexError:
            return ""
    return re.sub(r"\\([0-9])", group, template)


# ---------------------------------------------------------------------------- references

_CLI_CASTS = {"int": _str_to_int, "ip": _ip_text}


class MapRef:
    """A map file: its entries in order, the indexes converters read, its users."""

    def __init__(self, path: str):
        self.path = path
        self.uid = -1
        self.gen = -1
        self.entries: list[Entry] = []
        self.by_id: dict[int, Entry] = {}
        self.exprs: list[MapExpr] = []
        self.users: list[tuple[str, int]] = []          # (config file, line) of converters
        self.entry_cnt = 0     # HAProxy's counter: + per index an entry joins, - per entry gone

    def fill(self, x: MapExpr, entries: list[Entry]) -> None:
        """Index every entry in `x`; MapError naming the file line of the first bad one."""
        x.clear()
        for e in entries:
            try:
                compiled, typed = x.check(e.key, e.value)
            except MapError as err:
                raise MapError(f"{err} at line {e.line} of file '{self.path}'") from None
            e.typed[x.out] = typed
            x.add(e, compiled)

    def index(self, method: str, out: str) -> MapExpr:
        """The lasting index object of this kind and output (made empty if new): compiled
        converters hold it, loads and edits change its contents."""
        kind = KINDS[method]
        for x in self.exprs:
            if x.kind == kind and x.out == out:
                return x
        x = MapExpr(self, method, out)
        x.gen = -1
        self.exprs.append(x)
        return x

    def current_exprs(self) -> list[MapExpr]:
        return [x for x in self.exprs if x.gen == self.gen]

    # -- runtime edits (the CLI)

    def add(self, key: str, value: str) -> None:
        """Append an entry; MapError (HAProxy's message) when an index refuses it."""
        checked = []
        for x in self.current_exprs():
            try:
                checked.append((x, *x.check(key, value)))
            except MapError:
                # HAProxy pushed the entry into the indexes before this one, then
                # removed it: its counter keeps the difference
                self.entry_cnt += len(checked) - 1
                raise
        e = Entry(next(_ENTRY_IDS), key, value)
        for x, compiled, typed in checked:
            e.typed[x.out] = typed
            x.add(e, compiled)
        for x in self.exprs:                  # older indexes follow when they can
            if x.gen != self.gen:
                try:
                    compiled, typed = x.check(key, value)
                except MapError:
                    continue
                e.typed.setdefault(x.out, typed)
                x.add(e, compiled)
        self.entries.append(e)
        self.by_id[e.id] = e
        self.entry_cnt += len(checked)

    def add_payload(self, payload: str) -> None:
        """`add map MAP <<`: entries from the payload, read as HAProxy 2.6 reads it: the
        key runs to the first space or tab (newlines included), the value from the next
        non-blank up to the end of the line. Entries before a refused one stay."""
        pos, n = 0, len(payload)
        while pos < n:
            k = pos
            while k < n and payload[k] not in " \t":
                k += 1
            if k == n:
                raise MapError(f"Missing value for key '{payload[pos:]}'")
            v = k
            while v < n and payload[v] in " \t":
                v += 1
            end = payload.find("\n", v)
            end = n if end < 0 else end
            self.add(payload[pos:k], payload[v:end])
            pos = end + 1

    def find_entries(self, ident: str) -> Optional[list[Entry]]:
        """Entries named by `#0x<id>` (None when the id is malformed) or by key."""
        if ident.startswith("#0x"):
            try:
                eid = int(ident[3:], 16)
            except ValueError:
                return None
            e = self.by_id.get(eid)
            return [e] if e is not None else []
        return [e for e in self.entries if e.key == ident]

    def set_value(self, entries: list[Entry], value: str) -> None:
        """New value for these entries; nothing changes when an index cannot parse it
        (HAProxy 2.6 then answers nothing either)."""
        typed = {}
        for x in self.exprs:
            v = _VALUE_PARSERS[x.out](value)
            if v is None:
                if x.gen == self.gen:
                    return
                continue
            typed[x.out] = v
        typed["str"] = value
        for e in entries:
            e.value = value
            e.typed.update(typed)

    def set_or_add(self, key: str, value: str) -> None:
        """`set-map`: the entries of `key` take `value`, or a new entry is added."""
        entries = [e for e in self.entries if e.key == key]
        if entries:
            self.set_value(entries, value)
        else:
            try:
                self.add(key, value)
            except MapError:
                pass                    # (an index refusing it: HAProxy adds nothing)

    def delete_key(self, key: str) -> None:
        """`del-map`: every entry of `key` goes."""
        entries = [e for e in self.entries if e.key == key]
        if entries:
            self.delete(entries)

    def delete(self, entries: list[Entry]) -> None:
        gone = {id(e) for e in entries}
        for x in self.exprs:
            for e in entries:
                x.remove(e)
        self.entries = [e for e in self.entries if id(e) not in gone]
        for e in entries:
            self.by_id.pop(e.id, None)
        self.entry_cnt -= len(entries)

    def clear(self) -> None:
        self.entry_cnt -= len(self.entries)
        self.entries = []
        self.by_id = {}
        for x in self.exprs:
            x.clear()

    def lookup_report(self, text: str) -> str:
        """`get map`: one line per index, the key looked up as HAProxy casts a string to
        what the index compares."""
        out = []
        for x in self.current_exprs():
            sample = _CLI_CASTS.get(x.kind, str)(text)
            hit = x.finder(x.method)(sample) if sample is not None else None
            line = f"type={x.method}, case=sensitive"
            if hit is None:
                line += ", found=no"
            else:
                e = hit[0]
                idx = "tree" if x.tree_index(e) else "list"
                line += (f", found=yes, idx={idx}, key=\"{e.key}\", value=\"{e.value}\", "
                         f"type=\"{x.value_type(e)}\"")
            out.append(line + "\n")
        return "".join(out)

    def description(self) -> str:
        """The `show map` line after the id and file."""
        text = f"pattern loaded from file '{self.path}'"
        for i, (f, n) in enumerate(self.users):
            text += (" used by" if i == 0 else ", by") + f" map at file '{f}' line {n}"
        return f"{text}. curr_ver=0 next_ver=0 entry_cnt={self.entry_cnt}"


# ---------------------------------------------------------------------------- ACL patterns
# HAProxy's pat_ref is one object for maps and ACLs: an ACL's `-f FILE` patterns and each
# ACL expression's own inline patterns are MapRefs whose entries are patterns (no value).
# Each is read through AclIndex objects, one per way of matching (method and case), that
# the ACL expressions of that way share. An expression keeps its fast matcher compiled
# from the patterns (acl.build_matcher) and rebuilds it when an index it reads changes, so
# the per-request path costs what it did and a runtime edit is seen by the next request.

# match methods HAProxy keeps in a tree (when case-sensitive); the others are lists
_TREE_METHODS = ("str", "beg", "ip")


class AclEntry(Entry):
    """A pattern: an Entry without value, nor the per-type values maps keep (memory)."""

    __slots__ = ()

    def __init__(self, eid: int, key: str, line: int = 0):
        self.id, self.key, self.line = eid, key, line

    value = ""

    @property
    def typed(self) -> dict:        # (MapRef.add stores into it: kept nowhere)
        return {}


class AclIndex:
    """The patterns of one ACL pattern reference as ACL expressions of one match method
    and case read them; the interface MapRef's edits drive (check/add/remove/clear)."""

    out = "str"

    def __init__(self, ref: "MapRef", method: str, icase: bool):
        self.ref, self.method, self.icase = ref, method, icase
        self.kind = ("acl", method, icase)
        self.gen = ref.gen
        self.entries: list[Entry] = []
        self.readers: list[Callable[[], None]] = []     # expressions' rebuild functions

    def check(self, key: str, value: str):
        """(None, key) when the pattern suits this match method; else MapError with the
        CLI's message (which refuses the short IPv4 forms a configuration accepts)."""
        try:
            if self.method == "ip":
                try:
                    parse_net(key, short_ipv4=False)
                except AclError:
                    raise MapError(f"'{key}' is not a valid IPv4 or IPv6 address") from None
            else:
                build_matcher(self.method, [key], self.icase)
        except AclError as e:
            raise MapError(str(e)) from None
        return None, key

    def _changed(self) -> None:
        for rebuild in self.readers:
            rebuild()

    def add(self, entry: Entry, compiled=None) -> None:
        self.entries.append(entry)
        self._changed()

    def remove(self, entry: Entry) -> None:
        self.entries = [e for e in self.entries if e is not entry]
        self._changed()

    def clear(self) -> None:
        self.entries = []
        self._changed()

    def lookup_line(self, text: str) -> str:
        """`get acl`'s line: the pattern HAProxy's lookup finds for `text` (a string the
        method casts), tree first (exact, longest prefix) then the list in order."""
        method = self.method
        name = "unknown(0x0)" if method == "meth" else method
        line = f"type={name}, case={'insensitive' if self.icase else 'sensitive'}"
        hits = []
        for e in self.entries:
            try:
                if build_matcher(method, [e.key], self.icase)(text):
                    hits.append(e)
            except AclError:
                continue
        tree = [e for e in hits if not self.icase and method in _TREE_METHODS
                and self._in_tree(e)]
        if tree:
            best, idx = max(tree, key=self._tree_rank), "tree"
        elif hits:
            best, idx = [e for e in hits if e not in tree][0], "list"
        else:
            return line + ", match=no\n"
        return line + f", match=yes, idx={idx}, pattern=\"{best.key}\"\n"

    def _in_tree(self, e: Entry) -> bool:
        if self.method != "ip":
            return True
        fam, _, mask = parse_net(e.key)
        return fam != socket.AF_INET or _prefix_len(mask, 32) is not None

    def _tree_rank(self, e: Entry):
        """Longest first (prefixes, networks); among equals the first added."""
        if self.method == "ip":
            fam, _, mask = parse_net(e.key)
            length = bin(mask).count("1") + (0 if fam == socket.AF_INET else -1000)
        else:
            length = len(e.key)
        return length, -self.entries.index(e)


class AclRef(MapRef):
    """A pattern reference of ACLs: a `-f` file (`path`) or an expression's own inline
    patterns (`path` empty, `what` says which expression)."""

    def __init__(self, path: str, uid: int, what: str = ""):
        super().__init__(path)
        self.uid, self.gen, self.what = uid, 0, what

    def acl_index(self, method: str, icase: bool) -> AclIndex:
        """The index of this way of matching, shared by the expressions that match alike
        (created with the reference's entries, counted as HAProxy counts them)."""
        for x in self.exprs:
            if x.kind == ("acl", method, icase):
                return x
        x = AclIndex(self, method, icase)
        x.entries = list(self.entries)
        self.exprs.append(x)
        self.entry_cnt += len(self.entries)
        return x

    def add_patterns(self, lines: list[tuple[int, str]]) -> None:
        """Load-time patterns: (file line, pattern)."""
        for n, text in lines:
            e = AclEntry(next(_ENTRY_IDS), text, n)
            self.entries.append(e)
            self.by_id[e.id] = e

    def lookup_report(self, text: str) -> str:
        return "".join(x.lookup_line(text) for x in self.exprs)

    def add_pattern(self, key: str) -> None:
        """`add-acl`: the pattern is added unless present (refused ones are not)."""
        if all(e.key != key for e in self.entries):
            try:
                self.add(key, "")
            except MapError:
                pass

    def description(self) -> str:
        """The `show acl` line after the id and file."""
        if self.path:
            text = f"pattern loaded from file '{self.path}'"
            for i, (f, n) in enumerate(self.users):
                text += (" used by" if i == 0 else ", by") + f" acl at file '{f}' line {n}"
        else:
            text = self.what
        # HAProxy's counter is unsigned: failed adds take it below zero (see MapRef.add)
        return f"{text}. curr_ver=0 next_ver=0 entry_cnt={self.entry_cnt % (1 << 64)}"


class _Load:
    """What a configuration load makes of one map file, applied at commit."""

    def __init__(self, ref: MapRef, lines: list[tuple[int, str]], uid: int):
        self.ref, self.uid = ref, uid
        self.entries = [Entry(next(_ENTRY_IDS), *split_map_line(text), n) for n, text in lines]
        self.indexes: dict[tuple[str, str], MapExpr] = {}     # built on the new entries
        self.users: list[tuple[str, int]] = []
        self.entry_cnt = 0


class Registry:
    """Every map of the process by file name. A configuration load (`loading()`) reads
    the files it names into the side and applies them only if the whole load succeeds, so
    a failed reload leaves the running maps as they were. Outside a load (an expression
    compiled at run time, a unit test) a converter's file is loaded at once. Ids come from
    acl.PATTERN_IDS, the sequence HAProxy shares between ACLs and maps."""

    def __init__(self):
        self.refs: dict[str, MapRef] = {}       # lasting objects, by file name
        self.gen = 0
        self.order: list[MapRef] = []          # the running maps, as created
        self.pending: Optional[dict[str, _Load]] = None
        self.acls: list[AclRef] = []           # the running ACL references, by id
        self.acl_files: dict[str, AclRef] = {}  # those of files, of the load under way
        self.acl_pending: Optional[list[AclRef]] = None

    @contextmanager
    def loading(self):
        """Around a configuration load: maps and ACL patterns named inside are committed
        at the end, or dropped when the load raises."""
        self.pending = {}
        self.acl_pending, self.acl_files = [], {}
        PATTERN_IDS.reset()
        try:
            yield
            self._commit(self.pending, replace=True)
            self._commit_acls(self.acl_pending)
        finally:
            self.pending = self.acl_pending = None

    # -- ACL pattern references (an expression's `-f` files and its inline patterns)

    def acl_file(self, path: str, lines: list[tuple[int, str]], uid: int) -> AclRef:
        """The reference of an ACL's `-f` file (read as `lines` the first time it is named
        in this load, when it takes the id `uid`)."""
        ref = self.acl_files.get(path)
        if ref is None:
            ref = self.acl_files[path] = AclRef(path, -1)
        if ref.uid < 0:                 # new, or made earlier by an add-/del-acl action
            ref.uid = uid
            ref.add_patterns(lines)
            self._new_acl(ref)
        return ref

    def acl_action_ref(self, path: str) -> AclRef:
        """The reference an `add-acl/del-acl(<path>)` action edits: the one of the ACLs
        naming that file (now or later in this load: the same object). A file no ACL
        names gets a reference `show acl` does not list, as in HAProxy."""
        ref = self.acl_files.get(path)
        if ref is None:
            ref = self.acl_files[path] = AclRef(path, -1)
        return ref

    def acl_inline(self, uid: int, what: str, lines: list[tuple[int, str]]) -> AclRef:
        """An ACL expression's own reference, holding its inline patterns."""
        ref = AclRef("", uid, what)
        ref.add_patterns(lines)
        self._new_acl(ref)
        return ref

    def _new_acl(self, ref: AclRef) -> None:
        (self.acl_pending if self.acl_pending is not None else self.acls).append(ref)

    def _commit_acls(self, refs: list[AclRef]) -> None:
        # HAProxy's internal httpclient proxy adds two ACLs after the configuration's
        # (`var(txn.hc_ip) -m ip 0.0.0.0`): `show acl` lists them
        for _ in range(2):
            ref = AclRef("", PATTERN_IDS.take(), "acl 'var' file 'httpclient' line 0")
            ref.add_patterns([(0, "0.0.0.0")])
            ref.acl_index("ip", False)
            refs.append(ref)
        self.acls = sorted(refs, key=lambda r: r.uid)

    def lookup_acl(self, ident: str) -> Optional[AclRef]:
        """An ACL reference by file name or `#<id>`."""
        if ident.startswith("#"):
            try:
                uid = int(ident[1:])
            except ValueError:
                return None
            return next((r for r in self.acls if r.uid == uid), None)
        return next((r for r in self.acls if r.path == ident), None)

    def begin(self) -> None:
        """A fresh, empty set of running maps (tests)."""
        with self.loading():
            pass

    def _read(self, path: str) -> _Load:
        if not path:
            raise MapError("failed to open pattern file <>")
        lines = read_map_lines(path)
        try:
            PATTERN_IDS.file(path, 2)
        except AclError as e:
            raise MapError(str(e)) from None
        ref = self.refs.get(path)
        if ref is None:
            ref = self.refs[path] = MapRef(path)
        return _Load(ref, lines, PATTERN_IDS.next - 1)

    def expr(self, path: str, method: str, out: str,
             where: Optional[tuple[str, int]] = None) -> MapExpr:
        """The index a `map_<method>_<out>` converter of `path` reads (shared when alike);
        `where` (config file, line) lists it among the map's users. MapError when the file
        or one of its lines cannot serve."""
        if self.pending is None:
            ref = self.refs.get(path)
            if ref is not None and ref.gen == self.gen:        # a running map
                x = ref.index(method, out)
                if x.gen != ref.gen:
                    tmp = MapExpr(ref, method, out)
                    ref.fill(tmp, ref.entries)
                    _transplant(tmp, x)
                    x.gen = ref.gen
                    ref.entry_cnt += len(ref.entries)
                return x
            load = self._read(path)
            x = self._index(load, method, out, where)
            self._commit({path: load}, replace=False)
            return x
        load = self.pending.get(path)
        if load is None:
            load = self.pending[path] = self._read(path)
        return self._index(load, method, out, where)

    def action_ref(self, path: str) -> MapRef:
        """The map an `http-request set-map/del-map(<path>)` action edits: the one a
        map converter loads (now or later in this load: the same lasting object), else
        the file's entries as read now, or none (HAProxy makes a reference even for a
        file that is not there; without a converter `show map` does not list it)."""
        if self.pending is not None and path in self.pending:
            return self.pending[path].ref
        ref = self.refs.get(path)
        if ref is None:
            ref = self.refs[path] = MapRef(path)
            try:
                lines = read_map_lines(path)
            except MapError:
                lines = []
            ref.entries = [Entry(next(_ENTRY_IDS), *split_map_line(text), n)
                           for n, text in lines]
            ref.by_id = {e.id: e for e in ref.entries}
        return ref

    @staticmethod
    def _index(load: _Load, method: str, out: str, where) -> MapExpr:
        key = (KINDS[method], out)
        if key not in load.indexes:
            tmp = MapExpr(load.ref, method, out)
            load.ref.fill(tmp, load.entries)
            load.indexes[key] = tmp
            load.entry_cnt += len(load.entries)
        if where is not None:
            load.users.append(where)
        return load.ref.index(method, out)

    def _commit(self, loads: dict[str, _Load], replace: bool) -> None:
        """The loaded maps become the running ones (all of them when `replace`)."""
        self.gen += 1
        order = [] if replace else [r for r in self.order if r.path not in loads]
        for load in loads.values():
            ref = load.ref
            ref.entries, ref.by_id = load.entries, {e.id: e for e in load.entries}
            ref.uid, ref.users, ref.entry_cnt = load.uid, load.users, load.entry_cnt
            ref.gen = self.gen
            first = [ref.index(t.method, t.out) for t in load.indexes.values()]
            for x in ref.exprs:
                tmp = load.indexes.get((x.kind, x.out))
                if tmp is None:      # only compiled expressions of an older load read it
                    try:
                        ref.fill(x, ref.entries)
                    except MapError:
                        x.clear()
                    continue
                _transplant(tmp, x)
                x.gen = ref.gen
            ref.exprs = first + [x for x in ref.exprs if x not in first]
            order.append(ref)
        for ref in order:               # maps kept from the previous load stay current
            if ref.path not in loads:
                for x in ref.current_exprs():
                    x.gen = self.gen
                ref.gen = self.gen
        self.order = order

    def lookup(self, ident: str) -> Optional[MapRef]:
        """A map by file name or `#<id>` (HAProxy's map identifiers)."""
        if ident.startswith("#"):
            try:
                uid = int(ident[1:])
            except ValueError:
                return None
            for ref in self.order:
                if ref.uid == uid:
                    return ref
            return None
        for ref in self.order:
            if ref.path == ident:
                return ref
        return None

    def maps(self) -> list[MapRef]:
        return list(self.order)


REGISTRY = Registry()
