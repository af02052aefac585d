"""proxy/server_health.py and proxy/agent_check.py arithmetic and words: HAProxy's slow
start ramp (server_recalc_eweight, server_throttle_rate), the agent's reply grammar, weight
change requests, and show stat's server statuses."""
from edgestick.proxy import agent_check, backend, model, server_health as sh


def _srv(name, weight=1, check=False, slowstart_ms=0, rise=2, fall=3):
    return model.Server(name, "127.0.0.1", 1, id=int(name[1:]), weight=weight, check=check,
                        slowstart_ms=slowstart_ms, rise=rise, fall=fall)


def _backend(*servers, balance="roundrobin"):
    return backend.Backend(model.Proxy("bk", "backend", servers=list(servers), balance=balance))


def test_slowstart_steps_as_haproxy_shows_them():
    # weight 50, slowstart 3s: what HAProxy 2.6.12's show stat printed, second by second
    seen = []
    for elapsed in range(4):
        ew = sh.effective_weight(50, sh.warmup_factor(elapsed, 3))
        seen.append((sh.shown_weight(ew), sh.throttle(ew, 50)))
    assert seen == [(4, 6), (19, 37), (35, 68), (50, 100)]
    # 10 s: one sixteenth more than the elapsed tenths, full weight at the end
    assert [sh.warmup_factor(t, 10) for t in (0, 1, 5, 9, 10, 99)] == [1, 2, 9, 15, 16, 16]
    assert sh.throttle(0, 0) == 100


def test_slowstart_ramp_moves_roundrobin_share():
    b = _backend(_srv("s1", 10, slowstart_ms=10_000), _srv("s2", 10))
    s1 = b.servers[0]
    s1.set_state(False)
    s1.set_state(True)                  # (no event loop: the ramp is stepped by hand)
    assert s1.warm_since is not None and s1.eweight == 10 * 1
    picks = [b.pick(None).name for _ in range(170)]
    assert picks.count("s1") < 20       # 10 sixteenths against 160
    sh.warm_step(s1, s1.warm_since + 5)
    assert s1.eweight == 10 * 9
    sh.warm_step(s1, s1.warm_since + 10)
    assert s1.warm_since is None and s1.eweight == 160
    picks = [b.pick(None).name for _ in range(200)]
    assert abs(picks.count("s1") - 100) <= 10


def test_slowstart_static_algorithm_keeps_the_weight():
    b = _backend(_srv("s1", 4, slowstart_ms=2000), balance="static-rr")
    s1 = b.servers[0]
    s1.set_state(False)
    s1.set_state(True)
    assert s1.warm_since is not None and s1.eweight == 64
    assert sh.stat_fields(s1)["throttle"] == 100


def test_agent_reply_words():
    assert agent_check.parse_reply("up") == ("up", None, None, None, None, "")
    assert agent_check.parse_reply("75%,MAINT\tmaxconn:7 bar baz # all good") == (
        None, "MAINT", "75%", "7", "bar", "all good")
    assert agent_check.parse_reply("down up 10% 20%")[0::2] == ("up", "20%", None)


def test_agent_reply_acts_on_the_server():
    b = _backend(_srv("s1", 10), _srv("s2", 10))
    s1 = b.servers[0]
    s1.agent = agent_check.AgentState()
    agent_check.apply_reply(s1, "down # gone")
    assert not s1.op_up and s1.agent.desc == "via agent : down (gone)"
    assert s1.agent.status == "L7STS" and sh.stat_status(s1) == "DOWN (agent)"
    agent_check.apply_reply(s1, "up 50% foo")
    assert s1.op_up and s1.weight == 5 and s1.agent.desc == "via agent : up (foo)"
    agent_check.apply_reply(s1, "drain")
    assert s1.agent.status == "CHECKED" and sh.stat_status(s1) == "DRAIN (agent)"
    agent_check.apply_reply(s1, "ready maxconn:3 nonsense")
    assert s1.maxconn == 3 and s1.agent.desc == "agent reports an error : nonsense"
    assert sh.stat_status(s1) == "no check"


