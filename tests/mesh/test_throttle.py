"""The node-wide byte-rate limit on replica downloads: its arithmetic under a fake clock,
and that real threads share one budget."""

from __future__ import annotations

import threading
import time

import pytest

from shoal.config import Settings
from shoal.mesh.throttle import ByteRate


class FakeTime:
    """A clock that only moves when someone sleeps on it."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_the_average_rate_holds_over_many_chunks():
    fake = FakeTime()
    rate = ByteRate(1000, clock=fake.clock, sleep=fake.sleep)
    start = fake.now
    for _ in range(50):
        rate.take(200)  # 10,000 bytes in all
    # The first second's worth may go at once (a burst); the rest is paid at 1,000 B/s.
    assert fake.now - start == pytest.approx(10.0 - 1.0, abs=0.21)


def test_an_idle_spell_buys_a_burst_of_at_most_one_second():
    fake = FakeTime()
    rate = ByteRate(1000, clock=fake.clock, sleep=fake.sleep)
    fake.now += 3600  # an hour with nothing to download
    rate.take(1000)
    assert fake.slept == []  # one second's worth goes at once
    rate.take(1000)
    assert sum(fake.slept) == pytest.approx(1.0)  # but not a second second's worth


def test_one_chunk_larger_than_a_second_waits_for_its_whole_size():
    fake = FakeTime()
    rate = ByteRate(1000, clock=fake.clock, sleep=fake.sleep)
    rate.take(5000)
    assert sum(fake.slept) == pytest.approx(4.0)


def test_zero_means_no_limit():
    fake = FakeTime()
    rate = ByteRate(0, clock=fake.clock, sleep=fake.sleep)
    assert not rate.limited
    for _ in range(1000):
        rate.take(10_000_000)
    assert fake.slept == []
    assert ByteRate.from_megabytes(0).limited is False


def test_empty_and_negative_sizes_cost_nothing():
    fake = FakeTime()
    rate = ByteRate(1, clock=fake.clock, sleep=fake.sleep)
    rate.take(0)
    rate.take(-5)
    assert fake.slept == []


def test_a_fresh_limit_starts_with_one_seconds_burst():
    fake = FakeTime()
    rate = ByteRate(1000, clock=fake.clock, sleep=fake.sleep)
    rate.take(1000)
    assert fake.slept == []
    rate.take(500)
    assert sum(fake.slept) == pytest.approx(0.5)


def test_a_negative_rate_is_refused():
    with pytest.raises(ValueError, match="cannot be negative"):
        ByteRate(-1)


def test_megabytes_are_decimal():
    assert ByteRate.from_megabytes(2.5).per_second == 2_500_000


def test_threads_share_one_budget():
    """Four threads taking 50 kB each against 100 kB/s: together they cannot finish before
    the budget allows, about one second after the first second's burst."""
    rate = ByteRate(100_000)
    rate.take(100_000)  # spend the burst so the measurement sees only the steady rate
    started = time.monotonic()

    def download() -> None:
        for _ in range(10):
            rate.take(5_000)

    threads = [threading.Thread(target=download) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    # 200 kB at 100 kB/s is two seconds; each thread alone would have taken half a second.
    assert elapsed >= 1.9


def test_settings_refuse_a_negative_limit():
    with pytest.raises(ValueError, match="replication_max_mbps"):
        Settings(name="shop", replication_max_mbps=-1)
    assert Settings(name="shop").replication_max_mbps == 0
