"""The step loop: one compiled driver for every way a forward call runs.

:func:`drive` runs steps ``first..last-1`` (a window of the call) for a set
of samples (a share of the batch, or all of it) and a slice of the units
(``u0..u1``: all of them, or one thread's share): the one-thread path, the
batch split (each thread a share of the samples, every unit) and the units
split (each thread every sample, a share of the units, a barrier between
steps) are this loop with other arguments. What varies is chosen when it is
compiled: the recurrent product (dense panels of :mod:`.product`, or the
SELL gathers of :mod:`.sparse`: whether ``sparse`` is None), the cell
(:mod:`.cells`: the type of ``cell``) and the barrier (:mod:`.barrier`:
whether ``flags`` is None). The set-up and the per-step tail are written
once, here and in the cell.

Every path: samples are taken longest first, so the sequences still running
at a step are a prefix of the batch and each step works on that prefix only
(work in proportion to the sum of the lengths). The input product is hoisted
a chunk of steps at a time into a fixed-size buffer (still in cache when the
recurrence reads it back; no buffer grows with T, so return_sequences=False
runs in O(B*H + chunk) memory); nothing is allocated per step.

The state is read from ``state_a`` at even steps and written to
``state_b``, and the other way round at odd steps. One thread passes one
array as both (the products read the whole state before the cell writes
it; the cell reads each value before writing it). Threads that share the
state (the units split) pass two, so that one barrier per step suffices: a
thread overwrites a buffer only after every thread has finished reading it.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .barrier import FLAG_STRIDE, HANDOFF_SPINS, claim, spin_until_all, store_release, wait_all
from .cells import ROWS, layer_shape, update
from .jit import JIT, KERNEL_JIT, FewVariants, c_view, is_c_contiguous
from .product import aligned_empty, aligned_zeros, matmul_rows
from .simd import VECTOR_BYTES, prefetch_write
from .sparse import sparse_rows
from .step import STACK_BYTES, stack_matrix


@njit(**KERNEL_JIT)
def longest_steps(lens, count, steps_total):
    if count == 0:
        return 0
    return steps_total if lens is None else lens[0]


@njit(**KERNEL_JIT)
def running(lens, active, s):
    """How many samples (a prefix: longest first) still run at step s."""
    if lens is not None:
        while active > 0 and lens[active - 1] <= s:
            active -= 1
    return active


@njit(**KERNEL_JIT)
def time_index(s, i, lens, steps_total, reverse):
    """The time index of step s of sample i: reversed, each sequence starts
    at its own last valid step."""
    if not reverse:
        return s
    if lens is None:
        return steps_total - 1 - s
    return lens[i] - 1 - s


@njit(**KERNEL_JIT)
def gather(x, gathered, row_start, s0, s1, active, order, lens, b_start, steps_total, reverse,
           batch_first):
    """The inputs of steps s0..s1-1 of the running samples, step-major, into
    ``gathered``; row_start[s - s0] is step s's first row. Returns the rows.

    ``x`` arrives as an array of any layout (one compiled variant for all,
    see :class:`.jit.FewVariants`); a C-ordered one is copied through a
    C-typed view, whose rows copy as vectors (with run-time strides each
    value was a scalar load: float32 (64, 200, 128, 128) spent 9% of its
    time here, against 5% with C-typed inputs)."""
    if is_c_contiguous(x):
        return gather_rows(c_view(x), gathered, row_start, s0, s1, active, order, lens, b_start,
                           steps_total, reverse, batch_first)
    return gather_rows(x, gathered, row_start, s0, s1, active, order, lens, b_start, steps_total,
                       reverse, batch_first)


@njit(**KERNEL_JIT)
def gather_rows(x, gathered, row_start, s0, s1, active, order, lens, b_start, steps_total,
                reverse, batch_first):
    input_size = x.shape[2]
    rows = 0
    count = active
    for s in range(s0, s1):
        count = running(lens, count, s)
        if row_start is not None:
            row_start[s - s0] = rows
        for i in range(count):
            b = b_start + i if order is None else order[i]
            t = time_index(s, i, lens, steps_total, reverse)
            if batch_first:
                for k in range(input_size):
                    gathered[rows + i, k] = x[b, t, k]
            else:
                for k in range(input_size):
                    gathered[rows + i, k] = x[t, b, k]
        rows += count
    return rows


@njit(**KERNEL_JIT)
def add_bias(pre, rows, bias, width):
    for r in range(rows):
        for j in range(width):
            pre[r, j] += bias[j]


@njit(**dict(KERNEL_JIT, inline="always"))
def store(out, first, state, i, b, t, u0, units, batch_first):
    """Units u0.. of sample b's state after its time step t (row i of
    state) into the output's columns first..first + units - 1."""
    # Unsigned column indices: Numba adds a negative index's wrap-around to
    # a signed one, and with signed ones and a column offset (first != u0)
    # float32 (1, 10 000, 8, 64) ran 15% slower (paired in one process).
    if batch_first:
        for j in range(units):
            out[b, t, np.uint64(first + j)] = state[i, np.uint64(u0 + j)]
    else:
        for j in range(units):
            out[t, b, np.uint64(first + j)] = state[i, np.uint64(u0 + j)]


