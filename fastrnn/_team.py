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
.kernels.driver's drive_part and forward_range_shares). The units split
(fastrnn._units.Split) runs each window of a call on a team of its own
(:meth:`Team.run`: every thread has its part, and the threads wait for each
other at every step); the batch split (fastrnn._numba) on one team shared
by the process, whose helpers are started by its first call, and whose
threads claim the call's shares (:meth:`Team.share_out`: a helper that
comes late finds none left, and the call does not wait for it).

Every part of a call (every share claimed) has finished before
:meth:`Team.run` (:meth:`Team.share_out`) returns or raises (a Ctrl-C
meanwhile included): nothing writes the caller's arrays after it.
(A helper that says it has finished from compiled code drops its references
to them a moment later, back in Python.)
After a fork the helpers do not exist in the child; a team notices (its
process id) and starts new ones. A helper given a job moves off a CPU that
the caller or another helper runs on (fastrnn._apart).
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from ._apart import current_cpu, settle
from .kernels.barrier import (
    FLAG_STRIDE,
    HANDOFF_SPINS,
    MAX_SHARES,
    close_claims,
    spin_until,
    spin_until_all,
)


class Team:
    """``size`` helper threads named ``name``, started by the first
    :meth:`run`. ``counters`` (int64, a cache line a slot): slot 0 the
    shares posted, slot p the shares helper p has finished, slot
    ``size + 1 + p`` the calls it has entered (stored by the job itself,
    when the caller waits for it: see :meth:`run`); then
    :meth:`share_out`'s: the claims count, and a slot a share."""

    def __init__(self, size: int, name: str) -> None:
        self.size = size
        self.name = name
        self.workers: list[threading.Thread] = []
        self.pid = os.getpid()  # the process whose threads `workers` are
        self.jobs: list[queue.SimpleQueue] = [queue.SimpleQueue() for _ in range(size + 1)]
        self.done: queue.SimpleQueue = queue.SimpleQueue()
        self.failures: list[tuple[int, BaseException]] = []  # (call number, exception)
        self.posted = 0
        self.pending = 0  # helpers given the current call's job (see _post)
        # (share_out's slots: the claims count, then a slot a share for its
        # call's number when it has finished.)
        self.claims = 2 * (size + 1) * FLAG_STRIDE
        self.finished = self.claims + FLAG_STRIDE
        self.counters = np.zeros((3 * (size + 1) + 1) * FLAG_STRIDE, dtype=np.int64)
        # Held by the call running on the team (callers that share one take
        # it without blocking, see fastrnn._numba).
        self.lock = threading.Lock()
        # The CPU each thread last ran a job on (the caller's: 0), -1 unknown.
        self.cpus = [-1] * (size + 1)
        # When the last call was posted, and when each helper started its
        # job (time.perf_counter): see startup().
        self.posted_at = 0.0
        self.started = [0.0] * (size + 1)

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
                settle(self.cpus, part)
                self.started[part] = time.perf_counter()
                job(part, served)
            except BaseException as exc:  # raised by its call, on the caller's thread
                self.failures.append((served, exc))
            finally:
                # The call's arrays let go now, not when the next call's job
                # replaces this one.
                job = share = None
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

    def startup(self, parts: int) -> float:
        """Seconds from the last call's post until helpers 1..parts-1 had
        all started its job (a helper asleep on its queue is woken)."""
        started = max(self.started[1:parts], default=self.posted_at)
        return max(0.0, started - self.posted_at)

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
        number = self._next()
        counters = self.counters
        interrupted: BaseException | None = None
        try:
            self._post(job, number, parts)
            if entered:
                spin_until_all(counters, (self.size + 2) * FLAG_STRIDE, parts - 1, number,
                               HANDOFF_SPINS)
            job(0, number)
            # The helpers' shares, waited for without the GIL a while first.
            # (The units split's job, .kernels.driver.drive_part, already
            # waits so in part 0; this covers a helper slower than its spin
            # before the blocking wait below.)
            spin_until_all(counters, FLAG_STRIDE, parts - 1, number, HANDOFF_SPINS)
        except BaseException as exc:
            if abort is not None:
                abort()
            interrupted = exc
        interrupted = self._wait_helpers(number, interrupted, abort)
        self._end(number, interrupted)

    def share_out(self, job: Callable[[int, int], Any], parts: int, shares: int) -> None:
        """``job(part, number)`` on this thread (part 0) and ``parts - 1``
        helpers, each claiming shares 0..shares-1 of call ``number``
        (``counters[claims]``, .kernels.barrier.claim) until none is left,
        and storing ``number`` in ``counters[finished + k * FLAG_STRIDE]``
        when share k has finished; part 0 claims until none is left too
        (``parts`` 1: this thread runs them all).
        Returns when every share has finished: a helper that the machine
        has not run by then (another process on its core) claims none when
        it comes, and the call does not wait for it. With one busy process
        on the 2-core Zen 3 VM, float32 (32, 100, 32, 64) calls of the
        batch split that waited for their helper (:meth:`run`) took 3.70
        ms against 1.48 on one thread. Raises the exception of this call's
        job on a helper (then, and on a Ctrl-C, it waits for every helper
        given the call: a job that raised may have left a share it
        claimed)."""
        number = self._next()
        counters = self.counters
        counters[self.claims] = number * MAX_SHARES
        interrupted: BaseException | None = None
        try:
            self._post(job, number, parts)
            if parts > 1:
                # A while (HANDOFF_SPINS) for a helper's first claim before
                # this thread claims: calls that did not wait so took 1.10x
                # the time of the team that waits for its helper to enter
                # (float32 (32, 100, 32, 64), 600 calls back to back, the
                # two in turn: 0.976 against 0.890 ms; with the wait 0.699
                # against 0.695).
                spin_until(counters, self.claims, number * MAX_SHARES + 1, HANDOFF_SPINS)
            job(0, number)
            # (The job already waits a while so; this covers a Ctrl-C
            # handled just before its own wait.)
            spin_until_all(counters, self.finished, shares, number, HANDOFF_SPINS)
        except BaseException as exc:
            interrupted = exc
        if interrupted is None:
            try:
                # Every share is claimed (part 0 claimed until none was
                # left): each one's count says it has finished, stored
                # before its helper puts to `done`.
                for k in range(shares):
                    while counters[self.finished + k * FLAG_STRIDE] < number:
                        if self._failure(number) is not None:
                            break
                        self.done.get()
            except BaseException as exc:  # Ctrl-C meanwhile
                interrupted = exc
        failed = self._failure(number) is not None
        if interrupted is not None or failed:
            # None of what is left runs; every helper given the call
            # finishes its job (what it claimed) before this returns.
            close_claims(counters, self.claims, number, shares)
            interrupted = self._wait_helpers(number, interrupted, None)
        self._end(number, interrupted)

    def _next(self) -> int:
        # A new call's number, the helpers started (again, after a fork).
        if self.pid != os.getpid():
            # Forked since the helpers started: they do not exist here.
            self.workers, self.pid = [], os.getpid()
        if not self.workers:
            self._start()
        self.failures.clear()
        self.pending = 0
        self.posted += 1
        return self.posted

    def _post(self, job: Callable[[int, int], Any], number: int, parts: int) -> None:
        # Call `number`'s job to helpers 1..parts-1, then its count. From the
        # first job posted to the last part's end, a Ctrl-C (a
        # KeyboardInterrupt raised at any point of this thread's Python)
        # must not return while a helper still runs its part: every helper
        # given one is waited for (_wait_helpers). (`pending` is counted
        # before each put: CPython handles a signal after a call returns,
        # not before.)
        self.cpus[0] = current_cpu()
        self.posted_at = time.perf_counter()
        for part in range(1, parts):
            self.pending += 1
            self.jobs[part].put((job, number))
        self.counters[0] = number

    def _failure(self, number: int) -> BaseException | None:
        # The exception of call `number`'s job on a helper, if one raised.
        for served, exc in self.failures:
            if served == number:
                return exc
        return None

    def _wait_helpers(self, number: int, interrupted: BaseException | None,
                      abort: Callable[[], None] | None) -> BaseException | None:
        # Until helpers 1..pending have finished call `number`'s job: a
        # part's count says it has (stored before it puts to `done`, which
        # only wakes this thread: a Ctrl-C right after a get() must not lose
        # a finish). Returns the first exception raised here or before.
        counters = self.counters
        while True:
            try:
                for part in range(1, self.pending + 1):
                    while counters[part * FLAG_STRIDE] < number:
                        self.done.get()
                return interrupted
            except BaseException as exc:  # Ctrl-C meanwhile: stop them all
                if abort is not None:
                    abort()
                interrupted = interrupted or exc

    def _end(self, number: int, interrupted: BaseException | None) -> None:
        # What was not taken (a part seen finished by its count before its
        # put) would only wake a later wait early: dropped, so that the
        # queue does not grow over a long stream of calls.
        for _ in range(self.done.qsize()):
            self.done.get_nowait()
        if interrupted is not None:
            raise interrupted
        failure = self._failure(number)
        if failure is not None:
            raise failure
