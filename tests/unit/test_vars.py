"""proxy/vars.py: names, set-var conditions, scopes, typed values and casts (the
differential tests, tests/e2e/test_proxy_vars.py, compare the same with HAProxy)."""
import pytest

from edgestick.proxy import vars as v
from edgestick.proxy.acl import compile_condition
from edgestick.proxy.config import load_config_text
from edgestick.proxy.sample import Context, SampleError, compile_expr
from edgestick.cfgsyntax import ConfigError


def test_names():
    assert v.parse_name("txn.a_B.9") == ("txn", "a_B.9")
    for bad in ("txn.", "x", "foo.x", ".x"):
        with pytest.raises(v.VarError, match="must be start by its scope"):
            v.parse_name(bad)
    with pytest.raises(v.VarError, match=r"invalid syntax at char '-b\)'"):
        v.parse_name("txn.a-b", ")")
    with pytest.raises(v.VarError, match="Empty variable name"):
        v.parse_name("")


def test_action_words():
    assert v.parse_action_word("set-var(sess.x,ifexists,,ifgt)") == (
        "set-var", "sess", "x", ("ifexists", "ifgt"))
    with pytest.raises(v.VarError, match="incomplete argument"):
        v.parse_action_word("set-var(txn.x")
    with pytest.raises(v.VarError, match="invalid or incomplete action"):
        v.parse_action_word("set-var")
    with pytest.raises(v.VarError, match="unset-var does not expect"):
        v.parse_action_word("unset-var(txn.x,ifset)")
    with pytest.raises(v.VarError, match='unknown condition "nope"'):
        v.parse_action_word("set-var(txn.x,nope)")


@pytest.mark.parametrize("before,conds,value,after", [
    ({}, ("ifexists",), "a", {}),
    ({}, ("ifnotexists",), "a", {"x": "a"}),
    ({"x": None}, ("ifnotexists",), "a", {"x": None}),        # a proc name: exists, unset
    ({"x": None}, ("ifnotset",), "a", {"x": "a"}),
    ({"x": "b"}, ("ifset",), "a", {"x": "a"}),
    ({}, ("ifempty",), "", {"x": ""}),
    ({}, ("ifempty",), 0, {}),                                # scalars are never empty
    ({}, ("ifnotempty",), 0, {"x": 0}),
    ({"x": 5}, ("ifgt",), 3, {"x": 3}),
    ({"x": 5}, ("ifgt",), 9, {"x": 5}),
    ({"x": 5}, ("iflt",), 8, {"x": 8}),
    ({"x": "s"}, ("ifgt",), 3, {"x": 3}),                     # not two integers: passes
    ({"x": 1}, ("ifset", "ifgt"), 3, {"x": 1}),
])
def test_conditions(before, conds, value, after):
    store = dict(before)
    assert v.store_value(store, "x", value, conds) == (after.get("x", object()) == value)
    assert store == after


def test_unset_keeps_proc_names():
    proc, txn = {"x": 1}, {"x": 1}
    v.unset(proc, "proc", "x")
    v.unset(txn, "txn", "x")
    assert proc == {"x": None} and txn == {}


def _ctx(phase="req"):
    ctx = Context("127.0.0.1", 1000, method="GET", path="/p")
    ctx.vars = v.Scopes({}, {}, {} if phase else None, phase)
    return ctx


def test_scopes_and_phases():
    ctx = _ctx()
    for scope in ("txn", "sess", "proc", "req"):
        v.VarAction("set-var", scope, "a", (), compile_expr("path")).run(ctx)
    v.VarAction("set-var", "res", "a", (), compile_expr("path")).run(ctx)   # not now
    read = {s: compile_expr(f"var({s}.a,none)") for s in ("txn", "sess", "proc", "req", "res")}
    assert {s: f(ctx) for s, f in read.items()} == {
        "txn": "/p", "sess": "/p", "proc": "/p", "req": "/p", "res": None}
    ctx.vars.to_response()
    v.VarAction("set-var", "res", "a", (), compile_expr("str(r)")).run(ctx)
    assert read["req"](ctx) is None and read["res"](ctx) == "r"
    conn = _ctx(None)                # connection-level rules: no txn store
    v.VarAction("set-var", "txn", "a", (), compile_expr("int(1)")).run(conn)
    assert read["txn"](conn) is None and read["txn"](Context()) is None


def test_values_keep_their_type():
    ctx = _ctx()
    for name, expr in (("i", "int(10)"), ("s", "str(10)"), ("ip", "src"), ("m", "method"),
                       ("b", "always_true")):
        v.VarAction("set-var", "txn", name, (), compile_expr(expr)).run(ctx)
    hexed = {n: compile_expr(f"var(txn.{n}),hex")(ctx) for n in ("i", "s", "ip", "m", "b")}
    assert hexed == {"i": "000000000000000A", "s": "3130", "ip": "7F000001", "m": "474554",
                     "b": "0000000000000001"}
    assert compile_expr("var(txn.i),length")(ctx) == 2
    cond = compile_condition(["if", "{", "var(txn.ip)", "-m", "ip", "127.0.0.0/8", "}",
                              "{", "var(txn.s)", "-m", "int", "gt", "9", "}"], {})
    assert cond(ctx)
    assert not compile_condition(["if", "{", "var(txn.s)", "-m", "ip", "0.0.0.10", "}"], {})(ctx)


