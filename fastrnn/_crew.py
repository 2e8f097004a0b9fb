"""A prepared layer's steps, and its short calls (a stream's chunks), on
several threads (see fastrnn.kernels.crew).

A :class:`Crew` belongs to one :class:`fastrnn.Layer`: its weights packed in
one part per thread (units split as the units split splits them: equal
rows, cuts on cache lines), the step's buffers for up to ``capacity``
samples, and ``parts - 1`` helper threads. A helper runs the compiled
:func:`.kernels.crew.serve` with the GIL released; when no step has come for
``HANDOFF_SPINS`` checks (about 0.1 ms) it returns to Python and blocks on
its semaphore until the next step wakes it, so that an idle layer costs no
CPU. Whether a helper sleeps is decided under ``self._lock``, and the caller
wakes sleeping helpers under it after posting a step: a step is never
posted to a helper that will not see it.

A chunk (:meth:`run_chunk`) runs every step on every part, a barrier
between steps: each part waits for the others, so after posting it the
caller wakes sleeping helpers before it starts its own part.

One step or chunk at a time: :meth:`step` and :meth:`run_chunk` return
False, having done nothing, when another thread is running one on this
crew (the caller then runs it on its own thread). After a fork the helpers
do not exist in the child: the layer makes a new crew (see
:attr:`generation`).
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from ._apart import current_cpu, settle
from ._plan import FORKS, chunk_steps
from ._units import split_units
from .kernels.barrier import FLAG_STRIDE, HANDOFF_SPINS
from .kernels.cells import pack_layer_call
from .kernels.crew import (
    POSTED,
    STOP,
    collect,
    collect_chunk,
    ctrl_size,
    done_slot,
    lead,
    lead_chunk,
    post_chunk,
    serve,
    wait,
)
from .kernels.jit import FewVariants
from .kernels.product import ALIGN_BYTES, aligned_zeros

_lead = FewVariants(lead, inputs=(2, 3), outputs=(4,))


_post_chunk = FewVariants(post_chunk, inputs=(1, 2), outputs=())


class Crew:
    """``parts`` threads (the caller's and parts - 1 helpers) for the steps
    of one dense layer, of up to ``capacity`` samples, and its chunks of up
    to ``steps_capacity`` steps."""

    def __init__(self, w_ih: np.ndarray, w_hh: np.ndarray, bias: np.ndarray,
                 leak: np.ndarray | None, cell: Any, parts: int, capacity: int,
                 steps_capacity: int = 0) -> None:
        hidden, input_size = w_ih.shape
        line = ALIGN_BYTES // bias.itemsize
        cuts = split_units(np.arange(hidden + 1) * hidden, hidden, line, parts)
        none = np.empty(0, bias.dtype)
        self.packed = [pack_layer_call(w_ih, w_hh, bias, none, none if leak is None else leak,
                                       cuts[p], cuts[p + 1], bias) for p in range(parts)]
        self.acc = [aligned_zeros(capacity, packed.shape[1], bias) for packed in self.packed]
        self.rec = [aligned_zeros(capacity, packed.shape[1], bias) for packed in self.packed]
        self.xs = np.zeros((capacity, input_size), bias.dtype)
        self.hs = np.zeros((capacity, hidden), bias.dtype)
        self.nxt = np.zeros((capacity, hidden), bias.dtype)
        self.ctrl = np.zeros(ctrl_size(parts), np.int64)
        # A chunk's inputs and outputs, and the double-buffered state with
        # the barrier's flags (as fastrnn._units.Split's).
        self.xc = np.zeros((capacity, steps_capacity, input_size), bias.dtype)
        self.oc = np.zeros((capacity, steps_capacity, hidden), bias.dtype)
        columns = (hidden + 1 + line - 1) // line * line
        self.state_a = aligned_zeros(capacity, columns, bias)
        self.state_b = aligned_zeros(capacity, columns, bias)
        self.flags = np.zeros((parts + 1) * FLAG_STRIDE, np.int64)
        self.steps_capacity = steps_capacity
        self.cuts, self.parts, self.capacity = cuts, parts, capacity
        self.hidden, self.cell = hidden, cell
        self.generation = FORKS[0]  # (see fastrnn._plan.FORKS)
        self._busy = threading.Lock()  # held by the step running
        self._lock = threading.Lock()  # whether a helper sleeps is decided under it
        self._sleeping = [False] * parts
        self._wake = [threading.Semaphore(0) for _ in range(parts)]
        # The CPU each thread last woke on (the caller's: 0), -1 unknown:
        # a helper woken moves off the others' (fastrnn._apart).
        self._cpus = [-1] * parts
        # From before a step or chunk is posted until it is seen finished: a
        # Ctrl-C between may have left it running (see _take).
        self._unsure = False
        self._helpers = [threading.Thread(target=self._serve, args=(part,), daemon=True,
                                          name="fastrnn-crew") for part in range(1, parts)]
        for helper in self._helpers:
            helper.start()

    def _serve(self, part: int) -> None:
        ctrl, slot = self.ctrl, done_slot(part)
        u0, u1 = self.cuts[part], self.cuts[part + 1]
        while True:
            serve(ctrl, part, self.parts, self.xs, self.hs, self.packed[part], self.hidden, u0,
                  u1, self.acc[part], self.rec[part], self.nxt, self.cell, self.xc, self.oc,
                  self.state_a, self.state_b, self.flags, HANDOFF_SPINS)
            with self._lock:
                if ctrl[STOP]:
                    return
                if ctrl[0] > ctrl[slot]:  # a step came meanwhile
                    continue
                self._sleeping[part] = True
            self._wake[part].acquire()
            settle(self._cpus, part)

    def _wake_sleepers(self) -> None:
        self._cpus[0] = current_cpu()
        with self._lock:
            for part in range(1, self.parts):
                if self._sleeping[part]:
                    self._sleeping[part] = False
                    self._wake[part].release()

    def _finish(self, posted: int) -> None:
        # Wait (a bounded spin at a time, without the GIL, so that Ctrl-C is
        # answered between) until every helper has finished step `posted`.
        while not wait(self.ctrl, self.parts, posted, HANDOFF_SPINS):
            self._wake_sleepers()
            if not all(helper.is_alive() for helper in self._helpers):
                raise RuntimeError("fastrnn: a helper thread of Layer.step has stopped")

    def _take(self) -> bool:
        # The crew for this thread's step or chunk, the one before finished
        # (Ctrl-C may have left it running); False, with nothing held, when
        # another thread holds it or it has been stopped. Release _busy after.
        if not self._busy.acquire(blocking=False):
            return False
        try:
            if self.ctrl[STOP]:
                self._busy.release()
                return False
            if self._unsure:
                # A Ctrl-C came after the last step or chunk was posted, or
                # before (ctrl says which, wherever the caller's Python was
                # interrupted): its result is not wanted. A chunk's helpers
                # may wait at a step's barrier for the caller's part, which
                # never ran: the abort flag makes them return.
                posted = self.ctrl[POSTED]
                if any(self.ctrl[done_slot(part)] < posted for part in range(1, self.parts)):
                    self.flags[self.parts * FLAG_STRIDE] = 1
                    self._finish(posted)
                self._unsure = False
        except BaseException:
            self._busy.release()
            raise
        return True

    def step(self, x: np.ndarray, h: np.ndarray, out: np.ndarray) -> bool:
        """``out`` <- the step of x (B, I) from h (B, H), checked arrays of
        the crew's dtype with B <= capacity (``out`` may be h). False, with
        nothing done, when another thread is running a step or the crew
        has been stopped."""
        if not self._take():
            return False
        try:
            if True in self._sleeping:  # (read unlocked: a miss costs one spin in _finish)
                self._wake_sleepers()
            self._unsure = True
            posted = _lead(self.ctrl, self.parts, x, h, out, self.xs, self.hs, self.packed[0],
                           self.hidden, self.cuts[1], self.acc[0], self.rec[0], self.nxt,
                           self.cell, HANDOFF_SPINS)
            if posted < 0:
                self._finish(-posted)
                collect(self.nxt, out)
            self._unsure = False
            return True
        finally:
            self._busy.release()

    def run_chunk(self, x: np.ndarray, h0: np.ndarray, output: np.ndarray,
                  h_n: np.ndarray) -> bool:
        """``output`` (B, T, H) and ``h_n`` (B, H) <- a plain call on x (B, T,
        I) from h0 (B, H), checked arrays of the crew's dtype, B <= capacity
        and T <= steps_capacity (h0 may be h_n). False, with nothing done,
        when another thread holds the crew or it has been stopped."""
        if not self._take():
            return False
        try:
            batch, steps = x.shape[0], x.shape[1]
            self._unsure = True
            posted = _post_chunk(self.ctrl, x, h0, self.xc, self.state_a, self.state_b,
                                 self.flags, chunk_steps(batch, self.hidden))
            # Every part waits for the others at each step of a chunk: the
            # helpers must be awake (whether one sleeps is decided under
            # the lock, after it has looked for a posted chunk).
            self._wake_sleepers()
            if not lead_chunk(self.ctrl, self.parts, posted, self.xc, self.oc, self.state_a,
                              self.state_b, self.flags, self.packed[0], self.cuts[1], self.cell,
                              HANDOFF_SPINS):
                self._finish(posted)
            self._unsure = False
            collect_chunk(self.oc, self.state_a, self.state_b, output, h_n, batch, steps)
            return True
        finally:
            self._busy.release()

    def stop(self) -> bool:
        """Stop the helpers (they return from serve within a spin); False,
        with nothing done, while another thread is running a step."""
        if self.generation != FORKS[0]:
            return True  # (a forked child: they do not exist here)
        if not self._busy.acquire(blocking=False):
            return False
        try:
            # Set before the sleepers are woken: a helper decides to sleep
            # only under the lock, after it has looked at the flag. (The
            # abort flag: a helper left waiting at a chunk's barrier by a
            # Ctrl-C returns.)
            self.ctrl[STOP] = 1
            self.flags[self.parts * FLAG_STRIDE] = 1
            self._wake_sleepers()
        finally:
            self._busy.release()
        return True
