"""A step of a prepared layer on several threads that stay in compiled code.

The units split (fastrnn._units) hands each window of a call to threads that
come back to Python between windows; a step is one window, and that hand-off
(a thread's return to Python, its GIL, Numba's dispatch of twenty arguments)
cost more than the step's own product at every size a step has (float32,
one sample: H = 256, 37 against 12 us on one thread). Here each helper
thread stays in :func:`serve`, a compiled loop that spins on a count of
posted steps and computes its units of each step, for as long as steps keep
coming; the calling thread posts a step and computes its own units in
:func:`lead`. A hand-off is then one cache line from one core to another.

Every thread reads the step's input and state from the crew's own buffers
(``xs``, ``hs``: :func:`lead` copies the caller's arrays there before it posts
the step) and writes its units' new state into ``nxt``, which :func:`lead`
copies to the caller's ``out`` once every part has finished: the helpers
never touch the caller's arrays, and ``out`` may be ``h``.

A chunk of steps (a stream's call: :func:`lead_chunk`) runs the same way,
each thread its units of every step of the chunk through the one step loop
(:func:`.driver.drive`, with its barrier between steps) on the crew's own
buffers: the chunk's inputs (``xc``), its outputs (``oc``) and the
double-buffered state (``state_a``, ``state_b``), copied in and out by the
caller's thread.

``ctrl``, int64, one cache line (``FLAG_STRIDE`` values) per slot: the
steps or chunks posted, the batch, the stop flag, the kind of the last one
posted (0 a step, 1 a chunk), a chunk's steps and its input product's chunk
(:func:`fastrnn._plan.chunk_steps`), then for each part p >= 1 how many it
has finished.
"""

from __future__ import annotations

from numba import njit

from .barrier import FLAG_STRIDE, load_acquire, spin_hint, store_release
from .cells import update
from .driver import drive
from .jit import JIT, KERNEL_JIT
from .product import matmul_rows
from .simd import VECTOR_BYTES
from .step import as_rows

POSTED = 0
BATCH = FLAG_STRIDE
STOP = 2 * FLAG_STRIDE
KIND = 3 * FLAG_STRIDE
STEPS = 4 * FLAG_STRIDE
CHUNK = 5 * FLAG_STRIDE
_SLOTS = 6


def done_slot(part: int) -> int:
    """Where part ``part`` (>= 1) counts the steps and chunks it has finished."""
    return (_SLOTS + part) * FLAG_STRIDE


def ctrl_size(parts: int) -> int:
    return (_SLOTS + parts) * FLAG_STRIDE


@njit(**KERNEL_JIT)
def part_step(xs, hs, batch, packed, hidden, u0, u1, acc, rec, nxt, cell):
    """Units u0..u1-1 of one step of samples 0..batch-1: ``nxt[:batch,
    u0:u1]`` from the inputs ``xs``, the states ``hs`` and this part's
    weights ``packed`` (.cells.pack_layer for these units); ``acc`` and
    ``rec``: this part's scratch, ``packed``'s width."""
    input_size = xs.shape[1]
    lanes = VECTOR_BYTES // packed.itemsize
    vectors = packed.shape[1] // lanes
    tail = input_size + hidden
    matmul_rows(xs, batch, input_size, packed[:input_size].reshape(input_size * vectors, lanes),
                acc)
    matmul_rows(hs, batch, hidden, packed[input_size:tail].reshape(hidden * vectors, lanes), rec)
    rows = packed[tail:]
    units = u1 - u0
    for i in range(batch):
        for j in range(units):
            acc[i, j] += rows[0, j]
        update(cell, acc, i, rec, i, hs, nxt, u0, units, rows)


@njit(**JIT)
def serve(ctrl, part, parts, xs, hs, packed, hidden, u0, u1, acc, rec, nxt, cell, xc, oc,
          state_a, state_b, flags, spins):
    """A helper's loop: each step or chunk posted in ``ctrl``, its units
    u0..u1-1, until nothing has come for ``spins`` checks or the stop flag is
    set (then it returns, to block in Python: see fastrnn._crew)."""
    slot = (_SLOTS + part) * FLAG_STRIDE
    done = load_acquire(ctrl, slot)
    idle = 0
    while idle < spins:
        if load_acquire(ctrl, STOP) != 0:
            return
        if load_acquire(ctrl, POSTED) > done:
            batch = load_acquire(ctrl, BATCH)
            if load_acquire(ctrl, KIND) == 0:
                part_step(xs, hs, batch, packed, hidden, u0, u1, acc, rec, nxt, cell)
            else:
                steps = load_acquire(ctrl, STEPS)
                drive(xc[:batch, :steps], packed, None, cell, u0, u1, state_a[:batch],
                      state_b[:batch], oc[:batch, :steps], 0, True, None, None, 0, False, part,
                      parts, flags, 0, steps, load_acquire(ctrl, CHUNK))
            done += 1
            store_release(ctrl, slot, done)
            idle = 0
        else:
            idle += 1
            spin_hint()