@njit(**KERNEL_JIT)
def load_state(state, h0, order, b_start):
    """The initial state of the samples, in their order."""
    for i in range(state.shape[0]):
        b = b_start + i if order is None else order[i]
        for j in range(h0.shape[1]):
            state[i, j] = h0[b, j]


@njit(**KERNEL_JIT)
def finish(out, col, h_n, state_a, state_b, order, lens, b_start, steps_total, batch_first,
           last, hidden):
    """Each sample's state after the window's last step (last - 1, or its
    own last) into h_n (its columns: H, or 2H for an LSTM's [h | c]), and,
    after the call's last window, zeros in the output's ``hidden`` columns
    (unless empty) past its length (as PyTorch's padded output). A double-buffered
    state holds it in the buffer its last step wrote: state_a after an even
    number of steps; a single one is passed as both."""
    for i in range(state_a.shape[0]):
        b = b_start + i if order is None else order[i]
        steps = min(last, steps_total if lens is None else lens[i])
        final = state_a if steps % 2 == 0 else state_b
        for j in range(h_n.shape[1]):
            h_n[b, j] = final[i, j]
        if out.size != 0 and last >= steps_total:
            for t in range(steps, steps_total):
                for j in range(hidden):
                    if batch_first:
                        out[b, t, col + j] = 0
                    else:
                        out[t, b, col + j] = 0


@njit(**JIT)
def drive(x, packed, sparse, cell, u0, u1, state_a, state_b, out, col, batch_first, order,
          lens, b_start, reverse, part, parts, flags, first, last, chunk):
    """Steps first..last-1 of the samples held in the rows of state_a
    (sample order[i], longest first with lengths lens, or b_start + i with
    order None: every one T steps long) for units u0..u1-1.

    x: (B, T, I) if batch_first else (T, B, I), any layout; out:
    C-contiguous, x's layout with H features from its column ``col`` on (0,
    or H for the second half of a bidirectional output: see
    fastrnn.Layer.run), or an empty array for no output (an array
    either way: one compiled variant). packed: :func:`.cells.pack_layer` of these
    units; sparse: :func:`.sparse.sell_pack` of their rows of a sparse w_hh
    (None: w_hh is dense, in ``packed``); cell: a :mod:`.cells` cell.
    state_a, state_b: (samples, >= H + 1) with column H zero (the gathers'
    padding column), the states after step first - 1 in the buffer step
    ``first`` reads. flags: the barrier's (thread ``part`` of ``parts``), or
    None for a thread that shares its state with no other. chunk:
    :func:`fastrnn._plan.chunk_steps`. Returns False if another thread aborted."""
    n1, n2, input_size = x.shape
    steps_total = n2 if batch_first else n1
    count = state_a.shape[0]
    longest = longest_steps(lens, count, steps_total)
    stop = min(longest, last)
    if first >= stop:
        return True
    held = max(1, min(longest, chunk))  # steps the input product's buffer holds
    # Not zeroed: the products write every value the steps read (the kernel
    # tests pass with it filled with NaN).
    work = aligned_empty(work_rows(held, count, sparse), packed.shape[1], state_a)
    gathered = np.empty((held * count, input_size), dtype=state_a.dtype)
    row_start = np.empty(held, dtype=np.int64)
    return steps_on(x, packed, sparse, cell, u0, u1 - u0, state_a, state_b, out, col,
                    batch_first, order, lens, b_start, reverse, part, parts, flags, first, stop,
                    chunk, work, held, gathered, row_start)