def test_agent_weight_words():
    b = _backend(_srv("s1", 4), balance="static-rr")
    s1 = b.servers[0]
    s1.agent = agent_check.AgentState()
    agent_check.apply_reply(s1, "75%")          # a static algorithm: 0% or 100% only
    assert s1.weight == 4 and s1.agent.desc.startswith(
        "agent warns : Backend is using a static LB algorithm")
    agent_check.apply_reply(s1, "0%")
    assert s1.weight == 0 and s1.agent.desc == ""
    b = _backend(_srv("s1", 100))
    s1 = b.servers[0]
    s1.agent = agent_check.AgentState()
    agent_check.apply_reply(s1, "300%")
    assert s1.weight == 256


def test_status_words():
    b = _backend(_srv("s1", check=True), _srv("s2"))
    s1, s2 = b.servers
    s1.health = 2                       # rise 2, fall 3: UP, one failure from the top
    assert sh.stat_status(s1) == "UP 1/3"
    s1.health = 4
    assert sh.stat_status(s1) == "UP" and sh.stat_status(s2) == "no check"
    s1.set_state(False)
    s1.health = 1
    assert sh.stat_status(s1) == "DOWN 1/2"
    s1.health = 0
    assert sh.stat_status(s1) == "DOWN"


def _observed(on_error, limit=2, observe="layer7"):
    m = model.Server("s1", "127.0.0.1", 1, id=1, check=True, observe=observe,
                     error_limit=limit, on_error=on_error)
    s = _backend(m).servers[0]
    s.health = 4                        # UP at the top (rise 2, fall 3)
    return s


def test_observe_on_error_modes():
    s = _observed("fail-check")
    s.observe_status(500)
    s.observe_status(200)               # a success clears the count
    s.observe_status(503)
    assert s.hanafail == 0 and s.health == 4
    s.observe_status(502)
    assert s.hanafail == 1 and s.health == 3 and s.check_status == "HANA"
    assert s.last_chk == "Detected 2 consecutive errors, last one was: Wrong http response"
    assert sh.stat_status(s) == "UP 2/3"
    s = _observed("sudden-death")
    for status in (500, 501, 505, 404, 500):    # 501, 505 and 4xx are answers
        s.observe_status(status)
    assert s.hanafail == 0
    s.observe_status(500)
    assert s.health == 2 and s.op_up            # rise + 1, then one failure
    s = _observed("mark-down")
    s.observe_status(500)
    s.observe_status(500)
    assert not s.op_up and s.health == 0
    s = _observed("fastinter")
    s.observe_status(500)
    s.observe_status(500)
    assert s.hanafail == 1 and s.health == 4 and s.op_up
    s = _observed("fail-check", observe="layer4")
    s.observe_status(500)
    s.observe_status(500)
    assert s.hanafail == 0                      # (layer4: connections only)


def test_bounded_load_slots():
    # three servers of weight 1 (16 each), hash-balance-factor 150: HAProxy's slots
    servers = [_srv(f"s{i}", 1) for i in (1, 2, 3)]
    p = model.Proxy("bk", "backend", servers=servers, balance="uri",
                    hash_type=("consistent", "sdbm", True), hash_balance_factor=150)
    b = backend.Backend(p)
    s1, s2, s3 = b.servers
    assert all(b.bounded(s) for s in b.servers)         # nothing in flight: one slot each
    s1.cur = 1                          # 2 in flight with this one: ceil(3) slots over 48
    assert not b.bounded(s1) and b.bounded(s2)
    s2.cur = 1
    s3.cur = 1                          # 4 in flight: 6 slots, 2 each
    assert b.bounded(s1) and b.bounded(s2) and b.bounded(s3)
    s1.cur = 2
    assert not b.bounded(s1)


def test_server_status_metric_reads_the_state_word():
    from edgestick.proxy import metrics, stats
    rows = []
    for name, status in (("a", "UP 1/3"), ("b", "DOWN (agent)"), ("c", "MAINT (via bk/a)"),
                         ("d", "no check"), ("e", "DOWN 1/2")):
        row = {f: None for f in stats.ALL_FIELDS}
        row.update(pxname="bk", svname=name, status=status, type=2, hrsp_1xx=0, hrsp_2xx=0,
                   hrsp_3xx=0, hrsp_4xx=0, hrsp_5xx=0, hrsp_other=0, mode="http")
        rows.append(row)
    family = next(metrics._Collector(None, set())._servers(rows))
    on = {(s.labels["server"], s.labels["state"]) for s in family.samples if s.value == 1}
    assert on == {("a", "UP"), ("b", "DOWN"), ("c", "MAINT"), ("d", "UP"), ("e", "DOWN")}