@njit(**KERNEL_JIT)
def wait(ctrl, parts, posted, spins):
    """Whether every other part has finished step ``posted`` within ``spins``
    checks each."""
    for p in range(1, parts):
        slot = (_SLOTS + p) * FLAG_STRIDE
        count = 0
        while load_acquire(ctrl, slot) < posted:
            count += 1
            if count > spins:
                return False
            spin_hint()
    return True


@njit(**KERNEL_JIT)
def collect(nxt, out_given):
    """``out`` (B, H) or (H,) <- the step's new states."""
    out = as_rows(out_given)
    batch, hidden = out.shape
    for i in range(batch):
        for j in range(hidden):
            out[i, j] = nxt[i, j]


@njit(**KERNEL_JIT)
def lead(ctrl, parts, x_given, h_given, out_given, xs, hs, packed, hidden, u1, acc, rec, nxt,
         cell, spins):
    """The caller's share of a step: copy x (B, I) and h (B, H) (or (I,),
    (H,)) into the crew's buffers, post the step, compute units 0..u1-1,
    then wait up to ``spins`` checks for every other part and, if they have
    finished, copy the new states to ``out``. Returns the step's number,
    negated if the other parts had not finished (then :func:`wait`, and
    :func:`collect`)."""
    x = as_rows(x_given)
    h = as_rows(h_given)
    batch, input_size = x.shape
    for i in range(batch):
        for k in range(input_size):
            xs[i, k] = x[i, k]
        for k in range(hidden):
            hs[i, k] = h[i, k]
    posted = load_acquire(ctrl, POSTED) + 1
    store_release(ctrl, BATCH, batch)
    store_release(ctrl, KIND, 0)
    store_release(ctrl, POSTED, posted)
    part_step(xs, hs, batch, packed, hidden, 0, u1, acc, rec, nxt, cell)
    if not wait(ctrl, parts, posted, spins):
        return -posted
    collect(nxt, out_given)
    return posted


@njit(**KERNEL_JIT)
def collect_chunk(oc, state_a, state_b, output, h_n, batch, steps):
    """A chunk's outputs and final states from the crew's buffers (the state
    after an even number of steps is in state_a)."""
    hidden = h_n.shape[1]
    for b in range(batch):
        for t in range(steps):
            for j in range(hidden):
                output[b, t, j] = oc[b, t, j]
    final = state_a if steps % 2 == 0 else state_b
    for b in range(batch):
        for j in range(hidden):
            h_n[b, j] = final[b, j]


@njit(**KERNEL_JIT)
def post_chunk(ctrl, x, h0, xc, state_a, state_b, flags, chunk):
    """Copy a chunk, x (B, T, I) from the states h0 (B, H), into the crew's
    buffers and post it; returns its number. The caller then wakes any
    sleeping helper (the chunk's steps wait for every part at each step:
    see fastrnn._crew) and runs its own part (:func:`lead_chunk`)."""
    batch, steps, input_size = x.shape
    hidden = h0.shape[1]
    for b in range(batch):
        for t in range(steps):
            for k in range(input_size):
                xc[b, t, k] = x[b, t, k]
        for j in range(hidden):
            state_a[b, j] = h0[b, j]
            state_b[b, j] = h0[b, j]
    for k in range(flags.size):
        flags[k] = 0
    posted = load_acquire(ctrl, POSTED) + 1
    store_release(ctrl, BATCH, batch)
    store_release(ctrl, STEPS, steps)
    store_release(ctrl, CHUNK, chunk)
    store_release(ctrl, KIND, 1)
    store_release(ctrl, POSTED, posted)
    return posted


@njit(**JIT)
def lead_chunk(ctrl, parts, posted, xc, oc, state_a, state_b, flags, packed, u1, cell, spins):
    """The caller's part of chunk ``posted``: units 0..u1-1 of its steps;
    then whether every other part finished it within ``spins`` checks."""
    batch = load_acquire(ctrl, BATCH)
    steps = load_acquire(ctrl, STEPS)
    drive(xc[:batch, :steps], packed, None, cell, 0, u1, state_a[:batch], state_b[:batch],
          oc[:batch, :steps], 0, True, None, None, 0, False, 0, parts, flags, 0, steps,
          load_acquire(ctrl, CHUNK))
    return wait(ctrl, parts, posted, spins)
