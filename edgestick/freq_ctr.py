"""HAProxy's two-period event rate counter (freq_ctr), shared by the proxy and the shield.

A counter is three unsigned 32-bit numbers: `curr_tick` (start of the current period on
the millisecond clock, lowest bit always 0), `curr_ctr` (events counted in the current
period) and `prev_ctr` (events of the previous period). The read value is "events in the
current period plus the share of the previous period that has not yet slid out of the
window", in events *per period* (not per second). All arithmetic is modulo 2**32 on the
millisecond tick, exactly like HAProxy, so the numbers read here are the ones HAProxy
would print for the same event times.

Pure functions (`update_freq`, `read_freq`, `set_freq`) work on plain integers so the
XDP control plane can interpret the state it reads from BPF maps; `FreqCtr` wraps them
for standalone use. The stick tables store the three numbers in packed columns and call
the pure functions.

Time comes from `now_ms()`, defined once here. Tests inject time with `set_clock()`.
"""
from __future__ import annotations

import time
from typing import Callable

U32 = 0xFFFFFFFF


_monotonic_ns = time.monotonic_ns


_clock: Callable[[], int] | None = None      # set by tests (set_clock)


def now_ms() -> int:
    """Current time in milliseconds on a monotonic clock (an unbounded Python int).

    Rate counters only use its low 32 bits (HAProxy's `now_ms` tick); expiry dates in the
    stick tables use the full value so they never wrap."""
    if _clock is None:              # (the proxy reads it per request: no extra call)
        return _monotonic_ns() // 1_000_000
    return _clock()


def set_clock(clock: Callable[[], int] | None) -> None:
    """Replace the millisecond clock (tests); `None` restores the monotonic clock."""
    global _clock
    _clock = clock


def update_freq(curr_tick: int, curr_ctr: int, prev_ctr: int, period_ms: int,
                inc: int, now: int) -> tuple[int, int, int]:
    """Count `inc` events at time `now`; returns the new (curr_tick, curr_ctr, prev_ctr).

    Same period: curr_ctr grows. Otherwise the period rotates by one: the current count
    becomes the previous one and the new period starts one period later; if `now` is
    still a whole period or more past that start (no event for two periods), the
    previous count is dropped and the period restarts at `now`. The stored tick has its
    lowest bit cleared (HAProxy uses it as a rotation lock)."""
    now &= U32
    if (now - curr_tick) & U32 < period_ms:
        return curr_tick, (curr_ctr + inc) & U32, prev_ctr
    prev_ctr, curr_ctr = curr_ctr, inc & U32
    curr_tick = (curr_tick + period_ms) & U32
    if (now - curr_tick) & U32 >= period_ms:
        prev_ctr = 0
        curr_tick = now
    return curr_tick & ~1 & U32, curr_ctr, prev_ctr


def read_freq(curr_tick: int, curr_ctr: int, prev_ctr: int, period_ms: int, now: int) -> int:
    """The rate HAProxy reports at time `now` (events per period), for raw counter state.

    Pure function: also used to interpret counters read from BPF maps (pass the BPF
    side's own millisecond time as `now`)."""
    remain = (curr_tick + period_ms - now) & U32
    if remain >= 0x80000000:               # the C code reads it as a signed int
        remain -= 0x100000000
    curr, past = curr_ctr, prev_ctr
    if remain < 0:
        # already in the next period with no event in it yet
        remain += period_ms
        past = curr if remain >= 0 else 0
        curr = 0
    if curr == 0 and past <= 1:
        return past                        # anti-flapping for very low rates
    return (past * remain + curr * period_ms) // period_ms


def set_freq(value: int, now: int) -> tuple[int, int, int]:
    """State after the CLI's `set table ... data.<rate> <value>`: the value is read back
    for one full period, then fades out over the next one."""
    return now & U32, value & U32, 0


class FreqCtr:
    """A standalone rate counter over `period_ms` (e.g. a frontend's session rate)."""

    __slots__ = ("period", "curr_tick", "curr_ctr", "prev_ctr")

    def __init__(self, period_ms: int):
        if period_ms <= 0:
            raise ValueError("a rate period must be at least 1 ms")
        self.period = period_ms
        self.curr_tick = self.curr_ctr = self.prev_ctr = 0

    def update(self, inc: int = 1, now: int | None = None) -> None:
        self.curr_tick, self.curr_ctr, self.prev_ctr = update_freq(
            self.curr_tick, self.curr_ctr, self.prev_ctr, self.period, inc,
            now_ms() if now is None else now)

    def read(self, now: int | None = None) -> int:
        return read_freq(self.curr_tick, self.curr_ctr, self.prev_ctr, self.period,
                         now_ms() if now is None else now)

    def set(self, value: int, now: int | None = None) -> None:
        self.curr_tick, self.curr_ctr, self.prev_ctr = set_freq(
            value, now_ms() if now is None else now)
