"""ACLs and conditions, compiled once at configuration time into `cond(ctx) -> bool`.

    acl <name> <fetch> [flags] [operator] <value> ...    named; lines with one name are ORed
    ... if|unless <term> [<term> ...] [or|'||' <term> ...]
    term: [!]<acl name> | [!]{ <fetch> [flags] [operator] <value> ... }

Terms separated by spaces are ANDed; `or`/`||` separates OR groups. A fetch that gives no
sample makes its term false, so `!term` is then true (HAProxy's acl.c behaviour).
`cond.tri(ctx)` gives HAProxy's three-valued verdict (PASS, FAIL, MISS: wait for data).
"""
from __future__ import annotations

import re
import socket
from typing import Callable, Optional, Sequence

from .sample import (_DEFAULT_MATCH, ACL_ALIASES, FETCHES, REQUEST_HEADER_FETCHES,
                     SampleError, _split_chain, fetch_values_fn, split_call, value_cast)
from . import payload  # noqa: F401,E402  (registers req.len, req.payload, req.ssl_sni...)


class AclError(ValueError):
    """A condition or ACL that cannot be built; the caller adds file:line."""


# ---------------------------------------------------------------------------- patterns

_INT_OPS = {"eq", "ge", "gt", "le", "lt"}
_INT_SEP = re.compile(r"[:-]")


def parse_int_range(v: str) -> tuple[float, float]:
    """One integer pattern as HAProxy's pat_parse_int reads it: `N`, or a range `a:b` /
    `a-b`, `:b` / `-b` (up to b), `a:` / `a-` (from a); the inclusive (lo, hi)."""
    m = _INT_SEP.search(v)
    if m is not None:
        a, b = v[:m.start()], v[m.end():]
        try:
            lo = int(a) if a else -_INF
            hi = int(b) if b else _INF
        except ValueError:
            raise AclError(f"'{v}' is not a valid integer range") from None
        if not a and not b:
            raise AclError(f"'{v}' is not a valid integer range")
        return lo, hi
    try:
        n = int(v)
    except ValueError:
        raise AclError(f"'{v}' is not a number") from None
    return n, n


_INF = float("inf")


def _int_matcher(values: Sequence[str]) -> Callable[[int], bool]:
    """Integer patterns (see parse_int_range) and operators `eq ge gt le lt`, which stay
    in force for the following values until another one. Any pattern matching wins."""
    tests: list[tuple[float, float]] = []      # inclusive [lo, hi] ranges
    inf = _INF
    op = "eq"
    for v in values:
        if v in _INT_OPS:
            op = v
            continue
        lo, hi = parse_int_range(v)
        if _INT_SEP.search(v) is not None:         # a range: operators do not apply
            tests.append((lo, hi))
            continue
        n = lo
        tests.append({"eq": (n, n), "ge": (n, inf), "gt": (n + 1, inf), "le": (-inf, n),
                      "lt": (-inf, n - 1)}[op])
    # an operator without value adds no pattern (HAProxy accepts it)
    if not tests:
        return _never
    if len(tests) == 1:
        lo, hi = tests[0]
        if hi == inf:
            return lambda x: x >= lo
        if lo == -inf:
            return lambda x: x <= hi
        if lo == hi:
            return lambda x: x == lo
        return lambda x: lo <= x <= hi
    return lambda x: any(lo <= x <= hi for lo, hi in tests)


