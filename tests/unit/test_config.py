"""proxy/config.py: the seed and transcript configurations parse; every error path names
file:line and the keyword; warnings; defaults inheritance."""
import re
import subprocess
from pathlib import Path

import pytest

from edgestick.cfgsyntax import ConfigError
from edgestick.proxy.config import load_config, load_config_text

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
TRANSCRIPTS = FIXTURES / "haproxy-transcripts"
SECTION = re.compile(r"^(global|defaults|frontend|backend|listen|peers)\b")


def transcript_configs() -> list[tuple[str, str]]:
    """Every haproxy.cfg embedded in the transcripts: from an unindented `global` line to
    the first unindented line that is neither a section header nor a comment."""
    out = []
    for path in sorted(TRANSCRIPTS.glob("*.txt")):
        lines = path.read_text().splitlines()
        i = 0
        n = 0
        while i < len(lines):
            if lines[i] == "global":
                j = i + 1
                while j < len(lines) and (not lines[j] or lines[j][0] in " \t#"
                                          or SECTION.match(lines[j])):
                    j += 1
                n += 1
                out.append((f"{path.stem}#{n}", "\n".join(lines[i:j]) + "\n"))
                i = j
            else:
                i += 1
    return out


TRANSCRIPT_CONFIGS = transcript_configs()


def test_every_transcript_has_its_config():
    names = {n.split("#")[0] for n, _ in TRANSCRIPT_CONFIGS}
    expected = {p.stem for p in TRANSCRIPTS.glob("*.txt")} - {"README", "peers-exchange"}
    assert expected <= names
    assert len(TRANSCRIPT_CONFIGS) >= 12


@pytest.fixture(scope="module")
def cert_pem(tmp_path_factory) -> str:
    """A self-signed certificate + key in one PEM, as `bind ... ssl crt` expects."""
    d = tmp_path_factory.mktemp("tls")
    key, crt = d / "key.pem", d / "crt.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key), "-out",
                    str(crt), "-days", "2", "-subj", "/CN=localhost"],
                   check=True, capture_output=True)
    pem = d / "cert.pem"
    pem.write_text(crt.read_text() + key.read_text())
    return str(pem)


def seed_text(cert: str) -> str:
    text = (FIXTURES / "seed-configs.cfg").read_text()
    text = re.sub(r"10\.0\.1\.\d+", "127.0.0.1", text)
    return text.replace("/etc/ssl/cert.pem", cert)


SEED_DEFAULTS = "defaults\n    mode http\n    timeout connect 5s\n    timeout client 30s\n" \
                "    timeout server 30s\n"


@pytest.mark.parametrize("name,text", TRANSCRIPT_CONFIGS, ids=[n for n, _ in TRANSCRIPT_CONFIGS])
def test_transcript_config_parses(name, text):
    cfg, warnings = load_config_text(text, f"{name}.cfg")
    assert cfg.proxies
    for p in cfg.proxies:
        assert p.mode == "http" or "defaults" not in text


def test_seed_configs_parse_as_given(tmp_path, cert_pem):
    path = tmp_path / "seed.cfg"
    path.write_text(seed_text(cert_pem))
    cfg, warnings = load_config([str(path)])
    assert [p.name for p in cfg.proxies] == ["app_servers", "app_servers_cookie", "http_front",
                                              "https_front", "app_servers_replicated"]
    # without a defaults section the proxies are in tcp mode: HAProxy warns, so do we
    assert any("require HTTP mode" in w for w in warnings)
    assert any("missing timeouts" in w for w in warnings)


def test_seed_configs_with_http_defaults(tmp_path, cert_pem):
    path = tmp_path / "seed.cfg"
    path.write_text(SEED_DEFAULTS + seed_text(cert_pem))
    cfg, warnings = load_config([str(path)])
    assert not [w for w in warnings if "mode" in w or "timeouts" in w]
    be = cfg.backends["app_servers"]
    assert be.balance == "roundrobin"
    assert [(s.name, s.host, s.port, s.check, s.id) for s in be.servers] == [
        ("app1", "127.0.0.1", 8080, True, 1), ("app2", "127.0.0.1", 8080, True, 2),
        ("app3", "127.0.0.1", 8080, True, 3)]
    assert be.stick_table_words.words[:3] == ("stick-table", "type", "ip")
    assert [(r.kind, r.expr_text, r.table) for r in be.stick_rules] == [("on", "src", None)]
    ck = cfg.backends["app_servers_cookie"].cookie
    assert (ck.name, ck.mode, ck.indirect, ck.nocache) == ("SERVERID", "insert", True, True)
    assert [s.cookie for s in cfg.backends["app_servers_cookie"].servers] == ["s1", "s2"]
    fe = cfg.frontends["http_front"]
    assert (fe.binds[0].host, fe.binds[0].port, fe.binds[0].family) == ("0.0.0.0", 80, "ipv4")
    assert [r.action for r in fe.http_request] == ["track-sc", "deny"]
    assert fe.http_request[1].reply.status == 429
    assert fe.default_backend == "app_servers"
    tls = cfg.frontends["https_front"]
    assert tls.binds[0].ssl and tls.binds[0].ssl_context is not None
    assert [r.reply.status for r in tls.http_request[1:]] == [429, 403, 429]
    peers = cfg.peers["mypeers"]
    assert [(p.name, p.host, p.port) for p in peers.peers] == [
        ("haproxy1", "127.0.0.1", 1024), ("haproxy2", "127.0.0.1", 1024)]


