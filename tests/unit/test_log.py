"""proxy/log.py: log lines' configuration (errors, inheritance, `log global`, `no log`,
captures), the log-format compiler and renderer (separators, flags, absent values, a
rule's values), the syslog framing of each format. The lines themselves are compared with
HAProxy's in tests/e2e/test_proxy_log.py."""
import re

import pytest

from edgestick.cfgsyntax import ConfigError
from edgestick.proxy import log
from edgestick.proxy.config import load_config_text
from edgestick.proxy.sample import Context

BASE = """
global
    log 127.0.0.1:514 local0
    log-tag gtag
defaults
    mode http
    log global
    timeout connect 1s
    timeout client 1s
    timeout server 1s
frontend fe
    bind 127.0.0.1:8080
{fe}
    default_backend bk
backend bk
    server s1 127.0.0.1:8081
"""


def load(fe: str):
    cfg, warnings = load_config_text(BASE.format(fe=fe))
    return cfg.frontends["fe"], warnings


@pytest.mark.parametrize("line, message", [
    ("log 127.0.0.1:514 len 30 local0", "invalid log length '30', must be between 80 and 65535"),
    ("log 127.0.0.1:514 format bogus local0", "unknown log format 'bogus'"),
    ("log 127.0.0.1:514 loud", "unknown log facility 'loud'"),
    ("log 127.0.0.1:514 local0 loud", "unknown optional log level 'loud'"),
    ("log 127.0.0.1:514 local0 info info extra", "unexpected argument 'extra'"),
    ("log ring@buf local0", "not supported by edgestick"),
    ("log 127.0.0.1:514 len 100 len 200 local0", "unknown log facility 'len'"),
    ("log 127.0.0.1:514 sample 1:3 format raw local0", "unknown log facility 'format'"),
    ("log 127.0.0.1:514 sample 3:2 local0", "sample size 2 should be greater or equal to 3"),
    ("log 127.0.0.1:514 sample 0:2 local0", "wrong sample range '0'"),
    ("log 127.0.0.1:514 sample 1 local0", "Missing sample size"),
    ("log-format a b", "log-format expects only one argument"),
    ("log-format %zz", "no such format variable 'zz'"),
    ('log-format "%[nosuch]"', "failed to parse log-format : failed to parse sample "
                               "expression <nosuch]> : unknown fetch method 'nosuch'"),
    ('log-format "a %{+Q}[path,lower] b"', "sample fetch <path,lower] b> may not be reliably "
     "used here because it needs 'HTTP request headers' which is not available here."),
    ('log-format "%[hdr(host)]"', "needs 'HTTP request headers,HTTP response headers'"),
    ("unique-id-format %{+Q", "missing '}'"),
    ("http-request capture path id 3", "unable to find capture id '3'"),
    ("capture request header Host", "expects 'header' <header_name> 'len' <len>"),
])
def test_errors_name_the_line_and_keyword(line, message):
    with pytest.raises(ConfigError) as e:
        load(f"    {line}")
    assert message in str(e.value)
    assert str(e.value).startswith(f"<string>:13: '{line.split()[0]}'")


def test_targets_global_no_log_and_tag():
    fe, _ = load("    log 127.0.0.1:515 format rfc5424 local1 notice err")
    pl = fe.log
    assert [(t.addr, t.fmt, t.facility, t.level, t.minlevel) for t in pl.targets] == [
        (("127.0.0.1", 514), "local", 16, 7, 0), (("127.0.0.1", 515), "rfc5424", 17, 5, 3)]
    assert pl.tag == "gtag"
    fe, _ = load("    no log\n    log stdout format raw daemon")
    assert [(t.kind, t.addr, t.fmt) for t in fe.log.targets] == [("fd", 1, "raw")]


def test_log_format_reads_what_outlives_the_request():
    fe, _ = load('    log-format "%[src] %[capture.req.hdr(0)] %[unique-id] %[method]"')
    assert fe.log.fmt.startswith("%[src]")


