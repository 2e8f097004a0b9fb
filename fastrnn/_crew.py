"""A prepared layer's steps on several threads (see fastrnn.kernels.crew).

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

One step at a time: :meth:`step` returns False, having done nothing, when
another thread is running a step of this crew (the caller then runs the
step on its own thread). After a fork the helpers do not exist in the child:
the layer makes a new crew (see :attr:`pid`).
"""

from __future__ import annotations

import os
import threading
from typing import Any

import numpy as np

from ._units import split_units
from .kernels.barrier import HANDOFF_SPINS
from .kernels.cells import pack_layer_call
from .kernels.crew import STOP, collect, ctrl_size, done_slot, lead, serve, wait
from .kernels.jit import FewVariants
from .kernels.product import ALIGN_BYTES, aligned_zeros

_lead = FewVariants(lead, inputs=(2, 3), outputs=(4,))


class Crew:
    """``parts`` threads (the caller's and parts - 1 helpers) for the steps
    of one dense layer, of up to ``capacity`` samples."""

    def __init__(self, w_ih: np.ndarray, w_hh: np.ndarray, bias: np.ndarray,
                 leak: np.ndarray | None, cell: Any, parts: int, capacity: int) -> None:
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
        self.cuts, self.parts, self.capacity = cuts, parts, capacity
        self.hidden, self.cell = hidden, cell
        self.pid = os.getpid()
        self._busy = threading.Lock()  # held by the step running
        self._lock = threading.Lock()  # whether a helper sleeps is decided under it
        self._sleeping = [False] * parts
        self._wake = [threading.Semaphore(0) for _ in range(parts)]
        self._pending = 0  # a step posted and not yet seen finished (Ctrl-C meanwhile)
        self._helpers = [threading.Thread(target=self._serve, args=(part,), daemon=True,
                                          name="fastrnn-crew") for part in range(1, parts)]
        for helper in self._helpers:
            helper.start()

    def _serve(self, part: int) -> None:
        ctrl, slot = self.ctrl, done_slot(part)
        u0, u1 = self.cuts[part], self.cuts[part + 1]
        while True:
            serve(ctrl, part, self.xs, self.hs, self.packed[part], self.hidden, u0, u1,
                  self.acc[part], self.rec[part], self.nxt, self.cell, HANDOFF_SPINS)
            with self._lock:
                if ctrl[STOP]:
                    return
                if ctrl[0] > ctrl[slot]:  # a step came meanwhile
                    continue
                self._sleeping[part] = True
            self._wake[part].acquire()

    def _wake_sleepers(self) -> None:
        with self._lock:
            for part in range(1, self.parts):
                if self._sleeping[part]:
                    self._sleeping[part] = False
                    self._wake[part].release()

    def _finish(self, posted: int) -> None:
        # Wait (a bounded spin at a time, without the GIL, so that Ctrl-C is
        # answered between) until every helper has finished step `posted`.
        self._pending = posted
        while not wait(self.ctrl, self.parts, posted, HANDOFF_SPINS):
            self._wake_sleepers()
            if not all(helper.is_alive() for helper in self._helpers):
                raise RuntimeError("fastrnn: a helper thread of Layer.step has stopped")
        self._pending = 0

    def step(self, x: np.ndarray, h: np.ndarray, out: np.ndarray) -> bool:
        """``out`` <- the step of x (B, I) from h (B, H), checked arrays of
        the crew's dtype with B <= capacity (``out`` may be h). False, with
        nothing done, when another thread is running a step or the crew
        has been stopped."""
        if not self._busy.acquire(blocking=False):
            return False
        try:
            if self.ctrl[STOP]:
                return False
            if self._pending:
                self._finish(self._pending)
            if True in self._sleeping:  # (read unlocked: a miss costs one spin in _finish)
                self._wake_sleepers()
            posted = _lead(self.ctrl, self.parts, x, h, out, self.xs, self.hs, self.packed[0],
                           self.hidden, self.cuts[1], self.acc[0], self.rec[0], self.nxt,
                           self.cell, HANDOFF_SPINS)
            if posted < 0:
                self._finish(-posted)
                collect(self.nxt, out)
            return True
        finally:
            self._busy.release()

    def stop(self) -> bool:
        """Stop the helpers (they return from serve within a spin); False,
        with nothing done, while another thread is running a step."""
        if self.pid != os.getpid():
            return True  # (a forked child: they do not exist here)
        if not self._busy.acquire(blocking=False):
            return False
        try:
            with self._lock:
                self.ctrl[STOP] = 1
                for part in range(1, self.parts):
                    if self._sleeping[part]:
                        self._sleeping[part] = False
                        self._wake[part].release()
        finally:
            self._busy.release()
        return True
