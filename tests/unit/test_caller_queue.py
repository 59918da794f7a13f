"""The order in which waiting requests are taken: oldest first, newest first while callers are giving up, and a
patient caller's request ahead of the newest once it has waited as long as those who left."""

from __future__ import annotations

from esteira.packaging.caller_queue import LEAVING_WINDOW_SECONDS, CallerQueue, deadline, with_time_left
from esteira.vocabulary import EXPECTED_TIMEOUT_HEADER


def queued(at: dict[str, float]) -> CallerQueue[str]:
    queue: CallerQueue[str] = CallerQueue()
    for name, now in at.items():
        queue.put(name, now)
    return queue


def everyone(item: str, queued: float) -> bool:
    return True


def test_oldest_first_while_nobody_leaves_and_what_is_not_wanted_is_dropped() -> None:
    queue = queued({"a": 0.0, "b": 0.1, "c": 0.2, "d": 0.3})
    queue.put_first("first", 0.0)
    assert queue.take(2, 5.0, everyone) == ["first", "a"]
    asked: list[str] = []

    def not_c(item: str, queued: float) -> bool:
        asked.append(item)
        return item != "c"

    assert queue.take(2, 5.0, not_c) == ["b", "d"]
    assert asked == ["b", "c", "d"] and len(queue) == 0 and queue.newest_first == 0


def test_newest_first_while_callers_leave_with_a_request_that_outlived_them_ahead() -> None:
    """Callers have left after 0.2 s: at 1.0, "old" (waited 0.9) is a patient caller's and goes first; the rest
    (waited under 0.2) go newest first; a gone one found on the way is dropped."""
    queue = queued({"old": 0.1, "x": 0.85, "gone": 0.9, "y": 0.95})
    queue.left(0.2, 0.5)
    queue.left(0.2, 0.6)
    assert queue.leaving(1.0)

    def not_gone(item: str, queued: float) -> bool:
        return item != "gone"

    assert queue.take(2, 1.0, not_gone) == ["old", "y"]
    assert queue.take(5, 1.0, not_gone) == ["x"]
    assert len(queue) == 0 and queue.newest_first == 2


def test_a_waiting_request_is_patient_once_it_has_waited_the_median_of_the_callers_who_left() -> None:
    queue = queued({"a": 0.0, "b": 0.3, "c": 0.6})
    for waited in (0.1, 0.5, 5.0):  # median 0.5
        queue.left(waited, 0.9)
    assert queue.take(1, 1.0, everyone) == ["a"]  # waited 1.0
    assert queue.take(1, 1.0, everyone) == ["b"]  # 0.7
    assert queue.take(1, 1.0, everyone) == ["c"]  # 0.4: the newest anyway


def test_oldest_first_again_once_nobody_has_left_for_the_window() -> None:
    queue = queued({"a": 0.0, "b": 0.1, "c": 0.2})
    queue.left(5.0, 0.3)
    assert queue.take(1, 0.3, everyone) == ["c"]
    later = 0.3 + LEAVING_WINDOW_SECONDS
    assert not queue.leaving(later)
    assert queue.take(1, later, everyone) == ["a"]
    assert queue.clear() == ["b"] and len(queue) == 0


def test_a_proxys_expected_timeout_is_the_request_s_deadline() -> None:
    headers = {EXPECTED_TIMEOUT_HEADER: "250"}
    assert deadline(10.0, headers) == 10.25
    for said in ("", "0", "-5", "1.5", "soon"):
        assert deadline(10.0, {EXPECTED_TIMEOUT_HEADER: said}) is None, said
    assert deadline(10.0, {}) is None


def test_digits_int_refuses_say_nothing_rather_than_fail_the_request() -> None:
    # A header read as Latin-1 may hold superscripts (str.isdigit: yes, int: no), or more digits than int converts.
    for said in ("\u00b2", "1\u00b2", "\u0663", "9" * 5000, "1" * 13):
        assert deadline(10.0, {EXPECTED_TIMEOUT_HEADER: said}) is None, said[:20]
    assert deadline(10.0, {EXPECTED_TIMEOUT_HEADER: "1" * 12}) == 10.0 + 111_111_111_111 / 1000


def test_what_is_left_of_a_deadline_is_said_in_whole_milliseconds_rounded_up_and_never_below_one() -> None:
    headers = {"content-type": "application/json"}
    assert with_time_left(headers, None, 10.0) is headers  # no deadline: nothing said
    assert with_time_left(headers, 10.2501, 10.0) == {**headers, EXPECTED_TIMEOUT_HEADER: "251"}
    assert with_time_left(headers, 9.0, 10.0)[EXPECTED_TIMEOUT_HEADER] == "1"  # past it: the least there is
    assert deadline(10.0, with_time_left(headers, 10.25, 10.0)) == 10.25  # read back as said