@njit(**dict(KERNEL_JIT, inline="always"))
def work_rows(held, count, sparse):
    """The rows (of the packed width) of the steps' workspace: pre (the
    input product + bias of ``held`` steps, step-major, only the running
    samples' rows), acc (the recurrent product), sorted (the sparse product
    in its packed row order; sparse only)."""
    return held * count + count + (count if sparse is not None else 0)


@njit(**dict(KERNEL_JIT, inline="always"))
def steps_on(x, packed, sparse, cell, u0, mine, state_a, state_b, out, col, batch_first, order,
             lens, b_start, reverse, part, parts, flags, first, stop, chunk, work, held,
             gathered, row_start):
    """:func:`_steps` on the panels of ``packed`` and the parts of ``work``
    (:func:`work_rows`, for ``held`` steps of the state's samples)."""
    input_size = x.shape[2]
    count = state_a.shape[0]
    lanes = VECTOR_BYTES // state_a.itemsize
    vectors = packed.shape[1] // lanes
    hidden = packed.shape[0] - ROWS - input_size  # H rows (dense), 0 (sparse)
    pre_rows = held * count
    return _steps(x, packed[:input_size].reshape(input_size * vectors, lanes),
                  packed[input_size:input_size + hidden].reshape(hidden * vectors, lanes),
                  hidden, packed[input_size + hidden:], sparse, cell, u0, mine, state_a,
                  state_b, out, col, batch_first, order, lens, b_start, reverse, part, parts,
                  flags, first, stop, chunk, work[:pre_rows], work[pre_rows:pre_rows + count],
                  work[pre_rows + count:], gathered, row_start)


