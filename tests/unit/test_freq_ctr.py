"""HAProxy's two-period rate counter against the reference's worked numbers (§5) and
the decay observed on a real HAProxy 2.6 (transcript c)."""
import pytest

from edgestick import freq_ctr
from edgestick.freq_ctr import FreqCtr, read_freq, set_freq, update_freq

P = 10_000


def events(state, times, period=P):
    for t in times:
        state = update_freq(*state, period, 1, t)
    return state


def test_worked_example_of_the_reference():
    # 60 events during the first period, which starts at the first event (t=0)
    s = events((0, 0, 0), [i * 150 for i in range(60)])
    assert s == (0, 60, 0)
    # one event at t=12000 rotates: previous=60, current=1, period starts at 10000
    s = events(s, [12000])
    assert s == (10000, 1, 60)
    assert read_freq(*s, P, 14000) == 37
    assert read_freq(*s, P, 17500) == 16
    # next period without events: the low-rate rule keeps reporting 1 until t=30000
    assert read_freq(*s, P, 21000) == 1
    assert read_freq(*s, P, 29999) == 1
    assert read_freq(*s, P, 31000) == 0
    # an event after two idle periods restarts the grid at the event
    assert events(s, [35000]) == (35000, 1, 0)


def test_real_decay_of_transcript_c():
    """150 requests within 19 ms at T0, then http_req_rate(10s) read at the offsets
    HAProxy 2.6.12 was read at: 134, 97, 59, 22, 0."""
    t0 = 7_345_678                                    # arbitrary, even
    s = events((0, 0, 0), [t0 + i * 19 // 150 for i in range(150)])
    got = [read_freq(*s, P, t0 + dt) for dt in (11020, 13530, 16040, 18500, 21020)]
    assert got == [134, 97, 59, 22, 0]
    # within the first period all events count
    assert read_freq(*s, P, t0 + 9999) == 150


def test_tick_lowest_bit_is_forced_to_zero_on_rotation():
    s = events((0, 0, 0), [1_000_001])
    assert s[0] == 1_000_000 and s[1] == 1
    # the period then runs from the even tick: 1_010_000 is already the next period
    s2 = update_freq(*s, P, 1, 1_010_000)
    assert s2 == (1_010_000, 1, 1)


def test_unsigned_32bit_wraparound():
    start = 0xFFFFFFFF - 3001                         # even, 3 s before the ms tick wraps
    s = events((0, 0, 0), [start + i for i in range(0, 100)])
    assert s[1] == 100
    # 12 s later the tick has wrapped; the counter rotated once, like HAProxy's u32 math
    later = start + 12_000
    assert read_freq(*s, P, later) == 100 * (2 * P - 12_000) // P
    s = update_freq(*s, P, 1, later)
    assert s[0] == (start + P) & 0xFFFFFFFE & 0xFFFFFFFF and s[1:] == (1, 100)
    # reads with an unbounded clock value give the same number as with the masked one
    assert read_freq(*s, P, later + (5 << 32)) == read_freq(*s, P, later & 0xFFFFFFFF)


def test_low_rate_anti_flapping():
    s = events((0, 0, 0), [50_000])                  # one event
    assert read_freq(*s, P, 55_000) == 1             # curr=1 counts fully
    assert read_freq(*s, P, 65_000) == 1             # past=1, curr=0: stays 1, no fade
    s2 = events((0, 0, 0), [50_000, 50_001])
    assert read_freq(*s2, P, 65_000) == 1            # past=2 fades: 2*5000/10000


def test_cli_set_reads_value_for_a_period_then_fades():
    s = set_freq(99, 1_000_000)
    assert s == (1_000_000, 99, 0)
    assert read_freq(*s, P, 1_009_999) == 99
    assert read_freq(*s, P, 1_015_000) == 49
    assert read_freq(*s, P, 1_020_001) == 0


def test_class_uses_the_injectable_clock():
    now = [2_000_000]
    freq_ctr.set_clock(lambda: now[0])
    try:
        c = FreqCtr(1000)
        for _ in range(10):
            c.update()
        now[0] += 1500
        assert c.read() == 5
        assert freq_ctr.now_ms() == 2_001_500
    finally:
        freq_ctr.set_clock(None)
    assert freq_ctr.now_ms() != 2_001_500
    with pytest.raises(ValueError):
        FreqCtr(0)
