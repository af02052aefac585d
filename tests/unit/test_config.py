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