def parse_net(text: str, short_ipv4: bool = True) -> tuple[int, int, int]:
    """'198.18.0.0/15' -> (family, network int, mask int). Bare address = host.
    `short_ipv4`: "10", "127.1" read as the resolver reads them (ACLs; maps refuse them)."""
    addr, _, bits = text.partition("/")
    for fam, size in ((socket.AF_INET, 32), (socket.AF_INET6, 128)):
        try:
            raw = socket.inet_pton(fam, addr)
        except OSError:
            if (fam != socket.AF_INET or not short_ipv4 or not addr
                    or addr.strip("0123456789.") != ""):
                continue
            try:                # short IPv4 forms ("10", "127.1") as HAProxy's resolver reads
                raw = socket.inet_aton(addr)
            except OSError:
                continue
        if bits == "":
            plen = size
        elif bits.isdigit() and int(bits) <= size:
            plen = int(bits)
        elif fam == socket.AF_INET:
            try:   # dotted netmask form 255.255.0.0
                mask = int.from_bytes(socket.inet_pton(fam, bits), "big")
            except OSError:
                raise AclError(f"invalid IP address or network '{text}'") from None
            return fam, int.from_bytes(raw, "big") & mask, mask
        else:
            raise AclError(f"invalid IP address or network '{text}'")
        mask = ((1 << plen) - 1) << (size - plen) if plen else 0
        return fam, int.from_bytes(raw, "big") & mask, mask
    raise AclError(f"'{text}' is not a valid IPv4 or IPv6 address")


_V4MAPPED = 0xFFFF << 32


def _addr_int(v) -> Optional[tuple[int, int]]:
    s = str(v)
    fam = socket.AF_INET6 if ":" in s else socket.AF_INET
    try:
        return fam, int.from_bytes(socket.inet_pton(fam, s), "big")
    except OSError:
        return None


def _ip_matcher(values: Sequence[str]) -> Callable[[object], bool]:
    nets4: list[tuple[int, int]] = []
    nets6: list[tuple[int, int]] = []
    for v in values:
        fam, net, mask = parse_net(v)
        (nets4 if fam == socket.AF_INET else nets6).append((net, mask))
    if not nets4 and not nets6:
        raise AclError("no value to match against")

    cache: dict = {}

    def cached(v) -> bool:
        r = cache.get(v)
        if r is None:
            if len(cache) >= 4096:
                cache.clear()
            r = cache[v] = match(v)
        return r

    def match(v) -> bool:
        a = _addr_int(v)
        if a is None:
            return False
        fam, n = a
        if fam == socket.AF_INET:
            if any(n & m == net for net, m in nets4):
                return True
            mapped = _V4MAPPED | n           # v4 sample vs v6 patterns: ::ffff:a.b.c.d
            return any(mapped & m == net for net, m in nets6)
        if any(n & m == net for net, m in nets6):
            return True
        n4 = embedded_v4(n)
        return n4 is not None and any(n4 & m == net for net, m in nets4)
    return cached


def embedded_v4(n6: int) -> Optional[int]:
    """The IPv4 address an IPv6 one carries, as HAProxy reads it to meet IPv4 patterns:
    mapped (::ffff:a.b.c.d), compatible (::a.b.c.d) or 6to4 (2002:aabb:ccdd::/48)."""
    if n6 >> 32 in (0xFFFF, 0):
        return n6 & 0xFFFFFFFF
    if n6 >> 112 == 0x2002:
        return (n6 >> 80) & 0xFFFFFFFF
    return None


def _str_matcher(method: str, values: Sequence[str], icase: bool) -> Callable[[str], bool]:
    if method == "found":
        return lambda s: True
    if not values:
        raise AclError("no value to match against")
    if icase:
        vals = [v.lower() for v in values]
    else:
        vals = list(values)
    norm = (lambda s: s.lower()) if icase else (lambda s: s)
    if method == "str":
        exact = frozenset(vals)
        if icase:
            return lambda s: s.lower() in exact
        return lambda s: s in exact
    if method == "beg":
        t = tuple(vals)
        return lambda s: norm(s).startswith(t)
    if method == "end":
        t = tuple(vals)
        return lambda s: norm(s).endswith(t)
    if method == "sub":
        return lambda s: any(v in norm(s) for v in vals)
    if method == "reg":
        regs = [compile_regex(v, icase) for v in values]
        return lambda s: any(r.search(s) for r in regs)
    if method in ("dir", "dom"):
        delims = "/?" if method == "dir" else "/?.:"
        words = [v.strip(delims) for v in vals]
        return lambda s: any(_match_word(norm(s), w, delims) for w in words)
    raise AclError(f"unknown match method '{method}'")


