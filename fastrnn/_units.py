"""Several threads on one forward: the hidden units split between them.

The batch can be split across threads (``_numba``), but one
sequence cannot, nor can time; the hidden units always can. Thread ``p`` of
``parts`` owns units ``cuts[p]..cuts[p+1]``, a contiguous run with about the
same share of w_hh as the others': equal rows of a dense w_hh, packed in the
thread's own buffer (and so in its own L2 from step to step, when it fits),
or equal non-zeros of a sparse one, packed for the gathers
(``kernels.sparse.sell_pack``). Every step it computes its units' new state,
for every running sample, from the whole previous state, then publishes the
step; before the next step it waits for every thread
(``kernels.barrier.wait_all``), which costs about half a microsecond here.
Each thread runs the one step loop, ``kernels.driver.drive``, on its units
with the barrier's flags; this module starts the threads and hands them the
windows of a call.

It also serves a batch too small to give every thread blocks of 4 samples
(2 <= B < 4 x threads) once H >= 256: split by samples, each thread would run
the latency-bound one-sample product (float32 B = 4, H = 512: 98 GFLOP/s);
split by units, each runs 4-sample blocks over its share of w_hh (173).

The recurrent product, into ``acc`` for this thread's units only: dense,
``kernels.product.matmul_rows`` of the states and this thread's columns of w_hh.T,
packed in panels (4 samples x 4 vectors of units per block; one sample:
4 vectors, two chains each), read as one sequential stream per panel; sparse,
the SELL-C-sigma gathers of ``kernels.sparse.sell_product``, per sample. (For one
sample, the packed columns beat dotting each of this thread's rows of w_hh
with the state: float64 H = 1000, 47 against 58 us a step.)

The state is double-buffered in ``state_a`` and ``state_b`` ((B, >= H + 1)
each): step ``s`` reads one and writes the other, so one barrier per step
suffices (a thread overwrites a buffer only after every thread has finished
reading it). Column H is the gathers' padding column, always zero. The cuts
are multiples of a cache line, so no two threads ever write one line of the
state or the output: when the threads' units were interleaved (the packed
order of the whole matrix), writes to shared lines cost a third of the
speed-up. As on every path, samples are taken longest first, so the running
ones are a prefix of the batch; a sample's final state stays in the buffer
its last step wrote.

The threads are a team of the split's own (fastrnn._team), started per
call (a prepared layer keeps its split, threads included, between calls)
and handed each window of the call (see ``fastrnn._plan.Windows``) by a
spin on counts rather than a wake-up, each thread taking the GIL while the
others wait in compiled code (see :meth:`Split.run`); not the batch split's
team, shared by the process: every part must run at once, and threads
shared with concurrent callers could hold back some parts of a call while
the others wait for them at a step's barrier. Each part's
weights are packed once a call, by :class:`Split`. The path is taken only for
calls long enough (``_plan.SPLIT_MIN_FMAS``) that starting a thread is a
negligible cost.
"""

from __future__ import annotations

import functools
import threading
from typing import Any

import numpy as np

from ._team import Team
from .kernels.barrier import FLAG_STRIDE, claim
from .kernels.cells import pack_layer_call
from .kernels.driver import drive_call, finish
from .kernels.product import ALIGN_BYTES, aligned_zeros
from .kernels.sparse import sell_pack