def test_several_files_are_one_configuration(tmp_path):
    a, b = tmp_path / "a.cfg", tmp_path / "b.cfg"
    a.write_text(SEED_DEFAULTS + "frontend f\n    bind 127.0.0.1:8080\n    default_backend b\n")
    b.write_text("backend b\n    server s1 127.0.0.1:8081\n")
    cfg, warnings = load_config([str(a), str(b)])
    assert cfg.frontends["f"].default_backend == "b" and "b" in cfg.backends
    assert warnings == []


# --------------------------------------------------------------------------- error paths
# (configuration after SEED_DEFAULTS, line of the error in that tail, keyword, message part)
ERRORS = [
    ("frontend f\n    bind :80\n    foo bar\n", 3, "foo", "unknown keyword 'foo' in 'frontend'"),
    ("frontend f\n    bind :80\n    server s 127.0.0.1:1\n", 3, "server", "no backend capability"),
    ("frontend f\n    bind 127.0.0.1:80 foo\n", 2, "bind", "unknown keyword 'foo'"),
    ("frontend f\n    bind 1.2.3.4\n", 2, "bind", "missing port"),
    ("frontend f\n    bind :99999\n", 2, "bind", "invalid port"),
    ("frontend f\n    bind 1.2.3.4.5:80\n", 2, "bind", "could not resolve"),
    ("frontend f\n    bind foo@:80\n", 2, "bind", "not supported"),
    ("frontend f\n    bind :80 ssl\n", 2, "bind", "no SSL certificate"),
    ("frontend f\n    bind :80 ssl crt /nonexistent.pem\n", 2, "bind", "No such file"),
    ("frontend f\n    bind :80\n    http-request track-sc3 src\n", 3, "http-request", "exceeding 2"),
    ("frontend f\n    bind :80\n    http-request track-sc0\n", 3, "http-request", "expects a fetch"),
    ("frontend f\n    bind :80\n    http-request track-sc0 src tabel t\n", 3, "http-request",
     "unexpected word 'tabel'"),
    ("frontend f\n    bind :80\n    http-request deny deny_status 418\n", 3, "http-request",
     "status code '418' not handled"),
    ("frontend f\n    bind :80\n    http-request deny deny_status abc\n", 3, "http-request",
     "Unexpected status code 'abc'"),
    ("frontend f\n    bind :80\n    http-request deny status 429 string x\n", 3, "http-request",
     "content type must be defined"),
    ("frontend f\n    bind :80\n    http-request deny status 429 content-type t/p string x hdr A\n",
     3, "http-request", "'hdr' expects <name> and <value>"),
    ("frontend f\n    bind :80\n    http-request deny frob\n", 3, "http-request", "unknown keyword 'frob'"),
    ("frontend f\n    bind :80\n    http-request return status 700\n", 3, "http-request", "'700'"),
    ("frontend f\n    bind :80\n    http-request frobnicate\n", 3, "http-request", "but got 'frobnicate'"),
    ("frontend f\n    bind :80\n    http-request set-nice 5\n", 3, "http-request", "not supported"),
    ("frontend f\n    bind :80\n    http-request set-map(x) a\n", 3, "http-request",
     "expects exactly 2 arguments"),
    ("frontend f\n    bind :80\n    http-request sc-inc-gpc0(3)\n", 3, "http-request", "max allowed ID is 2"),
    ("frontend f\n    bind :80\n    http-request sc-inc-gpc0\n", 3, "http-request", "missing stick counter"),
    ("frontend f\n    bind :80\n    http-request sc-set-gpt0(0)\n", 3, "http-request", "exactly one value"),
    ("frontend f\n    bind :80\n    http-request set-header X\n", 3, "http-request", "exactly 2"),
    ("frontend f\n    bind :80\n    http-request redirect nowhere\n", 3, "http-request", "'location'"),
    ("frontend f\n    bind :80\n    http-request redirect location / code 404\n", 3, "http-request",
     "unsupported HTTP code"),
    ("frontend f\n    bind :80\n    http-request use-service lua.x\n", 3, "http-request", "unknown service"),
    ("frontend f\n    bind :80\n    tcp-request connection track-sc0 hdr(x)\n", 3, "tcp-request",
     "none of which is available here"),
    ("frontend f\n    bind :80\n    tcp-request frob accept\n", 3, "tcp-request", "got 'frob'"),
    ("frontend f\n    bind :80\n    tcp-request connection deny\n", 3, "tcp-request", "'deny'"),
    ("frontend f\n    bind :80\n    tcp-request inspect-delay 5x\n", 3, "tcp-request", "unexpected character"),
    ("backend b\n    tcp-request connection reject\n", 2, "tcp-request", "not a frontend"),
    ("frontend f\n    bind :80\n    http-request track-sc0 src table nope\n", 3, "http-request",
     "unable to find table 'nope'"),
    ("frontend f\n    bind :80\n    http-request deny if { src_conn_cnt(nope) gt 1 }\n", 3,
     "http-request", "unable to find table 'nope' referenced by src_conn_cnt"),
    ("frontend f\n    bind :80\n    http-request deny if { src_conn_cnt gt 1 }\n", 3,
     "http-request", "unable to find table 'f' referenced by src_conn_cnt"),
    ("frontend f\n    bind :80\n    acl a src,table_http_req_rate gt 1\n", 3,
     "acl", "unable to find table 'f' referenced by table_http_req_rate"),
    ("frontend f\n    bind :80\n    use_backend zz if TRUE\n", 3, "use_backend",
     "unable to find required use_backend: 'zz'"),
    ("frontend f\n    bind :80\n    use_backend\n", 3, "use_backend", "expects a backend name"),
    ("frontend f\n    bind :80\n    default_backend zz\n", 3, "default_backend",
     "unable to find required default_backend: 'zz'"),
    ("frontend f\n    bind :80\n    default_backend b\nbackend b\n    mode tcp\n", 3,
     "default_backend", "incompatible tcp backend 'b'"),
    ("backend b\n    stick on src\n", 2, "stick", "unable to find stick-table 'b'"),
    ("backend b\n    stick on\n", 2, "stick", "expects a fetch method"),
    ("backend b\n    stick frob src\n", 2, "stick", "got 'frob'"),
    ("backend b\n    stick-table type ip size 1k peers nopeers\n", 2, "stick-table",
     "unable to find sync peers 'nopeers'"),
    ("backend b\n    stick-table type ip size 1\n    stick-table type ip size 1\n", 3,
     "stick-table", "only one stick-table"),
    ("backend b\n    server s 127.0.0.1:80 check bogus\n", 2, "server b/s", "unknown keyword 'bogus'"),
    ("backend b\n    server s 127.0.0.1:80 weight 300\n", 2, "server b/s", "not within 0 and 256"),
    ("backend b\n    server s 127.0.0.1:80 inter\n", 2, "server b/s", "expects an argument"),
    ("backend b\n    server s 127.0.0.1:80 rise 0\n", 2, "server", "rise must be between"),
    ("backend b\n    server s 127.0.0.1:80 inter 2x\n", 2, "server", "unexpected character"),
    ("backend b\n    server s\n", 2, "server", "expects <name> and <addr>"),
    ("backend b\n    server x 127.0.0.1:1\n    server x 127.0.0.1:2\n", 3, "server",
     "another server named 'x'"),
    ("backend b\n    server x 127.0.0.1:1 id 3\n    server y 127.0.0.1:2 id 3\n", 3, "server",
     "same id 3"),
    ("backend b\nbackend b\n", 2, "backend", "same name as backend 'b'"),
    ("listen b\nbackend b\n", 2, "backend", "same name as listen 'b'"),
    ("backend b\n    balance foo\n", 2, "balance", "balance only supports"),
    ("backend b\n    balance rdp-cookie\n", 2, "balance", "not supported by edgestick"),
    ("backend b\n    balance uri len 0\n", 2, "balance", "'len' expects a positive integer"),
    ("backend b\n    hash-type consistent none\n", 2, "hash-type", "only supports 'sdbm'"),
    ("backend b\n    cookie\n", 2, "cookie", "expects <cookie_name>"),
    ("backend b\n    cookie S insert foo\n", 2, "cookie", "'cookie' supports"),
    ("backend b\n    cookie S insert rewrite\n", 2, "cookie", "mutually exclusive"),
    ("backend b\n    cookie S prefix indirect\n", 2, "cookie", "mutually exclusive"),
    ("backend b\n    cookie S insert maxidle 1x\n", 2, "cookie", "unexpected character"),
    ("backend b\n    option frob\n", 2, "option", "unknown option 'frob'"),
    ("backend b\n    option mysql-check user x\n", 2, "option", "non-HTTP health check"),
    ("frontend f\n    bind :80\n    option originalto frob\n", 3, "option",
     "only supports optional values: 'except' and 'header'"),
    ("backend b\n    server s 127.0.0.1:443 ssl\n", 2, "server b/s",
     "verify is enabled by default but no CA file specified"),
    ("backend b\n    server s 127.0.0.1:443 ssl verify none alpn h2\n", 2, "server b/s",
     "only 'http/1.1' is supported"),
    ("backend b\n    server s 127.0.0.1:80 crl-file /x\n", 2, "server b/s",
     "server option 'crl-file' is not supported"),
    ("frontend f\n    bind :80 accept-netscaler-cip 1234\n", 2, "bind",
     "bind option 'accept-netscaler-cip' is not supported"),
    ("backend b\n    option redispatch now\n", 2, "option", "does not take any argument"),
    ("frontend f\n    bind :80\n    option forwardfor frob\n", 3, "option", "only supports"),
    ("frontend f\n    bind :80\n    option forwardfor except 1.2.3.999\n", 3, "option", "valid"),
    ("backend b\n    http-check frob\n", 2, "http-check", "only supports"),
    ("backend b\n    option httpchk GET / HTTP/1.1 extra\n", 2, "option", "unexpected argument"),
    ("backend b\n    timeout server 99999999999\n", 2, "timeout", "overflow"),
    ("backend b\n    http-check send frob x\n", 2, "http-check", "unknown parameter"),
    ("backend b\n    retries x\n", 2, "retries", "expects an integer"),
    ("frontend f\n    bind :80\n    maxconn -1\n", 3, "maxconn", "between"),
    ("frontend f\n    bind :80\n    timeout client 10x\n", 3, "timeout", "unexpected character"),
    ("frontend f\n    bind :80\n    timeout nosuch 10\n", 3, "timeout", "got 'nosuch'"),
    ("frontend f\n    bind :80\n    timeout client\n", 3, "timeout", "missing"),
    ("frontend f\n    bind :80\n    mode ftp\n", 3, "mode", "got 'ftp'"),
    ("frontend f\n    bind :80\n    mode http check\n", 3, "mode", "unexpected argument 'check'"),
    ("backend b\n    stick-table type string size 1\n    stick on res.cook(x)\n", 3, "stick",
     "'HTTP response headers', none of which is available here"),
    ("backend b\n    retries 3 4\n", 2, "retries", "unexpected argument '4'"),
    ("backend b\n    server s 127..0.1:80\n", 2, "server b/s", "could not resolve"),
    ("frontend f\n    bind :80\n    http-request set-header X-A %[nosuch]\n", 3, "http-request",
     "failed to parse sample expression <nosuch>"),
    ("frontend f\n    bind :80\n    http-request return status 200 content-type t/p lf-string "
     "\"%[src] %ci %[path,lower\"\n", 3, "http-request", "missing ']'"),
    ("frontend f\n    bind :80\n    http-request deny status 429 hdr X %[frob(1)]\n", 3,
     "http-request", "unknown fetch method 'frob'"),
    ("frontend f\n    bind :80\n    http-request redirect location /%[frob]\n", 3,
     "http-request", "failed to parse sample expression"),
    ("frontend f\n    bind :80\n    http-request deny if { src_conn_cnt(nope) gt 1 }\n", 3,
     "http-request", "unable to find table 'nope'"),
    ("backend b\n    http-check send meth GET\n    http-check send meth HEAD\n", 3,
     "http-check", "missing connect rule"),
    ("backend b\n    http-check send meth GET\n    http-check connect\n", 3,
     "http-check", "first step MUST also be a 'connect'"),
    ("frontend f\n    bind :80\n    acl a\n", 3, "acl", "expects an ACL name"),
    ("frontend f\n    bind :80\n    acl a frob x\n", 3, "acl", "unknown fetch method 'frob'"),
    ("frontend f\n    bind :80\n    http-request deny if nosuch\n", 3, "http-request",
     "no such ACL : 'nosuch'"),
    ("frontend f\n    bind :80\n    http-request deny if { src -m ip 1.2.3.999 }\n", 3,
     "http-request", "'1.2.3.999'"),
    ("frontend f\n    bind :80\n    http-request deny if { path -m nosuch x }\n", 3,
     "http-request", "unknown match method 'nosuch'"),
    ("frontend f\n    bind :80\n    http-request deny if { sc_http_req_rate(a) gt 1 }\n", 3,
     "http-request", "invalid stick counter 'a'"),
    ("frontend f\n    bind :80\n    http-request deny if { path /x\n", 3, "http-request",
     "missing closing '}'"),
    ("frontend\n", 1, "frontend", "expects <name>"),
    ("frontend f extra\n", 1, "frontend", "unexpected argument"),
    ("frontend f/x\n", 1, "frontend", "not permitted"),
    ("frontend f from nosuch\n", 1, "frontend", "defaults section 'nosuch' not found"),
    ("defaults\n    acl x path /x\n", 2, "acl", "anonymous 'defaults'"),
    ("defaults\n    http-request deny\n", 2, "http-request", "anonymous 'defaults'"),
    ("defaults\n    stick-table type ip size 1k\n", 2, "stick-table", "'defaults' section"),
    ("defaults\n    bind :80\n", 2, "bind", "'defaults' section"),
    ("defaults d\n    http-request deny\nfrontend f\n    bind :80\n    default_backend b\n"
     "backend b\n", 6, "backend", "cannot inherit from the same defaults"),
    ("global\n    stats socket /tmp/x.sock mode 600 level superuser\n", 2, "stats socket",
     "only supports 'user', 'operator', and 'admin'"),
    ("global\n    stats socket /tmp/x.sock mode 9x\n", 2, "stats socket", "invalid mode"),
    ("global\n    stats socket /tmp/x.sock frob\n", 2, "stats socket", "unknown keyword 'frob'"),
    ("global\n    stats frob\n", 2, "stats", "got 'frob'"),
    ("global\n    stats timeout 0\n", 2, "stats", "positive"),
    ("global\n    foo\n", 2, "foo", "unknown keyword 'foo' in 'global'"),
    ("global\n    log /dev/log notice\n", 2, "log", "unknown log facility 'notice'"),
    ("frontend f\n    bind :80\n    log 127.0.0.1 local0 loud\n", 3, "log", "unknown optional log level"),
    ("peers p\n    bind :1\n    bind :2\n", 3, "bind", "One listener per"),
    ("global\n    nbproc 2\n", 2, "nbproc", "not supported any more"),
    ("global\n    maxconn lots\n", 2, "maxconn", "integer"),
    ("global x\n", 1, "global", "no argument"),
    ("peers p\n    peer a 127.0.0.1:1000\n    peer a 127.0.0.1:1001\n", 3, "peer",
     "already defined"),
    ("peers p\n    peer\n", 2, "peer", "missing <name>"),
    ("defaults d\ndefaults d\nfrontend f from d\n", 3, "frontend", "ambiguous defaults section"),
    ("backend b\n    http-check connect\n    http-check expect status 200\n", 3, "http-check",
     "missing send rule"),
    ("backend b\n    http-check expect status 2x0\n", 2, "http-check", "invalid character 'x'"),
    ("peers p\n    peer a 127.0.0.1:1000 frob\n", 2, "peer", "unknown keyword 'frob'"),
    ("peers p\n    foo\n", 2, "foo", "unknown keyword 'foo' in 'peers'"),
    ("peers p\npeers p\n", 2, "peers", "same name"),
    ("userlist u\n    foo bar\n", 2, "foo", "unknown keyword 'foo' in 'users' section"),
    ("userlist u\n    user a groups g\n", 2, "user", "no such group 'g' specified in user 'a'"),
    ("frontend f\n    stats foo\n", 2, "stats", "unknown stats parameter 'foo'"),
    (".if 1\nbackend b\n", 1, ".if", "non-terminated '.if' block"),
    (".else\n", 1, ".else", "lone '.else'"),
    (".if frob(1)\n.endif\n", 1, ".if", "unknown conditional expression predicate"),
    ("backend b\n    stick-table type ip\n", 2, "stick-table", "missing size"),
    ("backend b\n    stick-table size 1k\n", 2, "stick-table", "missing type"),
    ("backend b\n    stick-table type ip size 1k store frob\n", 2, "stick-table", "frob"),
    ("backend b\n    stick-table type ip size 1k store gpc(2),gpc0\n", 2, "stick-table",
     "simultaneous usage"),
    ("backend b\n    stick-table type ip size 1k frob\n", 2, "stick-table", "unknown argument"),
    ("backend b\n    stick-table type ip size 1k expire 5x\n", 2, "stick-table", "'x'"),
    ("peers p\n    peer a 127.0.0.1:1\n    table t type ip\n", 3, "table", "missing size"),
    ("peers p\n    table t type ip size 1\n    table t type ip size 1\n", 3, "table",
     "already defined"),
]


