"""Keeping the threads of one call on different CPUs.

The threads of a split wait for each other at every step (the units split,
a Layer's chunks) or at the end of a call (the batch split). Two of them on
one CPU take turns: each spins at the barrier, then yields, at every step.
Linux puts them there itself in a KVM guest: a CPU whose vCPU the host has
descheduled (it idled, a fraction of a second) does not count as idle when
a thread is woken, so the woken helper joins its waker's CPU, and the
balancer leaves two busy threads where they are for tens of milliseconds.

Measured on the 2-vCPU AMD EPYC (Zen 4) KVM guest, two threads passing a
step back and forth (2 us of work a step, 1000 steps, a new thread each
run): 1.9-2.0 us a step back to back; after 0.2-0.5 s idle, 11.6-39 us,
both threads on the same CPU for 18-70% of the steps (``sched_getcpu`` at
every step). float32 GRU (1, 1000, 16, 256) on the units split, called every
0.2 s: 13-31 ms a call against 4.3 back to back and 8.7 on one thread.

So a helper given a call's part checks its CPU (:func:`current_cpu`)
against those of the call's other threads and, when it shares one, moves
to an allowed CPU none of them is on (:func:`move_off`): its affinity set
to that CPU (Linux migrates it at once), then back to what it was, so the
scheduler stays free to move it later. The ping-pong above then ran
2.0-2.6 us a step after every pause (2 runs of 27 met a CPU shared later).
Linux only (``sched_getcpu``, ``sched_setaffinity``); elsewhere nothing.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterable


def _sched_getcpu():
    if not hasattr(os, "sched_setaffinity"):
        return None
    try:
        function = ctypes.CDLL(None).sched_getcpu
    except (OSError, AttributeError):  # (not glibc or musl: no such function)
        return None
    function.restype = ctypes.c_int
    function.argtypes = []
    return function


_GETCPU = _sched_getcpu()


def current_cpu() -> int:
    """The CPU this thread runs on; -1 where that is not known."""
    return int(_GETCPU()) if _GETCPU is not None else -1


def settle(cpus: list[int], part: int) -> None:
    """Thread ``part`` of a call, given its part: off the CPUs ``cpus``
    records for the call's other threads (:func:`move_off`, helper ``part``
    to the ``part - 1``-th free CPU), and its own recorded in
    ``cpus[part]``."""
    cpus[part] = move_off(cpus[:part] + cpus[part + 1:], part - 1)


def move_off(others: Iterable[int], spread: int = 0) -> int:
    """The CPU this thread runs on, after moving it off ``others`` (the
    CPUs the call's other threads run on, -1 for unknown) when it is on one
    of them and an allowed CPU is not: to the ``spread``-th such CPU (mod
    their count: helpers told apart by it go to different ones)."""
    cpu = current_cpu()
    taken = {c for c in others if c >= 0}
    if cpu < 0 or cpu not in taken:
        return cpu
    try:
        allowed = os.sched_getaffinity(0)  # (0: this thread)
        free = sorted(allowed - taken)
        if not free:
            return cpu
        os.sched_setaffinity(0, {free[spread % len(free)]})
        os.sched_setaffinity(0, allowed)
    except OSError:  # (a CPU gone offline meanwhile, a policy that refuses)
        return cpu
    return current_cpu()