def _match_word(s: str, word: str, delims: str) -> bool:
    """`word` occurs in `s` bounded by delimiters or the ends (HAProxy's -m dir/-m dom)."""
    if not word:
        return False
    start = s.find(word)
    n = len(word)
    while start >= 0:
        end = start + n
        if (start == 0 or s[start - 1] in delims) and (end == len(s) or s[end] in delims):
            return True
        start = s.find(word, start + 1)
    return False


_KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "CONNECT",
                            "TRACE"})


def _meth_matcher(values: Sequence[str], icase: bool) -> Callable[[str], bool]:
    """HAProxy's method match: a pattern naming a standard method (exact case) matches only
    that method; other patterns match only non-standard methods, by text (-i applies)."""
    known = frozenset(v for v in values if v in _KNOWN_METHODS)
    other = frozenset((v.lower() if icase else v) for v in values if v not in _KNOWN_METHODS)

    def match(m: str) -> bool:
        if m in _KNOWN_METHODS:
            return m in known
        return (m.lower() if icase else m) in other
    return match


MATCH_METHODS = ("found", "bool", "int", "ip", "bin", "len", "str", "sub", "reg", "beg",
                 "end", "dir", "dom", "meth")


def _through(cast: Optional[Callable], match: Callable) -> Callable:
    """Apply `match` to the cast value; a value that does not cast never matches."""
    if cast is None:
        return match

    def casted(v):
        c = cast(v)
        return c is not None and match(c)
    return casted


def build_matcher(method: str, values: Sequence[str], icase: bool,
                  out: str = "str") -> Callable[[object], bool]:
    """Matcher for one sample value (not None) of type `out`; a value that does not cast
    to what the method compares never matches."""
    if method == "found":            # values are ignored, as HAProxy does
        return lambda v: True
    if method == "bool":
        return _through(value_cast(out, "bool"), bool)
    if method == "int":
        return _through(value_cast(out, "int"), _int_matcher(values))
    if method == "len":
        m = _int_matcher(values)
        return _through(value_cast(out, "str"), lambda v: m(len(v)))
    if method == "ip":
        return _through(value_cast(out, "ip"), _ip_matcher(values))
    if method == "bin":
        try:
            pats = {bytes.fromhex(v) for v in values}
        except ValueError:
            raise AclError("binary patterns must be hexadecimal strings") from None
        return lambda v: (v if isinstance(v, bytes) else str(v).encode()) in pats
    if method == "meth":
        if not values:
            raise AclError("no value to match against")
        return _through(value_cast(out, "str"), _meth_matcher(values, icase))
    return _through(value_cast(out, "str"), _str_matcher(method, values, icase))


# ---------------------------------------------------------------------------- ACL expressions

class AclExpr:
    """One `fetch [flags] values...` test: `test(ctx) -> True/False/None` (None = no sample);
    `term(ctx)`: the same as a condition term, `test(ctx) is True`."""

    __slots__ = ("text", "test", "fetch", "term")

    def __init__(self, text: str, test: Callable, fetch: str = "", term: Callable | None = None):
        self.text, self.test, self.fetch = text, test, fetch
        self.term = term if term is not None else _term_fn(test, False)


def _fetch_for_acl(word: str):
    """Resolve an ACL keyword: a fetch name or an alias (path_beg…) fixing the method."""
    first = _split_chain(word)[0]
    name, _ = split_call(first)
    alias = ACL_ALIASES.get(name)
    if alias is not None and name not in FETCHES:
        base, method = alias
        return base + word[len(name):], method
    return word, None