@pytest.mark.parametrize("tail,line,keyword,message", ERRORS,
                         ids=[f"{i}-{e[2]}" for i, e in enumerate(ERRORS)])
def test_errors_name_file_line_and_keyword(tail, line, keyword, message):
    offset = SEED_DEFAULTS.count("\n")
    text = tail if tail.startswith(("global", "peers", ".")) else SEED_DEFAULTS + tail
    if text is tail:
        offset = 0
    with pytest.raises(ConfigError) as ei:
        load_config_text(text, "edge.cfg")
    e = ei.value
    assert (e.file, e.line, e.keyword) == ("edge.cfg", line + offset, keyword), str(e)
    assert message in str(e)
    assert str(e).startswith(f"edge.cfg:{line + offset}: '{keyword}': ")


def test_keyword_out_of_section_and_unreadable_file(tmp_path):
    with pytest.raises(ConfigError) as ei:
        load_config_text("\n# comment\n   maxconn 5\n", "x.cfg")
    assert str(ei.value) == "x.cfg:3: 'maxconn': unknown keyword 'maxconn' out of section"
    with pytest.raises(ConfigError) as ei:
        load_config([str(tmp_path / "missing.cfg")])
    assert "missing.cfg" in str(ei.value) and "cannot open" in str(ei.value)


