"""Threads kept between calls, handed each call's shares by a spin on a
count rather than a wake-up.

A :class:`Team` is ``size`` helper threads. :meth:`Team.run` runs
``job(part, number)`` for parts 0..parts-1 at once: part 0 on the calling thread,
the others on helpers 1..parts-1. A helper that has finished a share spins a
bounded while (``HANDOFF_SPINS`` checks, about 0.1 ms, in compiled code
without the GIL) on the count of shares posted before it blocks on its
queue, so that the next call of a stream finds it awake: a thread woken
from a blocking queue, as a thread pool's are, took tens of microseconds.
The GIL changes hands too: a helper that took its share and said it had
finished in Python (100-step chunks of a float32 (32, 10 000, 16, 64)
stream, 2-core AMD Zen 3 VM) started a median 54 us after the caller (535
at the 90th percentile), and the caller saw it finished 33 us after it had;
so the jobs say it from compiled code (``entered`` below, and
.kernels.driver.forward_range_part). The units split (fastrnn._units.Split) runs each
window of a call on a team of its own; the batch split (fastrnn._numba) on
one team shared by the process, whose helpers are started by its first
call.

Every part of a call has finished before :meth:`Team.run` returns or raises
(a Ctrl-C meanwhile included): nothing writes the caller's arrays after it.
(A helper that says it has finished from compiled code drops its references
to them a moment later, back in Python.)
After a fork the helpers do not exist in the child; a team notices (its
process id) and starts new ones.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from .kernels.barrier import FLAG_STRIDE, HANDOFF_SPINS, spin_until, spin_until_all


class Team:
    """``size`` helper threads named ``name``, started by the first
    :meth:`run`. ``counters`` (int64, a cache line a slot): slot 0 the
    shares posted, slot p the shares helper p has finished, slot
    ``size + 1 + p`` the calls it has entered (stored by the job itself,
    when the caller waits for it: see :meth:`run`)."""

    def __init__(self, size: int, name: str) -> None:
        self.size = size
        self.name = name
        self.workers: list[threading.Thread] = []
        self.pid = os.getpid()  # the process whose threads `workers` are
        self.jobs: list[queue.SimpleQueue] = [queue.SimpleQueue() for _ in range(size + 1)]
        self.done: queue.SimpleQueue = queue.SimpleQueue()
        self.failures: list[BaseException] = []
        self.posted = 0
        self.counters = np.zeros(2 * (size + 1) * FLAG_STRIDE, dtype=np.int64)
        # Held by the call running on the team (callers that share one take
        # it without blocking, see fastrnn._numba).
        self.lock = threading.Lock()

    def _serve(self, part: int) -> None:
        counters, slot, served = self.counters, part * FLAG_STRIDE, 0
        while True:
            # A share is put in the queue before its count is posted:
            # spinning sees the count, and get() then returns at once.
            spin_until(counters, 0, served + 1, HANDOFF_SPINS)
            share = self.jobs[part].get()
            if share is None:
                return
            job, served = share  # (its number: a Ctrl-C may have skipped a count)
            try:
                job(part, served)
            except BaseException as exc:  # raised by run(), on the caller's thread
                self.failures.append(exc)
            finally:
                counters[slot] = served
                self.done.put(part)

    def _start(self) -> None:
        # New threads have served nothing: the counts start again.
        self.posted = 0
        self.counters[:] = 0
        for part in range(1, self.size + 1):
            worker = threading.Thread(target=self._serve, args=(part,), name=self.name,
                                      daemon=True)
            worker.start()
            self.workers.append(worker)

    def stop(self) -> list[threading.Thread]:
        """Ask the helpers to stop, without waiting; returns them."""
        workers = self.workers if self.pid == os.getpid() else []  # (a forked child: none)
        for part in range(1, len(workers) + 1):
            self.jobs[part].put(None)
        self.workers = []
        return workers

    def close(self) -> None:
        """Stop the helpers and wait for them."""
        for worker in self.stop():
            worker.join()

    def run(self, job: Callable[[int, int], Any], parts: int, *, entered: bool = False,
            abort: Callable[[], None] | None = None) -> None:
        """``job(part, number)`` for every part < ``parts`` (<= size + 1),
        part 0 on this thread, ``number`` this call's count (see
        ``counters``); returns when all have finished, raising the first
        exception of a helper's part. ``entered``: wait, before part 0,
        until the helpers have entered their parts (the job stores its
        count: the units split's threads wait for each other at every step,
        and each then takes the GIL while the others wait in compiled
        code). ``abort()`` is called when this thread's part raises or a
        Ctrl-C comes: it must make the other parts return soon (the units
        split's abort flag)."""
        if self.pid != os.getpid():
            # Forked since the helpers started: they do not exist here.
            self.workers, self.pid = [], os.getpid()
        if not self.workers:
            self._start()
        self.failures.clear()
        self.posted += 1
        number = self.posted
        counters = self.counters
        # From the first share posted to the last part's end, a Ctrl-C (a
        # KeyboardInterrupt raised at any point of this thread's Python)
        # must not return while a helper still runs its part: every part
        # given one is waited for. (pending is counted before each put:
        # CPython handles a signal after a call returns, not before.)
        pending = 0
        interrupted: BaseException | None = None
        try:
            for part in range(1, parts):
                pending += 1
                self.jobs[part].put((job, number))
            counters[0] = number
            if entered:
                spin_until_all(counters, (self.size + 2) * FLAG_STRIDE, parts - 1, number,
                               HANDOFF_SPINS)
            job(0, number)
            # The helpers' shares, waited for without the GIL a while first.
            # (Both jobs, .kernels.driver's drive_part and
            # forward_range_part, already wait so in part 0; this covers a
            # helper slower than their spin before the blocking wait below.)
            spin_until_all(counters, FLAG_STRIDE, parts - 1, number, HANDOFF_SPINS)
        except BaseException as exc:
            if abort is not None:
                abort()
            interrupted = exc
        # A part's count says it has finished (stored before it puts to
        # `done`, which only wakes this thread: a Ctrl-C right after a get()
        # must not lose a finish).
        while True:
            try:
                for part in range(1, pending + 1):
                    while counters[part * FLAG_STRIDE] < number:
                        self.done.get()
                break
            except BaseException as exc:  # Ctrl-C meanwhile: stop them all
                if abort is not None:
                    abort()
                interrupted = interrupted or exc
        # What was not taken (a part seen finished by its count before its
        # put) would only wake a later wait early: dropped, so that the
        # queue does not grow over a long stream of calls.
        for _ in range(self.done.qsize()):
            self.done.get_nowait()
        if interrupted is not None:
            raise interrupted
        if self.failures:
            raise self.failures[0]
