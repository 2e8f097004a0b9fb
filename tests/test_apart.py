"""A call's threads on different CPUs (fastrnn._apart), and the start-up a
team's helpers took (fastrnn._team.Team.startup)."""

from __future__ import annotations

import os
import threading

import pytest

from fastrnn import _apart
from fastrnn._team import Team

linux_cpus = pytest.mark.skipif(
    _apart.current_cpu() < 0 or len(os.sched_getaffinity(0)) < 2,
    reason="needs sched_getcpu, sched_setaffinity and two CPUs allowed")


def _in_thread(function):
    # function() on a new thread (its affinity changes are its own); its result.
    result: list = []
    errors: list = []

    def target():
        try:
            result.append(function())
        except BaseException as exc:  # (re-raised on the test's thread)
            errors.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return result[0]


def _on(cpu: int) -> set[int]:
    # This thread moved to `cpu`, then allowed every CPU it was before.
    allowed = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    os.sched_setaffinity(0, allowed)
    return allowed


@linux_cpus
def test_a_thread_on_another_threads_cpu_moves_off_it():
    def moved():
        cpu = min(os.sched_getaffinity(0))
        allowed = _on(cpu)
        before = _apart.current_cpu()
        after = _apart.move_off([cpu, -1])
        return cpu, before, after, allowed, os.sched_getaffinity(0)

    cpu, before, after, allowed, mask = _in_thread(moved)
    assert before == cpu  # (where _on put it)
    assert after != cpu and after in allowed
    assert mask == allowed  # free to move again


@linux_cpus
def test_a_thread_stays_where_no_other_is_or_no_cpu_is_free():
    def stays():
        allowed = os.sched_getaffinity(0)
        cpu = min(allowed)
        _on(cpu)
        alone = _apart.move_off([c for c in allowed if c != cpu])  # every other CPU taken
        unknown = _apart.move_off([-1])
        return cpu, alone, unknown, allowed, os.sched_getaffinity(0)

    cpu, alone, unknown, allowed, mask = _in_thread(stays)
    assert alone == cpu and unknown == cpu
    assert mask == allowed


def test_move_off_without_sched_getcpu_does_nothing(monkeypatch):
    monkeypatch.setattr(_apart, "_GETCPU", None)
    mask = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    assert _apart.current_cpu() == -1
    assert _apart.move_off([0, 1, 2]) == -1
    if mask is not None:
        assert os.sched_getaffinity(0) == mask


@linux_cpus
def test_a_teams_helper_starts_its_part_off_the_callers_cpu():
    team = Team(1, "fastrnn-test")
    ran: list[tuple[int, int]] = []
    try:
        def job(part: int, number: int) -> None:
            ran.append((part, _apart.current_cpu()))

        cpu = min(os.sched_getaffinity(0))
        allowed = _on(cpu)
        try:
            for _ in range(3):
                team.run(job, 2)
                assert team.cpus[1] != team.cpus[0] >= 0
                assert 0.0 <= team.startup(2) < 1.0
        finally:
            os.sched_setaffinity(0, allowed)
    finally:
        team.close()
    assert sorted(part for part, _ in ran) == [0, 0, 0, 1, 1, 1]