def test_error_in_second_file_names_that_file(tmp_path):
    a, b = tmp_path / "a.cfg", tmp_path / "b.cfg"
    a.write_text(SEED_DEFAULTS + "frontend f\n    bind :8080\n")
    b.write_text("backend b\n\n    frob\n")
    with pytest.raises(ConfigError) as ei:
        load_config([str(a), str(b)])
    assert str(ei.value).startswith(f"{b}:3: 'frob': ")


def test_bad_certificate_is_an_error(tmp_path):
    bad = tmp_path / "bad.pem"
    bad.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    with pytest.raises(ConfigError) as ei:
        load_config_text(SEED_DEFAULTS + f"frontend f\n    bind :443 ssl crt {bad}\n", "t.cfg")
    assert ei.value.line == 7 and ei.value.keyword == "bind"
    assert "unable to load SSL certificate" in str(ei.value)


# --------------------------------------------------------------------------- warnings

WARNINGS = [
    ("backend b\n    bind :80\n", "'bind' ignored because backend 'b' has no frontend capability"),
    ("frontend f\n    bind :80\n    balance roundrobin\n", "'balance' ignored because frontend"),
    ("frontend f\n    bind :80\n    option redispatch\n", "'redispatch' ignored because frontend"),
    ("backend b\n    timeout client 5s\n", "'timeout client' will be ignored"),
    ("backend b\n    maxconn 5\n", "Maybe you want 'fullconn'"),
    ("frontend f\n    bind :80\n    cookie S insert domain example.com\n", "ignored because frontend"),
    ("backend b\n    cookie S insert domain example.com\n", "does not start with a dot"),
    ("backend b\n    server s 127.0.0.1:80 maxqueue 10 slowstart 5s\n",
     "server option 'maxqueue' has no effect in edgestick"),
    ("frontend f\n    bind :80 name web defer-accept\n", "bind option 'name' has no effect"),
    ("backend b\n    option http-pretend-keepalive\n",
     "'option http-pretend-keepalive' has no effect in edgestick"),
    ("backend b\n    cookie S rewrite maxidle 1m\n", "only supported in 'insert' mode"),
    ("frontend f\n    bind :80\n    mode tcp\n    http-request deny\n", "require HTTP mode"),
    ("backend b\n    mode tcp\n    cookie S insert\n", "needs 'mode http'"),
    ("frontend f\n    bind :80\n    stick-table type ip size 1k\n"
     "    tcp-request content track-sc0 src\n", "should be executed at the session level"),
    ("peers p\n    peer nobody-here 127.0.0.1:1000\n", "Removing incomplete section 'peers p'"),
    ("frontend f\n    bind :80\n    acl r res.cook(x) y\n    http-request deny if r\n",
     "acl 'r' will never match because it uses keyword 'res.cook'"),
    ("frontend f\n    bind :80\n    http-request deny if { status 500 }\n",
     "anonymous acl will never match because it uses keyword 'status'"),
]