def test_converters():
    ctx = _ctx()
    e = compile_expr("str(abc),set-var(txn.w),upper,set-var(txn.x,ifnotexists)")
    assert e(ctx) == "ABC"
    assert ctx.vars.txn == {"w": "abc", "x": "ABC"}
    assert compile_expr("str(q),set-var(txn.none,ifexists)")(ctx) is None
    assert compile_expr("str(q),unset-var(txn.w)")(ctx) == "q" and "w" not in ctx.vars.txn
    with pytest.raises(SampleError, match="invalid args in converter 'set-var'"):
        compile_expr("str(a),set-var(bad)")


def test_config_registry_and_global():
    cfg = load_config_text("global\n    set-var proc.a int(4),add(1)\n"
                           "    set-var-fmt proc.b \"v=%[var(proc.a)]\"\n"
                           "defaults\n    mode http\nfrontend f\n    bind 127.0.0.1:1\n"
                           "    http-request set-var(proc.c) int(1) if { var(proc.d) -m found }\n"
                           "    default_backend b\nbackend b\n    server s 127.0.0.1:1\n")[0]
    assert cfg.vars.proc == {"a": 5, "b": "v=5", "c": None, "d": None}
    assert cfg.frontends["f"].vars is cfg.vars
    assert v.cli_get(cfg.vars, "proc.a") == "proc.a: type=sint value=<5>"
    assert v.cli_get(cfg.vars, "proc.c") == "Variable not found.\n"
    plain = load_config_text("defaults\n    mode http\nfrontend f\n    bind 127.0.0.1:1\n")[0]
    assert plain.frontends["f"].vars is None          # no variable: contexts as before
    with pytest.raises(ConfigError, match=r"<string>:2: .*only scope 'proc'"):
        load_config_text("global\n    set-var txn.a int(1)\n")


def test_converters_reading_variables():
    ctx = _ctx()
    for name, expr in (("i", "int(3)"), ("s", "str(7x)"), ("a", "str(abc)")):
        v.VarAction("set-var", "txn", name, (), compile_expr(expr)).run(ctx)
    values = {e: compile_expr(e)(ctx) for e in (
        "int(10),add(txn.i)", "int(10),sub(txn.s)", "int(10),mul(txn.none)",
        "str(x),concat(<,txn.a,>)", "str(x),concat(,txn.none,)", "int(5),concat(-,txn.i)",
        "str(abc),strcmp(txn.a)", "str(Z),strcmp(txn.a)", "str(ab),strcmp(txn.a)",
        "str(a),strcmp(txn.none)")}
    assert values == {
        "int(10),add(txn.i)": 13, "int(10),sub(txn.s)": 3, "int(10),mul(txn.none)": None,
        "str(x),concat(<,txn.a,>)": "x<abc>", "str(x),concat(,txn.none,)": "x",
        "int(5),concat(-,txn.i)": "5-3", "str(abc),strcmp(txn.a)": 0,
        "str(Z),strcmp(txn.a)": -7, "str(ab),strcmp(txn.a)": -1,
        "str(a),strcmp(txn.none)": None}
    for bad, msg in (("int(1),add(foo)", "expects an integer or a variable name"),
                     ("str(a),strcmp()", "missing variable name"),
                     ("str(a),concat(a,foo,c)", "failed to register variable name 'foo'")):
        with pytest.raises(SampleError, match=msg):
            compile_expr(bad)


def test_server_template():
    cfg = load_config_text("defaults\n    mode http\nbackend b\n"
                           "    server a 127.0.0.1:1\n"
                           "    server-template w 2-3 127.0.0.1:2 weight 4 cookie id\n"
                           "    server-template x 2 127.0.0.1:3 id 10 check\n")[0]
    srvs = [(s.name, s.port, s.weight, s.cookie, s.id, s.check)
            for s in cfg.backends["b"].servers]
    assert srvs == [("a", 1, 1, None, 1, False), ("w2", 2, 4, "id", 2, False),
                    ("w3", 2, 4, "id", 3, False), ("x1", 3, 1, None, 10, True),
                    ("x2", 3, 1, None, 5, True)]
    for bad in ("server-template s 0 127.0.0.1:1", "server-template s 3-2 127.0.0.1:1",
                "server-template s 2"):
        with pytest.raises(ConfigError, match="server-template"):
            load_config_text(f"defaults\n    mode http\nbackend b\n    {bad}\n")