def test_log_format_without_target_warns():
    _, warnings = load("    no log\n    log-format %ci")
    assert "log format ignored for frontend 'fe' since it has no log address." in warnings


def test_capture_slots_in_declaration_order():
    fe, _ = load("    capture request header Host len 5\n"
                 "    http-request capture path len 3\n"
                 "    declare capture request len 7\n"
                 "    http-request capture method id 2\n"
                 "    capture response header Server len 9")
    assert fe.log.req_caps == [("host", 5), (None, 3), (None, 7)]
    assert fe.log.res_caps == [("server", 9)]
    caps = [r for r in fe.http_request if r.action == "capture"]
    assert [(r.index, r.slot) for r in caps] == [(1, 3), (2, 7)]


def _ctx(**kw):
    return Context("192.0.2.1", 4321, "127.0.0.1", 80, method="GET", url="/p?q=1", version=11,
                   **kw)


def test_separators_collapse_and_nothing_written():
    f = log.compile_format('  a  b %ci  %hr  %hs %HM %{+Q}hr %{+Q}CC %o z ')
    assert log.render(f, _ctx()) == 'a b 192.0.2.1 GET "" z '


def test_flags():
    f = log.compile_format("%{+X}ci:%{+X}cp %{+Q}HU %{+Q}o %HM %{-Q}HM %{+E,+Q}[str(a\"b)]")
    assert log.render(f, _ctx()) == 'C0000201:10E1 "/p?q=1" "GET" GET "a\\"b"'


def test_request_line_is_encoded():
    ctx = Context("192.0.2.1", 1, "127.0.0.1", 80, method="GET", url='/a"b#c\x01', version=10)
    assert log.render(log.compile_format("%r|%HP|%HQ|%HV"), ctx) == \
        "GET /a#22b#23c#01 HTTP/1.0|/a#22b#23c#01||HTTP/1.0"


def test_rule_values_keep_blanks_and_leave_absent_empty():
    ctx = _ctx()
    assert log.log_format("a  %[req.hdr(nope)]  %ci", ctx) == "a    192.0.2.1"
    assert log.log_format("100%% %[src] %x", ctx) == "100% 192.0.2.1 %x"


@pytest.mark.parametrize("fmt, expected", [
    ("raw", "msg"),
    ("short", "<6>msg"),
    ("priority", "<134>msg"),
    ("local", r"<134>[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d tag\[42\]: msg"),
    ("rfc3164", r"<134>[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d localhost tag\[42\]: msg"),
    ("rfc5424", r"<134>1 \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}[+-]\d\d:\d\d - tag 42 - - msg"),
    ("timed", r"<6>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}[+-]\d\d:\d\d msg"),
    ("iso", r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}[+-]\d\d:\d\d msg"),
])
def test_framing(fmt, expected):
    got = log.frame(fmt, 16, 6, "tag", None, 42, 1_700_000_000.25, "msg")
    assert re.fullmatch(expected, got), got


def test_hostname_when_sent():
    assert log.frame("local", 0, 3, "t", "edge1", 1, 0.0, "m").endswith(" edge1 t[1]: m")
    assert " edge1 t 1 - - m" in log.frame("rfc5424", 0, 3, "t", "edge1", 1, 0.0, "m")


def test_response_capture_by_id():
    fe, _ = load("    declare capture response len 4\n"
                 "    http-response capture res.hdr(server) id 0")
    rule = fe.http_response[0]
    assert (rule.action, rule.index, rule.slot) == ("capture", 0, 4)
    with pytest.raises(ConfigError, match="'len' is not allowed here"):
        load("    http-response capture res.hdr(server) len 4")


def test_the_last_of_log_format_and_option_httplog_wins():
    text = BASE.replace("    log global\n", "    log global\n    log-format \"from-defaults\"\n")
    cfg, _ = load_config_text(text.format(fe="    option httplog"))
    assert cfg.frontends["fe"].log.fmt is None           # HAProxy's HTTP format
    cfg, _ = load_config_text(text.format(fe="    option httplog\n    log-format own"))
    assert cfg.frontends["fe"].log.fmt == "own"
