"""Variables, as HAProxy 2.6 has them: `set-var(<scope>.<name>[,<cond>...]) <expr>`,
`set-var-fmt(...) <fmt>`, `unset-var(...)` actions, the `var(<scope>.<name>[,<default>])`
fetch, the `set-var`/`unset-var` converters and `global set-var`/`set-var-fmt`.

Scopes and their stores
-----------------------
  proc      one store per loaded configuration (a reload starts afresh, as a new
            HAProxy process does); every proc name the configuration mentions exists
            from the start, unset
  sess      the client connection (ClientConn.sess_vars)
  txn       one request and its response
  req, res  one store for both: `req.*` while the request is processed, `res.*` while
            the response is (the store is emptied between the two)
  check     health checks only: nothing here sets or reads it

A store is a dict name -> value; a proc name that exists unset holds None. What a
scope cannot reach at some point (txn in `tcp-request connection` rules, res in
request rules) is silently neither set nor read, as in HAProxy.

Values keep their sample type: Python int, bool, str, bytes, and the two str tags
below for addresses and methods; `dynamic_cast` casts them as sample.py's matrix says.

Contexts get their scopes from the frontend (see `with_scopes`) only when the
configuration uses variables, so the per-request path is unchanged otherwise.
"""
from __future__ import annotations

import re
from typing import Callable, Optional

from .sample import (CONVERTERS, FETCHES, ConvDef, FetchDef, SampleError, _CASTS, _NO_CAST)

SCOPES = ("proc", "sess", "txn", "req", "res", "check")
CONDITIONS = frozenset(("ifexists", "ifnotexists", "ifempty", "ifnotempty", "ifset",
                        "ifnotset", "ifgt", "iflt"))
_NAME_CHAR = re.compile(r"[A-Za-z0-9_.]*")


class IpText(str):
    """An address kept in a variable (type ip, not str)."""


class MethText(str):
    """A method kept in a variable (type meth)."""


_TYPE_OF = {bool: "bool", int: "int", str: "str", bytes: "bin", IpText: "ip",
            MethText: "meth"}
_TAGS = {"ip": IpText, "meth": MethText}


def type_of(value) -> str:
    return _TYPE_OF.get(type(value), "str")


def typed(value, out: str):
    """A sample of static type `out` as a variable keeps it (addresses, methods tagged)."""
    tag = _TAGS.get(out)
    if tag is not None and type(value) is str:
        return tag(value)
    return value


def dynamic_cast(to: str) -> Optional[Callable]:
    """The cast of a variable's value (type known only at run time) to `to`."""
    if to == "any":
        return None

    def cast(v):
        frm = _TYPE_OF.get(type(v), "str")
        if frm == to:
            return v
        if (frm, to) in _NO_CAST:
            return None
        f = _CASTS.get((frm, to))
        return v if f is None else f(v)
    return cast


# ---------------------------------------------------------------------------- names

class VarError(ValueError):
    """A bad variable name or condition (HAProxy's wording; the caller adds where)."""


def parse_name(text: str, rest: Optional[str] = None) -> tuple[str, str]:
    """`scope.name` -> (scope, name). `rest`: what HAProxy quotes after a bad character
    (the action's text goes on to its ')')."""
    if not text:
        raise VarError("Empty variable name cannot be accepted")
    scope, dot, name = text.partition(".")
    if not dot or scope not in SCOPES or not name:
        raise VarError(f"invalid variable name '{text}'. A variable name must be start by "
                       "its scope. The scope can be 'proc', 'sess', 'txn', 'req', 'res' or "
                       "'check'")
    good = _NAME_CHAR.match(name).end()
    if good < len(name):
        tail = name[good:] + (rest or "")
        raise VarError(f"invalid syntax at char '{tail}'")
    return scope, name


def parse_conditions(words) -> tuple[str, ...]:
    out = []
    for w in words:
        if not w:
            continue                     # `set-var(txn.x,)`: an empty condition is none
        if w not in CONDITIONS:
            raise VarError(f'unknown condition "{w}"')
        out.append(w)
    return tuple(out)


class Registry:
    """The variables one configuration mentions: `used` (frontends then give contexts
    their scopes) and the proc store, holding every proc name mentioned (unset) and
    what `global set-var` put there."""

    def __init__(self):
        self.used = False
        self.proc: dict = {}

    def mention(self, scope: str, name: str) -> None:
        self.used = True
        if scope == "proc":
            self.proc.setdefault(name, None)