@njit(**KERNEL_JIT)
def _steps(x, w_ih_p, w_hh_p, hidden, rows, sparse, cell, u0, mine, state_a, state_b, out,
           col, batch_first, order, lens, b_start, reverse, part, parts, flags, first, stop, chunk,
           pre, acc, sorted_acc, gathered, row_start):
    # drive's step loop, in a function of its own compiled without
    # reference counts (it allocates nothing): in drive, each array handed
    # to the inlined cell and store cost an increment and a decrement
    # (perf: 4% of float32 (1, 100 000, 8, 64) in NRT_incref/NRT_decref).
    count = state_a.shape[0]
    input_size = x.shape[2]
    steps_total = x.shape[1] if batch_first else x.shape[0]
    lanes = VECTOR_BYTES // state_a.itemsize
    width = pre.shape[1]
    active = count
    s0 = first
    while s0 < stop:
        s1 = min(stop, (s0 // chunk + 1) * chunk)
        n = gather(x, gathered, row_start, s0, s1, active, order, lens, b_start, steps_total,
                   reverse, batch_first)
        matmul_rows(gathered, n, input_size, w_ih_p, pre)
        add_bias(pre, n, rows[0], width)
        for s in range(s0, s1):
            active = running(lens, active, s)
            if flags is None:  # one thread: its own state, read and written in place
                cur = nxt = state_a
            else:
                cur, nxt = (state_a, state_b) if s % 2 == 0 else (state_b, state_a)
            if flags is not None:
                if not wait_all(flags, parts, s):
                    return False
                # The other threads read our units of nxt at the step
                # before: take the lines back now, during the product,
                # rather than when the cell stores to them.
                for i in range(active):
                    for j in range(0, mine, lanes):
                        prefetch_write(nxt, i, u0 + j)
            if sparse is not None:
                sparse_rows(cur, active, sparse, sorted_acc, acc)
            else:
                matmul_rows(cur, active, hidden, w_hh_p, acc)
            # (row_start None: no lengths, every step a block of count rows)
            base = (s - s0) * count if row_start is None else row_start[s - s0]
            for i in range(active):
                update(cell, pre, base + i, acc, i, cur, nxt, u0, mine, rows)
                if flags is None and out.size != 0:  # (with flags: after the step's release)
                    store(out, col + u0, nxt, i, b_start + i if order is None else order[i],
                          time_index(s, i, lens, steps_total, reverse), u0, mine, batch_first)
            if flags is not None:
                # Publish the step before writing the output, which no other
                # thread reads: stores become visible in order (x86), so a
                # release after them waits for each of their cache lines,
                # and a line of the output that another thread's units share
                # (the output need not be 64-byte aligned) would come from
                # that thread's cache every step. (Float32 H = 128, one
                # sample: 1475 ns a step with the output first.)
                store_release(flags, part * FLAG_STRIDE, s + 1)
                if out.size != 0:
                    for i in range(active):
                        store(out, col + u0, nxt, i, b_start + i if order is None else order[i],
                              time_index(s, i, lens, steps_total, reverse), u0, mine,
                              batch_first)
        s0 = s1
    return True


@njit(**JIT)
def run_range(x, packed, sparse, cell, h0, out, col, h_n, batch_first, order, lens, reverse,
                  b_start, count, first, last, chunk):
    """:func:`drive` on one thread for ``count`` samples (order[0..count),
    or b_start.. with order None) and every unit, from the states h0 after
    step first - 1; their states after step last - 1 into h_n (h0 may be
    h_n; both (B, H), or (B, 2H) for an LSTM: [h | c]). out: as for drive.
    (Called from compiled code; from Python, through
    :data:`forward_range_call`.)"""
    steps_total = x.shape[1] if batch_first else x.shape[0]
    hidden = layer_shape(packed)[0]
    lanes = VECTOR_BYTES // h_n.itemsize
    # Column H of an Elman state is the gathers' padding column: always
    # zero. (An LSTM's [h | c] has c there; its w_hh is dense.)
    state = aligned_zeros(count, (h_n.shape[1] + lanes) // lanes * lanes, h_n)
    load_state(state, h0, order, b_start)
    drive(x, packed, sparse, cell, 0, hidden, state, state, out, col, batch_first, order, lens,
          b_start, reverse, 0, 1, None, first, last, chunk)
    finish(out, col, h_n, state, state, order, lens, b_start, steps_total, batch_first, last,
           hidden)


@njit(**JIT)
def forward_range(x, packed, sparse, cell, h0, out, col, h_n, batch_first, order, lens, reverse,
                  b_start, count, first, last, chunk):
    """:func:`run_range` called from Python (through a few variants, which
    compiled code cannot ask for: see forward_range_shares)."""
    run_range(x, packed, sparse, cell, h0, out, col, h_n, batch_first, order, lens, reverse,
              b_start, count, first, last, chunk)


@njit(**JIT)
def direct_range(x, packed, sparse, cell, h0, out, h_n, chunk):
    """:func:`run_range` for a prepared layer's plain call (every sample of
    x, batch first, whole, from h0, on one thread: fastrnn._numba.DirectCall)
    with the arguments such a call fixes left out: a 100-step chunk's
    compiled call unboxes 8 arguments, not 17."""
    run_range(x, packed, sparse, cell, h0, out, 0, h_n, True, None, None, False, 0, x.shape[0],
              0, x.shape[1], chunk)


@njit(**KERNEL_JIT)
def direct_stack_bytes(batch, steps, input_size, width, state_width, chunk, sparse, itemsize):
    """The scratch of :func:`direct_stack` in bytes: the state, the input
    product of a chunk of steps and its gathered inputs, the recurrent
    product (and the sparse one's rows), as :func:`drive` lays them out."""
    held = max(1, min(steps, chunk))
    return ((batch * state_width + work_rows(held, batch, sparse) * width
             + held * batch * input_size) * itemsize)


@njit(**KERNEL_JIT)
def direct_stack(x, packed, sparse, cell, h0, out, h_n, chunk):
    """:func:`direct_range` with its scratch on the stack and without Numba's
    reference counts (whose wrapping of each array argument, and the
    scratch's four allocations, cost a 100-step chunk's call at B = 1, I =
    16, float32 H = 64 about 0.5 us of its 20), for a call whose scratch
    (:func:`direct_stack_bytes`) fits :data:`.step.STACK_BYTES`: returns
    False, having done nothing, when it does not."""
    batch, steps, input_size = x.shape
    lanes = VECTOR_BYTES // h_n.itemsize
    width = packed.shape[1]
    state_width = (h_n.shape[1] + lanes) // lanes * lanes  # (see run_range)
    if direct_stack_bytes(batch, steps, input_size, width, state_width, chunk, sparse,
                          h_n.itemsize) > STACK_BYTES:
        return False
    hidden = layer_shape(packed)[0]
    held = max(1, min(steps, chunk))
    state = stack_matrix(batch, state_width, h_n)
    work = stack_matrix(work_rows(held, batch, sparse), width, h_n)
    gathered = stack_matrix(held * batch, input_size, h_n)
    for i in range(batch):
        for j in range(state_width):
            state[i, j] = 0
    load_state(state, h0, None, 0)
    steps_on(x, packed, sparse, cell, 0, hidden, state, state, out, 0, True, None, None, 0,
             False, 0, 1, None, 0, steps, chunk, work, held, gathered, None)
    finish(out, 0, h_n, state, state, None, None, 0, steps, True, steps, hidden)
    return True


@njit(**JIT)
def drive_part(x, packed, sparse, cell, u0, u1, state_a, state_b, out, col, batch_first, order,
               lens, b_start, reverse, part, parts, flags, first, last, chunk, counts, window):
    """:func:`drive` called from Python, for one thread of the units split
    (drive itself is also called from compiled code, which must be able to
    compile the variants it needs).

    ``counts``: the split's hand-off counts (fastrnn._units.Split): slot
    ``p * FLAG_STRIDE`` the windows thread p > 0 has finished (stored from
    Python), slot ``(parts + p) * FLAG_STRIDE`` the windows it has entered
    (stored here). A thread entering window ``window`` says so at once; the
    caller's thread (part 0), after its steps, waits here, without the GIL,
    until the others have finished the window and are back waiting for the
    next: each thread then takes the GIL while the other is in compiled code,
    where a thread that waited for the GIL held by the other waited for the
    kernel's wake-up (tens of microseconds)."""
    if part > 0:
        store_release(counts, (parts + part) * FLAG_STRIDE, window)
    done = drive(x, packed, sparse, cell, u0, u1, state_a, state_b, out, col, batch_first, order,
                 lens, b_start, reverse, part, parts, flags, first, last, chunk)
    if part == 0 and done:
        spin_until_all(counts, FLAG_STRIDE, parts - 1, window, HANDOFF_SPINS)
    return done


@njit(**JIT)
def forward_range_shares(x, packed, sparse, cell, h0, out, col, h_n, batch_first, order, lens,
                         reverse, bounds, first, last, chunk, counts, claims, finished, number,
                         part):
    """:func:`run_range` for the shares of a batch split that this thread
    claims (.barrier.claim, on ``counts[claims]``, call ``number``): share k
    is samples bounds[k]..bounds[k + 1] (positions in ``order`` and
    ``lens`` when given, else in the batch). Each thread of the call, the
    caller and its helpers (fastrnn._team.Team.share_out), claims shares
    until none is left, so that a helper the machine has not run yet leaves
    its share to a thread that runs; a finished share k says so
    (``counts[finished + k * FLAG_STRIDE] = number``). The caller's thread
    (part 0) then waits, without the GIL, a while for the shares others
    claimed. Returns how many shares this thread ran."""
    shares = bounds.shape[0] - 1
    ran = 0
    while True:
        k = claim(counts, claims, number, shares)
        if k < 0:
            break
        ran += 1
        start, stop = bounds[k], bounds[k + 1]
        if order is None:
            run_range(x, packed, sparse, cell, h0, out, col, h_n, batch_first, order, lens,
                      reverse, start, stop - start, first, last, chunk)
        else:
            run_range(x, packed, sparse, cell, h0, out, col, h_n, batch_first,
                      order[start:stop], lens[start:stop], reverse, 0, stop - start, first,
                      last, chunk)
        store_release(counts, finished + k * FLAG_STRIDE, number)
    if part == 0:
        spin_until_all(counts, finished, shares, number, HANDOFF_SPINS)
    return ran


# Called from Python (and its threads) through a few variants (see
# .jit.FewVariants): x, h0, order and lens are read, of any layout. The
# outputs keep their exact types: fastrnn._numba.forward passes them
# C-contiguous (their stores are then vector stores).
forward_range_call = FewVariants(forward_range, inputs=(0, 4, 9, 10), outputs=())
direct_range_call = FewVariants(direct_range, inputs=(0, 4), outputs=())
direct_stack_call = FewVariants(direct_stack, inputs=(0, 4), outputs=())
forward_range_shares_call = FewVariants(forward_range_shares, inputs=(0, 4, 9, 10), outputs=())
drive_call = FewVariants(drive_part, inputs=(0, 11, 12), outputs=())