def split_units(indptr: np.ndarray, hidden: int, lanes: int, parts: int) -> list[int]:
    """Unit boundaries 0 = u_0 <= ... <= u_parts = H, multiples of ``lanes``
    (so that no two threads write one cache line of the state or output),
    with about equal non-zeros between them."""
    total = int(indptr[-1])
    cuts = [0]
    for p in range(1, parts):
        cut = int(np.searchsorted(indptr, total * p / parts))
        cut = min(hidden, (cut + lanes // 2) // lanes * lanes)
        cuts.append(max(cut, cuts[-1]))
    cuts.append(hidden)
    return cuts


class Split:
    """One call's units split on ``parts`` threads (the caller's and
    parts - 1 started when it is made), set up once: the cuts, each part's
    packed weights (each packed by its own thread), the double-buffered
    state and the barrier's flags. w_hh
    a dense array or a canonical CSR matrix; ``order`` and ``lens``: the
    samples longest first and their lengths (None: every sequence runs T
    steps). :meth:`run` runs a window of steps."""

    def __init__(self, w_ih: np.ndarray, w_hh: Any, b_ih: np.ndarray | None,
                 b_hh: np.ndarray | None, leak: np.ndarray | None, h_n: np.ndarray,
                 order: np.ndarray | None, lens: np.ndarray | None, parts: int,
                 pack: Any = None) -> None:
        # pack(u0, u1): a gated layer's weights for units u0..u1-1
        # (kernels.cells.pack_gated; w_hh (G H, H)), whose state is h_n's
        # columns: H (GRU) or 2H (an LSTM's [h | c]). Else an Elman layer's,
        # packed here.
        batch = h_n.shape[0]
        hidden = w_hh.shape[1]
        line = ALIGN_BYTES // h_n.itemsize  # values per cache line
        dense = w_hh if isinstance(w_hh, np.ndarray) else None
        if dense is not None:
            cuts = split_units(np.arange(hidden + 1) * hidden, hidden, line, parts)
        else:
            cuts = split_units(w_hh.indptr, hidden, line, parts)
        self.sparse: list[Any] = [None] * parts
        self.packed: list[Any] = [None] * parts

        def pack_part(part: int) -> None:
            u0, u1 = cuts[part], cuts[part + 1]
            if dense is None:
                indptr = w_hh.indptr[u0:u1 + 1] - w_hh.indptr[u0]
                rows = slice(w_hh.indptr[u0], w_hh.indptr[u1])
                self.sparse[part] = sell_pack(indptr, w_hh.indices[rows], w_hh.data[rows],
                                              u1 - u0, hidden)
            if pack is None:
                self.packed[part] = pack_layer_call(w_ih, dense, b_ih, b_hh, leak, u0, u1, h_n)
            else:
                self.packed[part] = pack(u0, u1)

        def pack_parts(_part: int, number: int) -> None:
            # The parts' weights, packed by the threads at once (the kernels
            # release the GIL), each thread claiming parts until none is
            # left (Team.share_out): a helper the machine has not run yet
            # leaves its part to a thread that runs.
            counters = self.team.counters
            while True:
                part = claim(counters, self.team.claims, number, parts)
                if part < 0:
                    return
                pack_part(part)
                counters[self.team.finished + part * FLAG_STRIDE] = number

        self.cuts, self.parts, self.batch, self.hidden = cuts, parts, batch, hidden
        self.order, self.lens = order, lens
        # Column H is the padding column of the gathers: always zero (an
        # LSTM's state, [h | c], has c there: its w_hh is dense).
        columns = (h_n.shape[1] + 1 + line - 1) // line * line
        self.state_a = aligned_zeros(batch, columns, h_n)
        self.state_b = aligned_zeros(batch, columns, h_n)
        self.flags = np.zeros((parts + 1) * FLAG_STRIDE, dtype=np.int64)
        # The other parts' threads, started here and kept for the call's
        # windows (starting a thread took ~0.16 ms, handing it a window 0.02;
        # see fastrnn._team). They pack the parts first: float32 (32, 50,
        # 1024, 1024), two parts, packed one after the other in 2.6 ms a
        # call (7% of it), at once in 1.5.
        self.team = Team(parts - 1, "fastrnn-units")
        try:
            self.team.share_out(pack_parts, parts, parts)
        except BaseException:
            self.team.close()
            raise

    def _run(self, window: tuple, part: int, number: int) -> None:
        x, out, col, cell, batch_first, reverse, first, last, chunk = window
        try:
            drive_call(x, self.packed[part], self.sparse[part], cell, self.cuts[part],
                       self.cuts[part + 1], self.state_a, self.state_b, out, col, batch_first,
                       self.order, self.lens, 0, reverse, part, self.parts, self.flags, first,
                       last, chunk, self.team.counters, number)
        except BaseException:  # the other parts must not wait for this one
            self._abort()
            raise

    def _abort(self) -> None:
        self.flags[self.parts * FLAG_STRIDE] = 1

    def close(self) -> None:
        """Stop the threads and wait for them (at the end of the call)."""
        self.team.close()

    def startup(self) -> float:
        """Seconds of the last window before its threads had all started
        (fastrnn._team.Team.startup)."""
        return self.team.startup(self.parts)

    def stop(self) -> list[threading.Thread]:
        """Ask the threads to stop, without waiting (a prepared layer's
        split, when the layer is freed); returns them."""
        return self.team.stop()

    def run(self, x: np.ndarray, h: np.ndarray, out: np.ndarray, col: int,
            h_n: np.ndarray, cell: Any, batch_first: bool, reverse: bool, first: int,
            last: int, chunk: int) -> None:
        """Steps first..last-1 from the states h after step first - 1; the
        states after them into h_n (h may be h_n), and into out from its
        column ``col`` on (an empty array: no output). cell: a fastrnn.kernels.cells cell; chunk:
        _plan.chunk_steps."""
        parts, order, lens = self.parts, self.order, self.lens
        width = h_n.shape[1]  # the state's columns: H, or 2H for an LSTM's [h | c]
        steps_total = x.shape[1] if batch_first else x.shape[0]
        state_a, state_b = self.state_a, self.state_b
        # Into both buffers: a sample that has already ended keeps its state
        # in whichever finish reads.
        state_a[:, :width] = h if order is None else h[order]
        state_b[:, :width] = state_a[:, :width]
        flags = self.flags
        flags[:] = 0
        flags[:parts * FLAG_STRIDE:FLAG_STRIDE] = first
        # The hand-off (fastrnn._team): a thread spins a bounded while
        # (HANDOFF_SPINS) on a count before it blocks on a queue, and each
        # thread takes the GIL while the others wait in compiled code: a
        # thread woken from a queue, or waiting for the GIL another thread
        # held, took tens of microseconds. The caller's thread waits, without
        # the GIL, until the others have taken the window and entered their
        # steps; its own steps then wait for theirs to be back (see
        # drive_part). A kept split, one sample, float32, us a call (one
        # thread: 8-12 at H = 256, one step; 61-66 at H = 1024, one step;
        # 510-550 at H = 1024, 10 steps), blocking queues / spinning on
        # counts / and each taking the GIL while the others wait: H = 256,
        # one step, 236 / 45 / 37; H = 1024, one step, 337 / 90 / 51; 10
        # steps, 774 / 369 / 332 (medians of 4 processes for the last two).
        # A Ctrl-C (or a failure) sets the abort flag: no thread is left
        # waiting at a step's barrier for a part that will not come.
        window = (x, out, col, cell, batch_first, reverse, first, last, chunk)
        self.team.run(functools.partial(self._run, window), parts, entered=True,
                      abort=self._abort)
        finish(out, col, h_n, state_a, state_b, order, lens, 0, steps_total, batch_first, last,
               self.hidden)