def _mention(refs, scope: str, name: str) -> None:
    reg = getattr(refs, "vars", None)
    if reg is not None:
        reg.mention(scope, name)


# ---------------------------------------------------------------------------- scopes

class Scopes:
    """What a context reaches (ctx.vars): the stores of its scopes, None where the
    processing point has none; `phase` says which of req/res the reqres store is."""
    __slots__ = ("proc", "sess", "txn", "reqres", "phase")

    def __init__(self, proc: dict, sess: dict, txn: Optional[dict], phase: Optional[str]):
        self.proc, self.sess, self.txn = proc, sess, txn
        self.reqres = {} if phase else None
        self.phase = phase

    def store(self, scope: str) -> Optional[dict]:
        if scope == "txn":
            return self.txn
        if scope == "sess":
            return self.sess
        if scope == "proc":
            return self.proc
        return self.reqres if scope == self.phase else None

    def to_response(self) -> None:
        """The response starts: req.* variables end, res.* ones may be set."""
        if self.phase == "req":
            self.reqres, self.phase = {}, "res"


def _sess_store(c) -> dict:
    try:
        return c.sess_vars
    except AttributeError:
        c.sess_vars = {}
        return c.sess_vars


def with_scopes(begin: Callable, make_ctx: Callable, registry: Registry, tcp: bool = False):
    """The frontend's `_begin` (a request's context) and `_ctx` (connection-level
    rules' context), giving each context its variable scopes. `tcp`: a TCP frontend,
    whose stream context comes from `_ctx` too: each context gets its own txn and req
    stores (connection and session rules then set theirs in vain, as in HAProxy, where
    no stream exists yet)."""
    proc = registry.proc

    def begin_with_vars(c, req, sess_sc):
        ctx, stream = begin(c, req, sess_sc)
        ctx.vars = Scopes(proc, _sess_store(c), {}, "req")
        return ctx, stream

    def ctx_with_vars(c, sc):
        ctx = make_ctx(c, sc)
        ctx.vars = (Scopes(proc, _sess_store(c), {}, "req") if tcp else
                    Scopes(proc, _sess_store(c), None, None))
        return ctx
    return begin_with_vars, ctx_with_vars


# ---------------------------------------------------------------------------- set / unset

def store_value(store: Optional[dict], name: str, value, conds: tuple) -> bool:
    """Set `name` to `value` when every condition holds; False when not set."""
    if store is None:
        return False
    for c in conds:
        cur = store.get(name)
        if c == "ifexists":
            ok = name in store
        elif c == "ifnotexists":
            ok = name not in store
        elif c == "ifset":
            ok = cur is not None
        elif c == "ifnotset":
            ok = cur is None
        elif c in ("ifempty", "ifnotempty"):
            # scalars are never empty
            empty = type(value) in (str, bytes, IpText, MethText) and not value
            ok = empty if c == "ifempty" else not empty
        else:                           # ifgt / iflt compare integers only, else pass
            if type(cur) is int and type(value) is int:
                ok = cur > value if c == "ifgt" else cur < value
            else:
                ok = True
        if not ok:
            return False
    store[name] = value
    return True


def unset(store: Optional[dict], scope: str, name: str) -> None:
    if store is None:
        return
    if scope == "proc":
        if name in store:
            store[name] = None          # proc names stay (created with the configuration)
    else:
        store.pop(name, None)


class VarAction:
    """A compiled set-var / set-var-fmt / unset-var action: `run(ctx)`."""
    __slots__ = ("kind", "scope", "name", "conds", "expr", "fmt")

    def __init__(self, kind: str, scope: str, name: str, conds: tuple = (), expr=None,
                 fmt: Optional[str] = None):
        self.kind, self.scope, self.name, self.conds = kind, scope, name, conds
        self.expr, self.fmt = expr, fmt

    def run(self, ctx) -> None:
        scopes = ctx.vars
        if scopes is None:
            return
        store = scopes.store(self.scope)
        if store is None:
            return
        if self.kind == "unset-var":
            unset(store, self.scope, self.name)
            return
        if self.kind == "set-var-fmt":
            from .frontend import log_format        # (frontend imports this module)
            value = log_format(self.fmt, ctx)
        else:
            value = self.expr(ctx)
            if value is None:
                return                  # no sample: the variable is left as it is
            value = typed(value, self.expr.out)
        store_value(store, self.name, value, self.conds)


ACTIONS = ("set-var", "set-var-fmt", "unset-var")


