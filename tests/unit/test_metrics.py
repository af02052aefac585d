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


# --- show stat pieces /metrics reads (proxy/stats.py)

from edgestick.freq_ctr import FreqCtr          # noqa: E402
from edgestick.proxy import stats               # noqa: E402

IIDS = """
frontend f
    mode http
    bind 127.0.0.1:8001
    default_backend b
global
    stats socket /tmp/never-made.sock mode 600 level admin
backend b
    mode http
    id {b_id}
    server s1 127.0.0.1:1
backend c
    mode http
    server s1 127.0.0.1:1
"""


@pytest.mark.parametrize("b_id, expected", [
    # read from HAProxy 2.6.12 with these configurations: the runtime API's frontend
    # takes a number where its `stats socket` line is, the counter moves past an
    # explicit id too
    (1, {"f": 2, "b": 1, "c": 5}),
    (7, {"f": 1, "b": 7, "c": 4}),
])
def test_proxy_ids_like_haproxy(b_id, expected):
    cfg, _ = load_config_text(IIDS.format(b_id=b_id))
    assert stats.proxy_ids(cfg) == expected


def test_per_second_rates_read_like_freq_ctr():
    """Totals noted once a second read as HAProxy's freq_ctr over periods starting at
    the ticks: the same values at any instant, and the peak of one second's count."""
    rates, ctr, total = stats.PerSecond(1), FreqCtr(1000), 0
    rates.tick_ms = ctr.curr_tick = 1000
    events = [1100, 1200, 1300, 2500, 2600, 4100]
    for now in range(1000, 5000, 50):
        if now % 1000 == 0:
            rates.tick((total,), now)
        for t in events:
            if t == now:
                total += 1
                ctr.update(1, now)
        assert rates.rate(0, total, now) == ctr.read(now), now
    assert rates.max(0, total) == 3
    # lastsess: 0 while the second has events, then seconds since the tick that saw them
    assert rates.idle_s(total, 4950) == 0
    rates.tick((total,), 5000)
    rates.tick((total,), 6000)
    assert rates.idle_s(total, 7100) == 2
    assert stats.PerSecond(1).idle_s(0, 7100) == -1        # never