def parse_acl_expr(words: Sequence[str], refs=None, where=None) -> AclExpr:
    """Compile `fetch [-i] [-m method] [--] [op] values...`. Its patterns live in pattern
    references (proxy/maps.py: its `-f` files' and its own, the runtime API edits them);
    `where` or refs.where, (config file, line), names the expression in `show acl`."""
    from .maps import REGISTRY       # (maps.py builds on this module)
    if not words:
        raise AclError("missing fetch method")
    if where is None:
        where = getattr(refs, "where", None)
    fetch_text, alias_method = _fetch_for_acl(words[0])
    if refs is not None:
        refs.in_acl = True
    try:
        fn, fd, out, multi = fetch_values_fn(fetch_text, refs)
    except SampleError as e:
        raise AclError(str(e)) from None
    finally:
        if refs is not None:
            refs.in_acl = False
    method = alias_method
    icase = False
    file_values: list[tuple[int, str]] = []
    files: list[str] = []
    file_refs = []
    i = 1
    while i < len(words) and words[i].startswith("-"):      # `--` before a "-1" pattern
        flag = words[i]
        if flag == "--":
            i += 1
            break
        if flag == "-i":
            icase = True
        elif flag == "-n":
            pass
        elif flag == "-m":
            if i + 1 >= len(words):
                raise AclError("'-m' expects a match method")
            m = words[i + 1]
            if m not in MATCH_METHODS:
                raise AclError(f"unknown match method '{m}' for ACL keyword '{fetch_text}'")
            method = m                   # overrides the one an ACL spelling implies
            i += 1
        elif flag == "-f":
            if i + 1 >= len(words):
                raise AclError("'-f' expects a file name")
            path = words[i + 1]
            first = path not in PATTERN_IDS.files
            lines = _pattern_file(path)
            file_values += lines
            files += [path] * (len(file_values) - len(files))
            if path not in (r.path for r in file_refs):
                file_refs.append(REGISTRY.acl_file(path, lines if first else [],
                                                   PATTERN_IDS.next - 1))
            i += 1
        elif flag in ("-M", "-u"):
            raise AclError(f"ACL flag '{flag}' is not supported by edgestick")
        else:
            raise AclError(f"'{flag}' is not a valid ACL option. Please use '--' before any "
                           "pattern beginning with a '-'")
        i += 1
    values = [v for _, v in file_values] + list(words[i:])
    hook = getattr(fn, "patterns_hook", None)     # http_auth_group checks its groups
    if hook is not None:
        hook(values)
    uid = PATTERN_IDS.take()                # the expression's own reference
    # sample types HAProxy cannot cast to what the method compares: booleans to addresses,
    # methods to booleans, integers or addresses
    if (method == "ip" and out == "bool") or (
            fd.match == "meth" and out == fd.out and method in ("bool", "int", "ip")):
        raise AclError(f"matching method '{method}' cannot be used with fetch keyword "
                       f"'{fd.name}'")
    if method is None and out == "any":     # var(): its type is known at run time only
        raise AclError("matching method must be specified first (using '-m') when using a "
                       f"sample fetch of this type ('{fd.name}').")
    if method is None:
        # a converter chain changes the type, hence the default match method
        method = fd.match if out == fd.out else _DEFAULT_MATCH[out]
        if out == "bool" and not values:
            method = "bool"
    if not values and method not in ("found", "bool"):
        # HAProxy accepts an ACL without patterns: it never matches (a sample still makes
        # the term false rather than "no sample", which only matters under `!`)
        match = _never
    else:
        try:
            match = build_matcher(method, values, icase, out)
        except AclError:
            _file_error(method, file_values, files, icase, out)
            raise
    # the pattern references: the files', then the expression's own (inline patterns; an
    # integer operator stays with the value it applies to)
    inline, op = [], "eq"
    for v in words[i:]:
        if method in ("int", "len") and v in _INT_OPS:
            op = v
            continue
        inline.append((0, v))
    chain = _split_chain(words[0])
    kw = split_call(chain[0])[0]
    if len(chain) > 1:          # HAProxy names these by their sample fetch then
        kw = _CHAINED_KW.get(kw, kw)
    own = REGISTRY.acl_inline(uid, f"acl '{kw}' file '{where[0]}' line {where[1]}"
                              if where else "acl", inline)
    ops = ({e.id: o for e, o in zip(own.entries, _inline_ops(words[i:], method))}
           if op != "eq" or method in ("int", "len") else {})
    indexes = []
    for ref in file_refs:
        if where is not None:
            ref.users.append(where)
    for ref in file_refs + [own]:
        indexes.append(ref.acl_index(method, icase))

    def rebuild():
        """A reference changed (runtime API, add-acl): the matcher reads it again."""
        nonlocal match
        vals = []
        for x in indexes:
            for e in x.entries:
                if method in ("int", "len"):
                    vals.append(ops.get(e.id, "eq"))
                vals.append(e.key)
        if not vals and method not in ("found", "bool"):
            match = _never
        else:
            match = build_matcher(method, vals, icase, out)
    for x in indexes:
        x.readers.append(rebuild)
    # str-style matchers on non-str samples compare text forms; ints compare as ints
    if multi:
        def test_multi(ctx):
            vals = fn(ctx)
            if not vals:
                return None
            for v in vals:
                if match(v):
                    return True
            return False
        return AclExpr(" ".join(words), test_multi, fd.name)

    def test(ctx):
        v = fn(ctx)
        if v is None:
            return None
        return match(v)

    def term(ctx):                  # test(ctx) is True, one call less (conditions)
        v = fn(ctx)
        return v is not None and match(v) is True
    return AclExpr(" ".join(words), test, fd.name, term)


