"""proxy/metrics.py: thresholds found in deny conditions; the `metrics bind` global
keyword (edgestick's) with its errors."""
from types import SimpleNamespace

import pytest

from edgestick.cfgsyntax import ConfigError
from edgestick.proxy import metrics
from edgestick.proxy.config import load_config_text

SEED3 = """
global
    metrics bind 127.0.0.1:9105
frontend http_front
    bind 127.0.0.1:80
    stick-table type ip size 100k expire 30s store http_req_rate(10s),http_err_rate(10s),conn_cur
    http-request track-sc0 src
    http-request deny deny_status 429 if { sc_http_req_rate(0) gt 100 }
    http-request deny deny_status 403 if { sc0_http_err_rate gt 20 } || { src_conn_cur ge 10 }
    default_backend app
backend app
    server s1 127.0.0.1:8080
"""


def test_deny_thresholds_and_metrics_bind():
    cfg, _ = load_config_text(SEED3)
    assert cfg.global_.metrics_bind == ("127.0.0.1", 9105)
    got = metrics.deny_thresholds(SimpleNamespace(cfg=cfg))
    assert got == [("http_front", "http_req_rate", "gt", 100),
                   ("http_front", "http_err_rate", "gt", 20),
                   ("http_front", "conn_cur", "ge", 10)]


@pytest.mark.parametrize("line", ["metrics 127.0.0.1:9105", "metrics bind", "metrics bind x:y",
                                  "metrics bind 127.0.0.1:0"])
def test_metrics_bind_errors(line):
    with pytest.raises(ConfigError) as e:
        load_config_text(f"global\n    {line}\n", "m.cfg")
    assert "m.cfg:2" in str(e.value) and "'metrics'" in str(e.value)
