"""proxy/sample.py: nbsrv, be_conn, srv_is_up, srv_conn, queue, connslots read from the
running process's backends (sample.RUNNING, published by proxy/main.py), and the
configuration-time check of the names they give (HAProxy's -c messages)."""
import pytest

from edgestick.cfgsyntax import ConfigError
from edgestick.proxy import sample
from edgestick.proxy.backend import Backend
from edgestick.proxy.config import load_config_text
from edgestick.proxy.sample import Context, compile_expr

CONFIG = """
defaults
    mode http
    timeout connect 1s
    timeout client 1s
    timeout server 1s
frontend fe
    bind 127.0.0.1:8080
    default_backend be
backend be
    server a 127.0.0.1:9001 maxconn 10 maxqueue 5
    server b 127.0.0.1:9002 maxconn 4 maxqueue 2
    server off 127.0.0.1:9003 disabled
backend be_bck
    server main 127.0.0.1:9004
    server b1 127.0.0.1:9005 backup
    server b2 127.0.0.1:9006 backup
backend be_open
    server a 127.0.0.1:9007
"""


@pytest.fixture
def running():
    saved = sample.RUNNING.backends, list(sample.RUNNING.frontends.values())
    cfg, _ = load_config_text(CONFIG)
    backends = {name: Backend(model) for name, model in cfg.backends.items()}
    sample.RUNNING.publish(backends, [])
    yield backends
    sample.RUNNING.publish(*saved)


def val(expr: str):
    return compile_expr(expr)(Context())


def test_servers_and_counts(running):
    be = running["be"]
    assert [val(e) for e in ("nbsrv(be)", "srv_is_up(be/a)", "srv_is_up(be/off)",
                             "connslots(be)", "connslots(be_open)", "queue(be)")] == \
        [2, True, False, 15 + 6, -1, 0]
    be.by_name["b"].set_state(False)              # DOWN: no longer counted
    be.by_name["a"].cur = 3
    be.by_name["a"].queue.append(object())
    be.queue.append(object())
    be.cur = 4
    assert [val(e) for e in ("nbsrv(be)", "srv_is_up(be/b)", "srv_conn(be/a)", "queue(be)",
                             "connslots(be)", "be_conn(be)")] == [1, False, 3, 2, 7 + 4, 4]
    assert [val(e) for e in ("avg_queue(be)", "be_conn_free(be)", "srv_conn_free(be/a)",
                             "srv_conn_free(be_open/a)", "srv_queue(be/a)")] == [2, 7, 7, -1, 1]
    be.by_name["a"].set_state(False)
    assert val("avg_queue(be)") == 4              # no usable server: twice the total


def test_backup_servers(running):
    bck = running["be_bck"]
    assert val("nbsrv(be_bck)") == 1
    bck.by_name["main"].set_state(False)
    assert val("nbsrv(be_bck)") == 1              # the first backup only (no allbackups)
    bck.by_name["b1"].set_state(False)
    bck.by_name["b2"].set_state(False)
    assert val("nbsrv(be_bck)") == 0


def test_a_new_generation_is_read(running):
    fetch = compile_expr("nbsrv(be)")
    assert fetch(Context()) == 2
    cfg, _ = load_config_text(CONFIG.replace("    server off 127.0.0.1:9003 disabled\n",
                                             "    server c 127.0.0.1:9003\n"))
    sample.RUNNING.publish({n: Backend(m) for n, m in cfg.backends.items()}, [])
    assert fetch(Context()) == 3                  # the reloaded backend, same compiled fetch


def test_omitted_names_without_a_rule_give_no_sample(running):
    assert val("nbsrv") is None
    assert val("fe_conn") is None


@pytest.mark.parametrize("expr,message", [
    ("nbsrv(nope)", "unable to find backend 'nope' referenced in arg 1 of ACL keyword "
                    "'nbsrv' in proxy 'fe'."),
    ("nbsrv", "proxy 'fe', referenced in arg 1 of ACL keyword 'nbsrv' in proxy 'fe', has not "
              "backend capability."),
    ("be_conn(fe)", "unable to find backend 'fe'"),
    ("fe_conn(be)", "unable to find frontend 'be'"),
    ("srv_is_up(be/x)", "unable to find server 'x' in proxy 'be', referenced"),
    ("srv_conn(x/a)", "unable to find proxy 'x' referenced"),
    ("srv_conn(a)", "unable to find server 'a' in proxy 'fe', referenced"),
])
def test_names_checked_after_the_load(expr, message):
    text = CONFIG.replace("    default_backend be\n", "    default_backend be\n    http-request "
                          f"deny if {{ {expr} -m found }}\n")
    sample.RUNNING.checking = []
    try:
        cfg, _ = load_config_text(text, "t.cfg")
    finally:
        refs, sample.RUNNING.checking = sample.RUNNING.checking, None
    sample.RUNNING.checking = refs
    with pytest.raises(ConfigError) as e:
        sample.check_proxy_refs(cfg)
    assert message in str(e.value) and "t.cfg:10" in str(e.value)
    assert sample.RUNNING.checking is None


def test_known_names_pass_the_check():
    text = CONFIG.replace("    default_backend be\n", "    default_backend be\n    http-request "
                          "deny if { nbsrv(be) lt 1 } { srv_is_up(be/a) } { fe_conn(fe) gt 9 }\n")
    sample.RUNNING.checking = []
    cfg, _ = load_config_text(text, "t.cfg")
    sample.check_proxy_refs(cfg)


def test_converters_name_the_backend_at_run_time(running):
    running["be"].by_name["a"].queue.append(object())
    assert val("str(be_bck),nbsrv") == 1
    assert val("str(nope),nbsrv") is None
    assert val("str(be/a),srv_queue") == 1
    assert val("str(be/zz),srv_queue") is None
    assert val("str(a),srv_queue") is None        # no rule's proxy known here
