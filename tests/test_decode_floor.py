"""bench/decode_floor.py: the pacing of the decode floor, and its readings."""

import pytest

from bench.decode_floor import DecodeFloor, due_messages, ms_per_singer_second, schedule


def test_singers_are_spread_over_one_period() -> None:
    dues = schedule(200, 0.2, 10.0)
    assert dues[0] == 10.0 and dues[100] == 10.0  # as the bench spreads them: i % 100
    assert dues[50] == pytest.approx(10.1)
    assert max(dues) < 10.2


def test_due_messages_are_each_decoded_once_and_catch_up() -> None:
    dues = [0.0, 0.05, 0.15]
    assert due_messages(dues, 0.1, 0.2) == [0, 1]
    assert dues == pytest.approx([0.2, 0.25, 0.15])
    assert due_messages(dues, 0.1, 0.2) == []
    # Late by a whole period and more: every message that fell due, in order.
    assert due_messages(dues, 0.5, 0.2) == [0, 0, 1, 1, 2, 2]
    assert dues == pytest.approx([0.6, 0.65, 0.55])


def test_ms_per_singer_second() -> None:
    # 500 frames of 20 ms = 10 singer-seconds; 20 ms of CPU = 2 ms per singer-second.
    assert ms_per_singer_second((100, 1.0), (600, 1.02)) == pytest.approx(2.0)
    assert ms_per_singer_second((100, 1.0), (100, 1.0)) is None


def test_the_floor_process_decodes_and_reports() -> None:
    floor = DecodeFloor(singers=4, per_message=5)
    try:
        first = floor.reading()
        while (second := floor.reading())[0] <= first[0]:
            pass
        assert second[0] > first[0] and second[1] >= first[1]
        assert (second[0] - first[0]) % 5 == 0  # whole messages
    finally:
        floor.close()