@pytest.mark.parametrize("tail,message", WARNINGS, ids=[w[1][:30] for w in WARNINGS])
def test_warnings_are_collected_not_fatal(tail, message):
    cfg, warnings = load_config_text(SEED_DEFAULTS + tail, "w.cfg")
    assert any(message in w and w.startswith("w.cfg:") for w in warnings), warnings
    assert cfg.warnings == warnings


def test_stick_table_warnings_and_declaration():
    cfg, warnings = load_config_text(SEED_DEFAULTS + "backend b\n"
                                     "    stick-table type ip size 1k store gpc0,gpc0\n", "w.cfg")
    assert any("already enabled" in w and w.startswith("w.cfg:7:") for w in warnings), warnings
    decl = cfg.backends["b"].stick_table
    assert (decl.type, decl.size) == ("ip", 1024)


def test_missing_timeouts_warning():
    _, warnings = load_config_text("frontend f\n    bind :80\n", "w.cfg")
    assert any("missing timeouts for frontend 'f'" in w for w in warnings)
    _, warnings = load_config_text("backend b\n    server s 127.0.0.1:1\n", "w.cfg")
    assert any("missing timeouts for backend 'b'" in w for w in warnings)
    _, warnings = load_config_text("backend b\n    stick-table type ip size 1\n", "w.cfg")
    assert warnings == []