def parse_action_word(word: str) -> tuple[str, str, str, tuple]:
    """`set-var(txn.x,ifexists)` -> ('set-var', 'txn', 'x', ('ifexists',)). VarError with
    HAProxy's wording otherwise."""
    expects = ("Expects 'set-var(<var-name>)', 'set-var-fmt(<var-name>)' or "
               "'unset-var(<var-name>)'.")
    kind, paren, inner = word.partition("(")
    if kind not in ACTIONS or not paren:
        raise VarError(f"invalid or incomplete action '{word}'. {expects}")
    if not inner.endswith(")") or " " in inner or ")" in inner[:-1]:
        raise VarError(f"incomplete argument after action '{word}'. {expects}")
    parts = inner[:-1].split(",")
    scope, name = parse_name(parts[0], ")")
    if kind == "unset-var" and len(parts) > 1:
        raise VarError('unset-var does not expect parameters after the variable name. Only '
                       '"set-var" and "set-var-fmt" manage conditions.')
    return kind, scope, name, parse_conditions(parts[1:])


# ---------------------------------------------------------------------------- fetch, converters

def _getter(scope: str, name: str, default) -> Callable:
    """fn(ctx) -> the variable's value, `default` when it is unset (None: no sample)."""
    if scope == "proc":
        def fetch(ctx):
            s = ctx.vars
            if s is None:
                return None
            v = s.proc.get(name)
            return default if v is None else v
    elif scope in ("sess", "txn"):
        attr = scope

        def fetch(ctx):
            s = ctx.vars
            if s is None:
                return None
            store = getattr(s, attr)
            if store is None:
                return None
            v = store.get(name)
            return default if v is None else v
    else:
        def fetch(ctx):
            s = ctx.vars
            if s is None or s.phase != scope:
                return None
            v = s.reqres.get(name)
            return default if v is None else v
    return fetch


def _var_build(args, refs):
    if not args or not args[0]:
        raise SampleError("invalid args in fetch method 'var' : Empty variable name cannot "
                          "be accepted")
    if len(args) > 2:
        raise SampleError(f"fetch method 'var' : expected ')' before ',{','.join(args[2:])})'")
    try:
        scope, name = parse_name(args[0])
    except VarError as e:
        raise SampleError(f"invalid args in fetch method 'var' : {e}") from None
    _mention(refs, scope, name)
    return _getter(scope, name, args[1] if len(args) > 1 else None)


FETCHES["var"] = FetchDef("var", "any", _var_build, "any")


def _conv_var_args(conv: str, args, refs, conds_ok: bool):
    if not args or not args[0]:
        raise SampleError(f"invalid args in converter '{conv}' : Empty variable name cannot "
                          "be accepted")
    if not conds_ok and len(args) > 1:
        raise SampleError(f"invalid arg 2 in converter '{conv}' : expected ')' before "
                          f"',{','.join(args[1:])})'")
    try:
        scope, name = parse_name(args[0])
        conds = parse_conditions(args[1:])
    except VarError as e:
        raise SampleError(f"invalid args in converter '{conv}' : {e}") from None
    _mention(refs, scope, name)
    return scope, name, conds


def _set_var_conv(args, refs, inner):
    scope, name, conds = _conv_var_args("set-var", args, refs, True)
    out = getattr(inner, "out", "str")

    def conv(ctx):
        v = inner(ctx)
        if v is None:
            return None
        s = ctx.vars
        store = s.store(scope) if s is not None else None
        # the sample goes on only when it was stored
        return v if store_value(store, name, typed(v, out), conds) else None
    return conv


def _unset_var_conv(args, refs, inner):
    scope, name, _ = _conv_var_args("unset-var", args, refs, False)

    def conv(ctx):
        v = inner(ctx)
        s = ctx.vars
        if s is not None:
            unset(s.store(scope), scope, name)
        return v
    return conv


CONVERTERS["set-var"] = ConvDef("set-var", _set_var_conv, None, "any")
CONVERTERS["unset-var"] = ConvDef("unset-var", _unset_var_conv, None, "any")


# ---- converters reading a variable given as argument

def _arg_var(conv: str, text: str, refs) -> Callable:
    try:
        scope, name = parse_name(text)
    except VarError:
        raise SampleError(f"invalid args in converter '{conv}' : failed to register variable "
                          f"name '{text}'.") from None
    _mention(refs, scope, name)
    return _getter(scope, name, None)