# `show acl` names an expression by its keyword; followed by converters these two are
# named as HAProxy 2.6 does (checked: hdr_cnt, url_param, hdr_ip... keep theirs)
_CHAINED_KW = {"hdr": "req.hdr", "cook": "req.cook"}


def _inline_ops(words: Sequence[str], method: str) -> list[str]:
    """The operator in force for each inline integer pattern (`gt 5 10` -> gt, gt)."""
    out, op = [], "eq"
    for v in words:
        if v in _INT_OPS:
            op = v
        else:
            out.append(op)
    return out


def read_pattern_lines(path: str) -> list[tuple[int, str]]:
    """(line number, text) of a pattern or map file as HAProxy reads it: a '#' in the
    first column makes a comment, leading spaces and tabs are skipped, the text ends at
    CR or LF, empty lines are skipped. Trailing spaces stay (they belong to the pattern)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except IsADirectoryError:
        raise AclError(f"error encountered while reading  <{path}> : Is a directory") from None
    except OSError:
        raise AclError(f"failed to open pattern file <{path}>") from None
    out = []
    for n, raw in enumerate(data.decode("latin-1").split("\n"), 1):
        if raw.startswith("#"):
            continue
        text = raw.lstrip(" \t").split("\r", 1)[0]
        if text:
            out.append((n, text))
    return out


def compile_regex(text: str, icase: bool = False) -> re.Pattern:
    """A `reg` pattern; the error names it as HAProxy does (with Python's reason)."""
    try:
        return re.compile(text, re.I if icase else 0)
    except re.error as e:
        raise AclError(f"regex '{text}' is invalid (error={e.msg}, erroffset={e.pos})") \
            from None


class PatternIds:
    """HAProxy's pattern reference ids, one sequence for ACLs and maps (`show acl`, `show
    map`): each ACL expression takes one, so does each file the first time it is named.
    Restarted by each configuration load (proxy/maps.py: Registry.loading)."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.next = 0
        self.files: dict[str, int] = {}       # file -> columns: 1 (ACL), 2 (map)

    def take(self) -> int:
        uid = self.next
        self.next += 1
        return uid

    def file(self, path: str, columns: int) -> None:
        """A file named by an ACL (1 column) or a map (2): one id, one use."""
        used = self.files.get(path)
        if used is None:
            self.files[path] = columns
            self.take()
        elif used != columns:
            names = {1: "one", 2: "two"}
            raise AclError(f'The file "{path}" is already used as {names[used]} column file '
                           f"and cannot be used by as {names[columns]} column file.")


PATTERN_IDS = PatternIds()


def _pattern_file(path: str) -> list[tuple[int, str]]:
    """`-f FILE`: (line number, pattern) for each pattern line."""
    PATTERN_IDS.file(path, 1)
    return read_pattern_lines(path)


def _file_error(method, file_values, files, icase, out) -> None:
    """A pattern from a file that a matcher refuses: HAProxy names its line and file."""
    for (n, v), path in zip(file_values, files):
        try:
            build_matcher(method, [v], icase, out)
        except AclError as e:
            raise AclError(f"{e} at line {n} of file '{path}'") from None


def _never(v) -> bool:
    return False


class Acl:
    """A named ACL: several expressions (lines), ORed."""

    __slots__ = ("name", "exprs")

    def __init__(self, name: str):
        self.name = name
        self.exprs: list[AclExpr] = []

    def test(self, ctx):
        """True if any line matches; None when no line produced a sample."""
        seen = False
        for e in self.exprs:
            r = e.test(ctx)
            if r:
                return True
            if r is not None:
                seen = True
        return False if seen else None


def _response_view(acl: Acl):
    """A named ACL as a response rule sees it: its lines on request headers give no
    sample (the request is gone, as in HAProxy)."""
    view = Acl(acl.name)
    view.exprs = [e for e in acl.exprs if e.fetch not in REQUEST_HEADER_FETCHES]
    return view.test


# ---------------------------------------------------------------------------- predefined ACLs

_PREDEFINED = {
    "TRUE": ("always_true",), "FALSE": ("always_false",),
    "LOCALHOST": ("src", "127.0.0.1/8", "::1"),
    "METH_CONNECT": ("method", "CONNECT"), "METH_DELETE": ("method", "DELETE"),
    "METH_GET": ("method", "GET", "HEAD"), "METH_HEAD": ("method", "HEAD"),
    "METH_OPTIONS": ("method", "OPTIONS"), "METH_POST": ("method", "POST"),
    "METH_PUT": ("method", "PUT"), "METH_TRACE": ("method", "TRACE"),
    "HTTP_URL_SLASH": ("url_beg", "/"), "HTTP_URL_STAR": ("url", "*"),
    "HTTP_URL_ABS": ("url_reg", "^[^/:]*://"), "HTTP": ("always_true",),
    "HTTP_CONTENT": ("hdr_val(content-length)", "gt", "0"),
    "REQ_CONTENT": ("always_true",), "WAIT_END": ("always_false",),
}


def predefined(name: str, where=None) -> Optional[Acl]:
    words = _PREDEFINED.get(name)
    if words is None:
        return None
    if words[0] == "hdr_val(content-length)":
        words = ("hdr(content-length)", "-m", "int", "gt", "0")
    acl = Acl(name)
    acl.exprs.append(parse_acl_expr(words, where=where))
    return acl


# ---------------------------------------------------------------------------- conditions

Condition = Callable   # a compiled condition: fn(ctx) -> bool, with a `.text` attribute


def _term_fn(test: Callable, negate: bool) -> Callable:
    if negate:
        return lambda ctx: not test(ctx)       # None (no sample) -> term false -> ! gives True
    return lambda ctx: test(ctx) is True


def _and(fns: list[Callable]) -> Callable:
    if len(fns) == 1:
        return fns[0]
    if len(fns) == 2:
        a, b = fns
        return lambda ctx: a(ctx) and b(ctx)
    return lambda ctx: all(f(ctx) for f in fns)


def _or(fns: list[Callable]) -> Callable:
    if len(fns) == 1:
        return fns[0]
    return lambda ctx: any(f(ctx) for f in fns)


def compile_condition(words: Sequence[str], acls: dict, refs=None) -> Condition:
    """`words` starts with `if` or `unless`. `acls` maps names to Acl objects."""
    if not words or words[0] not in ("if", "unless"):
        raise AclError("condition must start with 'if' or 'unless'")
    polarity = words[0]
    terms = list(words[1:])
    if not terms:
        # HAProxy accepts a bare `if`/`unless`: no term never passes, so `if` never fires
        # and `unless` always does (checked on haproxy 2.6)
        fn = (lambda ctx: False) if polarity == "if" else (lambda ctx: True)
        fn.text = polarity
        fn.tri = (lambda ctx: FAIL) if polarity == "if" else (lambda ctx: PASS)
        return fn
    groups: list[list[Callable]] = [[]]
    tri_groups: list[list[Callable]] = [[]]
    i = 0
    while i < len(terms):
        w = terms[i]
        if w in ("or", "||"):
            if not groups[-1]:
                raise AclError(f"'{w}' without a term before it")
            groups.append([])
            tri_groups.append([])
            i += 1
            continue
        negate = False
        while w.startswith("!"):
            negate = not negate
            w = w[1:]
            if not w:
                i += 1
                if i >= len(terms):
                    raise AclError("'!' must be followed by an ACL")
                w = terms[i]
        if w == "{":
            try:
                end = terms.index("}", i + 1)
            except ValueError:
                raise AclError("missing closing '}' in condition") from None
            inner = terms[i + 1:end]
            if not inner:
                raise AclError("empty anonymous ACL '{ }'")
            expr = parse_acl_expr(inner, refs)
            groups[-1].append(_term_fn(expr.test, True) if negate else expr.term)
            tri_groups[-1].append(_tri_term(expr.test, negate))
            i = end + 1
            continue
        if w.startswith("{") or w == "}":
            raise AclError(f"'{w}': braces of anonymous ACLs must be separated by spaces")
        acl = acls.get(w)
        if acl is None:
            acl = predefined(w, getattr(refs, "where", None))
            if acl is None:
                raise AclError(f"no such ACL : '{w}'")
            acls[w] = acl           # joins the proxy's ACLs on first use, as in HAProxy

        test = acl.test
        if getattr(refs, "response", False) and any(
                e.fetch in REQUEST_HEADER_FETCHES for e in acl.exprs):
            test = _response_view(acl)
        groups[-1].append(_term_fn(test, negate))
        tri_groups[-1].append(_tri_term(test, negate))
        i += 1
    if not groups[-1]:
        raise AclError("condition ends with 'or'")
    fn = _or([_and(g) for g in groups])
    if polarity == "unless":
        inner_fn = fn
        fn = lambda ctx: not inner_fn(ctx)     # noqa: E731
    fn.text = " ".join(words)        # every compile builds new function objects
    fn.tri = _tri_condition(tri_groups, polarity == "unless")
    return fn


# HAProxy's three-valued verdicts (acl_exec_cond), for rules that may wait for data
# (tcp-request content with inspect-delay, proxy/tcp_mode.py): a term that does not
# match while its fetch says more data may change it (ctx.may_change) is MISS
FAIL, MISS, PASS = 0, 1, 3


def _tri_term(test: Callable, negate: bool) -> Callable:
    def tri(ctx):
        ctx.may_change = False
        r = PASS if test(ctx) is True else (MISS if ctx.may_change else FAIL)
        return (PASS - r if r != MISS else MISS) if negate else r
    return tri


def _tri_condition(groups: list[list[Callable]], unless: bool) -> Callable:
    """Terms ANDed up to the first that does not pass, suites ORed (MISS | PASS is
    PASS); `unless` flips PASS and FAIL, MISS stays."""
    def tri(ctx):
        res = FAIL
        for suite in groups:
            s = PASS
            for term in suite:
                s &= term(ctx)
                if s != PASS:
                    break
            res |= s
            if res == PASS:
                break
        return (PASS - res if res != MISS else MISS) if unless else res
    return tri


def split_condition(words: Sequence[str]) -> tuple[list[str], Optional[list[str]]]:
    """Split rule words at the first `if`/`unless`: (action words, condition words or None)."""
    for i, w in enumerate(words):
        if w in ("if", "unless"):
            return list(words[:i]), list(words[i:])
    return list(words), None