# --------------------------------------------------------------------------- defaults

def test_defaults_inheritance():
    cfg, _ = load_config_text("""
defaults
    mode http
    timeout client 7s
    timeout connect 3s
    timeout server 9s
    retries 5
    option forwardfor
    option redispatch
    balance leastconn
    default_backend b
    cookie SRV insert indirect
frontend f
    bind :80
    timeout client 1s
backend b
    server s 127.0.0.1:1
defaults
    mode tcp
backend c
    server s 127.0.0.1:1
defaults named
    mode http
    timeout http-request 2s
    option http-ignore-probes
    http-request deny if { path /blocked }
defaults
    timeout client 1m
frontend g from named
    bind :81
    default_backend b
    http-request return status 200
frontend h
    bind :82
    default_backend c
""", "d.cfg")
    f, b, c, g, h = (cfg.proxy(n) for n in "fbcgh")
    assert (f.mode, f.timeouts["client"], f.timeouts["connect"], f.default_backend) == (
        "http", 1000, 3000, "b")
    assert f.options.forwardfor and b.options.forwardfor
    assert (b.retries, b.balance, b.options.redispatch, b.cookie.name) == (5, "leastconn", True, "SRV")
    assert b.timeouts == {"client": 7000, "connect": 3000, "server": 9000}
    # an anonymous defaults section starts afresh
    assert (c.mode, c.retries, c.balance, c.timeouts, c.cookie) == ("tcp", 3, "roundrobin", {}, None)
    # `from` picks a named section; its rules run first
    assert (g.mode, g.timeouts, g.options.http_ignore_probes) == ("http", {"http-request": 2000}, True)
    assert [r.action for r in g.http_request] == ["deny", "return"]
    assert g.defaults_name == "named"
    # without `from`: the last defaults section
    assert (h.mode, h.timeouts, h.http_request) == ("tcp", {"client": 60000}, [])
    assert "named" in cfg.defaults