def int_arg(conv: str, text: str, refs) -> Callable:
    """The argument of add/sub/mul/div/mod/and/or/xor when it is a variable name:
    fn(ctx) -> its value as an integer, None (no sample) when unset or not one."""
    try:
        get = _arg_var(conv, text, refs)
    except SampleError:
        raise SampleError(f"invalid args in converter '{conv}' : expects an integer or a "
                          "variable name.") from None
    cast = dynamic_cast("int")

    def value(ctx):
        v = get(ctx)
        return None if v is None else cast(v)
    return value


def _as_text(get: Callable) -> Callable:
    cast = dynamic_cast("str")

    def text(ctx):
        v = get(ctx)
        return None if v is None else cast(v)
    return text


def _concat_conv(args, refs, inner):
    """concat([<start>],[<var>],[<end>]): the sample as a string, then start, the
    variable as a string (nothing when unset), end."""
    if len(args) > 3:
        raise SampleError(f"invalid arg 3 in converter 'concat' : expected ')' before "
                          f"',{','.join(args[3:])})'")
    start, var, end = (list(args) + ["", "", ""])[:3]
    get = _as_text(_arg_var("concat", var, refs)) if var else (lambda ctx: None)

    def conv(ctx):
        v = inner(ctx)
        if v is None:
            return None
        middle = get(ctx)
        return v + start + ("" if middle is None else middle) + end
    return conv


def _strcmp_conv(args, refs, inner):
    """strcmp(<var>): the sample and the variable compared as byte strings: the first
    difference of bytes, else the difference of lengths (as HAProxy with glibc's memcmp)."""
    if not args or not args[0]:
        raise SampleError("invalid args in converter 'strcmp' : missing variable name.")
    get = _as_text(_arg_var("strcmp", args[0], refs))

    def conv(ctx):
        v = inner(ctx)
        if v is None:
            return None
        other = get(ctx)
        if other is None:
            return None
        for a, b in zip(v.encode("latin-1"), other.encode("latin-1")):
            if a != b:
                return a - b
        return len(v) - len(other)
    return conv


CONVERTERS["concat"] = ConvDef("concat", _concat_conv, "str", "str")
CONVERTERS["strcmp"] = ConvDef("strcmp", _strcmp_conv, "int", "str")


# ---------------------------------------------------------------------------- global, CLI

# fetches `global set-var` may use: they need no traffic
NO_TRAFFIC_FETCHES = frozenset(("int", "str", "bool", "bin", "ipv4", "ipv6", "meth", "env", "var",
                            "always_true", "always_false", "date", "rand", "uuid", "hostname",
                            "nbproc", "nbthread", "pid", "thread", "stopping", "uptime"))


def global_set(registry: Registry, kind: str, scope: str, name: str, value_of: Callable):
    """`global set-var proc.x <expr>` / `set-var-fmt`: evaluated now, at parsing."""
    from .sample import Context
    registry.mention(scope, name)
    ctx = Context()
    ctx.vars = Scopes(registry.proc, {}, None, None)
    v = value_of(ctx)
    if v is not None:
        registry.proc[name] = v


_CLI_TYPES = {"bool": "bool", "int": "sint", "str": "str", "bin": "bin", "meth": "meth"}


def cli_get(registry: Optional[Registry], text: str) -> str:
    """`get var <name>`: a process-wide variable, as HAProxy's CLI prints it."""
    if not text:
        return "Missing process-wide variable identifier.\n"
    scope, _, name = text.partition(".")
    v = registry.proc.get(name) if (registry is not None and scope == "proc") else None
    if v is None:
        return "Variable not found.\n"
    t = type_of(v)
    if t == "ip":
        t = "ipv6" if ":" in v else "ipv4"
    else:
        t = _CLI_TYPES[t]
    if t == "bool":
        shown = int(v)
    elif isinstance(v, bytes):           # printable bytes as they are, others as dots
        shown = "".join(chr(b) if 0x20 <= b < 0x7f else "." for b in v)
    else:
        shown = v
    return f"{text}: type={t} value=<{shown}>"      # (one line, no blank one after it)


def register_commands(proc, reg) -> None:
    """`get var <name>` on the runtime API (operator level, as HAProxy's)."""
    from .runtime_api import OPERATOR

    def get_var(cli, args):
        cfg = proc.cfg
        return cli_get(cfg.vars if cfg is not None else None, args[2] if len(args) > 2 else "")
    reg.register(("get", "var"), get_var,
                 "get var <name>                          : retrieve contents of a "
                 "process-wide variable", OPERATOR)
