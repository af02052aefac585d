"""http-request / http-response actions that change the stream rather than the message
(HAProxy 2.6's http_act.c, action.c):

  http-request set-timeout server|tunnel <time>|<expr>   this stream's server or tunnel
      timeout (proxies with a backend only); an expression gives milliseconds, no sample
      changes nothing
  http-request set-log-level <level>|silent, http-response / tcp-request content
  set-log-level ...
      the level of this stream's log line (the last matching rule wins); silent: none
  http-request early-hint <name> <fmt>
      a `103 Early Hints` interim response before the final one (HTTP/1.1 clients):
      consecutive early-hint rules add their headers to one 103, which a rule with a
      condition, or any other action, ends (prepare() marks the rules that send)
  http-request wait-for-body ...   see request_body.py
  http-request / http-response strict-mode on|off
      accepted as it is: a header rewrite never fails here (HAProxy's strict mode turns
      a failed one into a 500)

The rules run from Frontend._counter_action (run()); the Stream keeps `timeouts` (name ->
seconds) and `hints` (the 103 under way), set only by these actions.
"""
from __future__ import annotations

from . import http1
from . import log as log_mod
from .log import LEVELS
from .sample import SampleError, compile_expr

ACTIONS = frozenset({"set-timeout", "set-log-level", "early-hint", "wait-for-body",
                     "strict-mode"})
SILENT = -1


class Hint:
    """An early-hint rule: header name, log-format value, and whether it sends the 103."""
    __slots__ = ("name", "fmt", "ends")

    def __init__(self, name: str, fmt: str):
        self.name, self.fmt, self.ends = name.lower(), fmt, True


def allowed(where: str, action: str) -> bool:
    if where == "http-request":
        return True
    if where == "tcp-request content":      # (a TCP stream logs no line: HTTP mode only)
        return action == "set-log-level"
    return where == "http-response" and action in ("set-log-level", "strict-mode")


def parse(parser, p, line, rule, action: str, args, where: str) -> None:
    """Fill `rule` (its value) from the action's words, with HAProxy's messages."""
    what = f"{where} {action}"
    err = f"error detected in {p.kind} '{p.name}' while parsing '{what}' rule : "
    if action == "wait-for-body":
        from .request_body import parse_wait
        rule.value, rest = parse_wait(p, line, args, what)
    elif action == "set-log-level":
        if not args or (args[0] != "silent" and args[0] not in LEVELS):
            if where.startswith("tcp"):
                raise line.error("expects exactly 1 argument (log level name or 'silent')")
            raise line.error(err + "expects exactly 1 argument (log level name or "
                             "'silent').")
        rule.value = SILENT if args[0] == "silent" else LEVELS.index(args[0])
        rest = args[1:]
    elif action == "strict-mode":
        # (a rewrite never fails here: on or off, nothing changes; the rule stays a rule)
        if not args:
            raise line.error(err + "expects exactly 1 arguments.")
        if args[0] not in ("on", "off"):
            raise line.error(err + f"Unexpected value '{args[0]}'. Only 'on' and 'off' are "
                             "supported.")
        rest = args[1:]
    elif action == "early-hint":
        if len(args) < 2:
            raise line.error(err + "expects exactly 2 arguments.")
        parser.check_log_format(p, line, args[1], what)
        rule.value = Hint(args[0], args[1])
        rest = args[2:]
    else:
        rule.value, rest = _parse_timeout(parser, p, line, args, err, what)
    if rest and where.startswith("tcp"):
        raise line.error(f"'{what}' only accepts 'if' or 'unless', in {p.kind} '{p.name}' "
                         f"(got '{rest[0]}')")
    if rest:
        raise line.error(f"'{what}' expects either 'if' or 'unless' followed by a condition "
                         f"but found '{rest[0]}'.")


def _parse_timeout(parser, p, line, args, err: str, what: str):
    """set-timeout server|tunnel <time>|<expr>: ((name, ms or expression), words left)."""
    from .stick_table import parse_time_err
    if len(args) < 2:
        raise line.error(err + "expects exactly 2 arguments.")
    if not p.has_backend:
        raise line.error(err + f"proxy '{p.name}' has no backend capability.")
    name, text = args[0], args[1]
    if name not in ("server", "tunnel"):
        raise line.error(err + f"'set-timeout' rule supports 'server'/'tunnel' (got '{name}').")
    ms, bad, _ = parse_time_err(text)
    if bad == "over":
        raise line.error(err + f"timer overflow in argument '{text}' to rule 'set-timeout "
                         f"{name}' (maximum value is 2147483647 ms or ~24.8 days).")
    if bad is not None:
        try:
            value = compile_expr(text, parser._refs(p, line))
        except SampleError:
            raise line.error(err + f"unexpected character '{bad}' in rule 'set-timeout "
                             f"{name}'.") from None
    elif ms == 0:
        raise line.error(err + f"null value is not valid for a 'set-timeout {name}' rule.")
    else:
        value = ms
    return (name, value), args[2:]


def prepare(rules: list) -> None:
    """An early-hint rule sends the 103 unless the next rule is an early-hint without a
    condition (HAProxy looks at the next rule the same way)."""
    for i, r in enumerate(rules):
        if r.action == "early-hint":
            nxt = rules[i + 1] if i + 1 < len(rules) else None
            r.value.ends = not (nxt is not None and nxt.action == "early-hint"
                                and nxt.cond is None)


def finish(cfg) -> None:
    for p in list(cfg.proxies) + list(cfg.defaults.values()):
        prepare(p.http_request)


# ---------------------------------------------------------------------------- run time

def run(rule, ctx, c) -> bool:
    """One of ACTIONS on the stream of `ctx`; True only for wait-for-body (the
    http-request rules wait for the body there, see Frontend._http_rules)."""
    act = rule.action
    stream = ctx.stream
    if act == "set-log-level":
        rec = getattr(stream, "log", None)
        if rec is not None:
            rec.level = rule.value
    elif act == "early-hint":
        _early_hint(rule.value, ctx, c, stream)
    elif act == "set-timeout":
        name, value = rule.value
        if not isinstance(value, int):
            value = value(ctx)
            try:
                value = int(value)
            except (TypeError, ValueError):
                return False
        timeouts = getattr(stream, "timeouts", None)
        if timeouts is None:
            timeouts = stream.timeouts = {}
        timeouts[name] = value / 1000.0 if value > 0 else None
    elif act == "wait-for-body":
        return True
    return False


def _early_hint(hint: Hint, ctx, c, stream) -> None:
    if ctx.version < 11 or c is None:
        return
    pending = getattr(stream, "hints", None)
    if pending is None:
        pending = stream.hints = ["HTTP/1.1 103 Early Hints\r\n"]
    pending.append(f"{hint.name}: {log_mod.log_format(hint.fmt, ctx)}\r\n")
    if hint.ends:
        pending.append("\r\n")
        data = "".join(pending).encode("latin-1", "replace")
        stream.hints = None
        c.write(data)
        count_interim(stream, data)


def count_interim(stream, data: bytes) -> None:
    """A 1xx made here: on the wire, and in HAProxy's counts in its HTX size (as the log's
    bytes_read shows)."""
    stream.bytes_out += len(data)
    stream.adj_out += http1.htx_size(http1.parse_response(data, 0, "GET"), False) - len(data)


def stream_timeout(stream, name: str, default):
    """The stream's `timeout <name>` (seconds): a set-timeout rule's, else `default`."""
    timeouts = getattr(stream, "timeouts", None)
    if timeouts is None or name not in timeouts:
        return default
    return timeouts[name]