def test_default_server_and_server_ids():
    cfg, _ = load_config_text(SEED_DEFAULTS + """
backend b
    default-server inter 1s fall 5 check
    server a 127.0.0.1:1 id 2
    server b 127.0.0.1:2
    server c 127.0.0.1:3 no-check
    server d 127.0.0.1:4
""", "s.cfg")
    be = cfg.backends["b"]
    assert [(s.name, s.id, s.check, s.inter_ms, s.fall, s.rise) for s in be.servers] == [
        ("a", 2, True, 1000, 5, 2), ("b", 3, True, 1000, 5, 2), ("c", 4, False, 1000, 5, 2),
        ("d", 5, True, 1000, 5, 2)]     # HAProxy's numbering (show stat sid: 2 3 4 5)


def test_crt_base_applies_to_relative_certificates(tmp_path, cert_pem):
    import os
    base, name = os.path.split(cert_pem)
    cfg, _ = load_config_text(f"global\n    crt-base {base}\n" + SEED_DEFAULTS
                              + f"frontend f\n    bind :443 ssl crt {name} alpn h2,http/1.1\n",
                              "c.cfg")
    b = cfg.frontends["f"].binds[0]
    assert b.ssl and b.crt == [name] and b.ssl_context is not None


def test_crt_list_and_localpeer_override(tmp_path, cert_pem):
    lst = tmp_path / "certs.lst"
    lst.write_text(f"# certificates\n{cert_pem} [alpn http/1.1] www.example.com\n")
    cfg, _ = load_config_text(SEED_DEFAULTS + f"frontend f\n    bind :443 ssl crt-list {lst}\n",
                              "c.cfg")
    assert cfg.frontends["f"].binds[0].ssl_context is not None
    peers = "peers p\n    peer edge1 127.0.0.1:1024\n    peer edge2 127.0.0.1:1025\n"
    _, warnings = load_config_text(peers, "p.cfg", localpeer="edge2")
    assert warnings == []
    _, warnings = load_config_text("global\n    localpeer edge1\n" + peers, "p.cfg")
    assert warnings == []
    _, warnings = load_config_text(peers, "p.cfg", localpeer="other")
    assert any("no peer named 'other'" in w for w in warnings)


