"""proxy/auth.py without a network: credentials as HAProxy's get_http_auth reads them,
password checks through crypt(3), the 401's bytes, userlist memberships and errors.
(The same behaviours are compared with HAProxy in tests/e2e/test_proxy_auth.py.)"""
import base64

import pytest

from edgestick.cfgsyntax import ConfigError, read_lines
from edgestick.proxy import auth, http1
from edgestick.proxy.config import load_config_text


def hdr(value):
    return [("authorization", value)]


def b64(text: bytes) -> str:
    return base64.b64encode(text).decode()


@pytest.mark.parametrize("value,expected", [
    ("Basic " + b64(b"alice:wonder"), ("Basic", "alice", "wonder")),
    ("basic " + b64(b"alice:wonder"), ("Basic", "alice", "wonder")),
    ("B " + b64(b"alice:wonder"), ("Basic", "alice", "wonder")),      # scheme on its length
    ("Basic   " + b64(b"alice:wonder"), ("Basic", "alice", "wonder")),
    ("Basic " + b64(b"a:b:c"), ("Basic", "a", "b:c")),
    ("Basic " + b64(b":pw"), ("Basic", "", "pw")),
    ("Basic YQ==OmI=", ("Basic", "a", "b")),                   # groups of four, each padded
    ("Basic " + b64(b"a\0:b"), None),                          # a C string ends at the NUL
    ("Basicx " + b64(b"a:b"), None),
    ("Basic " + b64(b"nocolon"), None),
    ("Basic YWxpY2U6d29uZGV", None),
    ("Basic !!!!", None),
    ("Basic", None),
    (" Basic", None),
    ("Bearer tok", ("Bearer", None, None)),
    ("Digest x", None),
])
def test_credentials(value, expected):
    assert auth.credentials(hdr(value)) == expected


def test_credentials_first_value_only():
    assert auth.credentials(hdr("Basic " + b64(b"a:b") + ", Basic eA==")) == ("Basic", "a", "b")
    assert auth.credentials([("authorization", "Digest x"),
                             ("authorization", "Basic " + b64(b"a:b"))]) is None
    assert auth.credentials([]) is None


def test_check_hashes_and_insecure():
    ul = auth.Userlist("ul")
    for name, pw, insecure in (("a", "clear", True),
                               ("b", "$5$abcdefgh$gruCpC7VkOTspMQTTSAR8mtlO9Upms.fwqE5y16JVM.",
                                False),
                               ("c", "$md5", False), ("d", None, False)):
        u = ul.users[name] = auth.User(name, None)
        u.password, u.insecure = pw, insecure
    assert ul.check("a", "clear") and not ul.check("a", "Clear")
    assert ul.check("b", "secret") and not ul.check("b", "secreT")
    assert ul.check("b", "secret") and not ul.check("b", "secreT")     # the kept verdicts
    assert not ul.check("c", "secret")          # a hash libcrypt cannot use never matches
    assert not ul.check("d", "")                 # no password at all
    assert not ul.check("nobody", "x") and not ul.check(None, None)
    assert not ul.check("b", "sec\0ret")


def test_unauthorized_bytes():
    page = http1.error_body(401)
    expect = (b'HTTP/1.1 401 Unauthorized\r\ncontent-length: %d\r\ncache-control: no-cache\r\n'
              b'content-type: text/html\r\nwww-authenticate: Basic realm="R 1"\r\n%s\r\n'
              % (len(page), b"%s"))
    assert auth.unauthorized("R 1", False, False) == (expect % b"" + page, False)
    assert auth.unauthorized("R 1", True, False) == (expect % b"connection: close\r\n" + page,
                                                     False)
    assert auth.unauthorized("R 1", False, True) == (expect % b"connection: keep-alive\r\n"
                                                     + page, False)
    custom = http1.ErrorPage.parse(b"HTTP/1.1 401 Unauthorized\r\nX-A: b\r\n"
                                   b"Content-Length: 3\r\n\r\nno\n")
    assert auth.unauthorized("R", False, False, custom) == (
        b'HTTP/1.1 401 Unauthorized\r\nx-a: b\r\ncontent-length: 3\r\n'
        b'www-authenticate: Basic realm="R"\r\n\r\nno\n', False)
    open_ended = http1.ErrorPage.parse(b"HTTP/1.1 401 Unauthorized\r\n\r\nno\n")
    assert auth.unauthorized("R", False, False, open_ended) == (
        b'HTTP/1.1 401 Unauthorized\r\nwww-authenticate: Basic realm="R"\r\n'
        b'connection: close\r\n\r\nno\n', True)


CFG = """defaults
    mode http
userlist ul
    group admins users alice
    group ops
    user alice insecure-password wonder
    user bob insecure-password x groups ops,admins
frontend f
    bind 127.0.0.1:20999
    acl adm http_auth_group(ul) admins
    http-request auth realm Admins if !adm
"""


def test_memberships_and_group_acl():
    cfg, _ = load_config_text(CFG, "u.cfg")
    ul = cfg.userlists["ul"]
    assert ul.users["alice"].groups == {"admins"}
    assert ul.users["bob"].groups == {"ops", "admins"}
    rule = cfg.frontends["f"].http_request[0]
    assert rule.action == "auth" and rule.fmt == "Admins"

    class Ctx:
        headers = hdr("Basic " + b64(b"bob:x"))
    assert not rule.cond(Ctx)               # bob is an admin: no 401
    Ctx.headers = hdr("Basic " + b64(b"bob:y"))
    assert rule.cond(Ctx)


def test_userlist_errors_name_the_line():
    with pytest.raises(ConfigError) as e:
        load_config_text("userlist ul\n    user u groups nope\n", "u.cfg")
    assert str(e.value) == ("u.cfg:2: 'user': userlist 'ul': no such group 'nope' specified "
                            "in user 'u'")
    with pytest.raises(ConfigError) as e:
        load_config_text("userlist ul\n    group g users a,,b\n    user a\n", "u.cfg")
    assert str(e.value).startswith("u.cfg:2: 'group': userlist 'ul': no such user 'b'")
    _, warnings = load_config_text("userlist ul\nuserlist ul\n    user u\n    user u\n", "u.cfg")
    assert [w.split(": ", 2)[2] for w in warnings] == [
        "ignoring duplicated userlist 'ul'.", "ignoring duplicated user 'u' in userlist 'ul'."]


def test_section_parser_alone():
    users, warnings = {}, []
    sp = auth.SectionParser(users, warnings, lambda line: (line.file, line.lineno))
    lines = list(read_lines("userlist x\n    user u password\n", "s.cfg"))
    sp.open(lines[0])
    sp.line(lines[1])
    assert users["x"].users["u"].password == "" and not users["x"].users["u"].insecure