@pytest.mark.parametrize("rule,message", [
    ("http-request deny deny_status 429 content-type text/plain",
     "content-type 'text/plain' ignored by the http reply because neither errorfile nor payload"),
    ("http-request return status 429 default-errorfiles hdr X 1", "hdr parameters ignored"),
    ("http-request deny\n    http-request return status 200", "action is final and has no condition"),
])
def test_reply_warnings(rule, message):
    _, warnings = load_config_text(SEED_DEFAULTS + f"frontend f\n    bind :80\n    {rule}\n", "r.cfg")
    assert any(message in w for w in warnings), warnings


@pytest.mark.parametrize("rule,message", [
    ('http-request return status 204 content-type text/plain string ""', "'string' expects <str>"),
    ('http-request return status 200 lf-string "%[src]"', "with a log-format payload"),
])
def test_reply_payload_errors(rule, message):
    with pytest.raises(ConfigError) as ei:
        load_config_text(SEED_DEFAULTS + f"frontend f\n    bind :80\n    {rule}\n", "r.cfg")
    assert message in str(ei.value) and ei.value.line == 8


def test_time_values_as_haproxy_reads_them():
    cfg, warnings = load_config_text("defaults\n    mode http\n    timeout connect 5sq\n"
                                     "    timeout client 1m30s\n    timeout server 5\n"
                                     "    timeout check 1500us\nbackend b\n    balance\n", "t.cfg")
    b = cfg.backends["b"]
    # trailing characters after a unit are ignored with a warning (HAProxy 2.6)
    assert b.timeouts == {"connect": 5000, "client": 60000, "server": 5, "check": 2}
    assert sum("after the timer value" in w for w in warnings) == 2
    assert b.balance == "roundrobin"


def test_directory_loads_cfg_files_in_order(tmp_path):
    d = tmp_path / "conf.d"
    d.mkdir()
    (d / "10-defaults.cfg").write_text(SEED_DEFAULTS)
    (d / "20-front.cfg").write_text("frontend f\n    bind :8080\n    default_backend b\n")
    (d / "30-back.cfg").write_text("backend b\n    server s1 127.0.0.1:8081\n")
    (d / "notes.txt").write_text("not a configuration\n")
    cfg, warnings = load_config([str(d)])
    assert [p.name for p in cfg.proxies] == ["f", "b"] and warnings == []
    assert cfg.frontends["f"].mode == "http"


def test_tables_in_declaration_order():
    cfg, _ = load_config_text("peers p\n    peer me 127.0.0.1:1\n    table t1 type ip size 1\n"
                              + SEED_DEFAULTS + "backend b\n    stick-table type ip size 2\n"
                              "peers q\n    table t2 type string size 3 store gpc0\n"
                              "frontend f\n    bind :80\n    stick-table type integer size 4\n",
                              "o.cfg", localpeer="me")
    assert cfg.table_names() == ["p/t1", "b", "q/t2", "f"]
    assert [(t[1], t[2].size, t[3]) for t in cfg.tables] == [
        (("type", "ip", "size", "1"), 1, True), (("type", "ip", "size", "2"), 2, False),
        (("type", "string", "size", "3", "store", "gpc0"), 3, True),
        (("type", "integer", "size", "4"), 4, False)]


def test_bind_ssl_context_completes_a_handshake(tmp_path, cert_pem):
    """The context built at parse time terminates TLS (in-memory handshake, no socket)."""
    import ssl
    cfg, _ = load_config_text(SEED_DEFAULTS + f"frontend f\n    bind :443 ssl crt {cert_pem} "
                              "alpn http/1.1 ssl-min-ver TLSv1.2\n", "t.cfg")
    server_ctx = cfg.frontends["f"].binds[0].ssl_context
    client_ctx = ssl.create_default_context(cafile=cert_pem)
    client_ctx.set_alpn_protocols(["h2", "http/1.1"])
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname="localhost")
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    done = set()
    for _ in range(20):
        for name, end, out, peer_in in (("c", client, c_out, s_in), ("s", server, s_out, c_in)):
            try:
                end.do_handshake()
                done.add(name)
            except ssl.SSLWantReadError:
                pass
            peer_in.write(out.read())
        if done == {"c", "s"}:
            break
    assert done == {"c", "s"}
    assert server.selected_alpn_protocol() == "http/1.1"
    assert client.version() in ("TLSv1.2", "TLSv1.3")


def test_global_ssl_bind_defaults_apply(cert_pem):
    import ssl
    cfg, _ = load_config_text("global\n    ssl-default-bind-options ssl-min-ver TLSv1.3 "
                              "no-tls-tickets\n" + SEED_DEFAULTS
                              + f"frontend f\n    bind :443 ssl crt {cert_pem}\n", "t.cfg")
    ctx = cfg.frontends["f"].binds[0].ssl_context
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_3
    assert ctx.options & ssl.OP_NO_TICKET
