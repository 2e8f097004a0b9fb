"""A step barrier between threads running compiled (nogil) Numba code.

Numba has no atomics; these intrinsics emit LLVM's: an acquire load and a
release store of one int64 in an array (on x86 plain moves, but the compiler
may then neither cache the load in a register nor move the state's stores
past the flag's), the CPU's spin-wait hint, and ``sched_yield``.

:func:`wait_all` is the barrier: thread ``p`` publishes how many steps it has
finished in ``flags[p * FLAG_STRIDE]`` (one cache line each, so that threads
do not invalidate each other's line while spinning) and waits until every
thread has reached the step it needs. After ``SPINS_BEFORE_YIELD`` checks it
yields its core at every check, so that a machine with more runnable threads
than cores (another process, two concurrent callers) still makes progress.
``flags[parts * FLAG_STRIDE]`` is an abort flag: set by a thread that failed,
it makes the others return instead of waiting forever.

:func:`spin_until` is the hand-off between calls (fastrnn._team): a thread
that has finished its share of a call, or is about to be given one, spins a
bounded while on a counter before it blocks on a queue, whose wake-up took
tens of microseconds. :func:`claim` hands out a call's shares to the threads
that come for them (the batch split: fastrnn._team.Team.share_out).
"""

from __future__ import annotations

import platform

from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from .jit import KERNEL_JIT

FLAG_STRIDE = 8  # int64s per flag: one 64-byte cache line
SPINS_BEFORE_YIELD = 2000
# Checks a thread makes of a hand-off count before it gives up spinning (see
# spin_until): about 0.1 ms.
HANDOFF_SPINS = 4000
_X86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")


def _is_int64_vector(array) -> bool:
    return (isinstance(array, types.Array) and array.ndim == 1 and array.layout == "C"
            and array.dtype == types.int64)


def _pointer(context, builder, sig, args):
    array_struct = context.make_array(sig.args[0])(context, builder, args[0])
    index = context.cast(builder, args[1], sig.args[1], types.intp)
    return cgutils.get_item_pointer(context, builder, sig.args[0], array_struct, [index],
                                    wraparound=False, boundscheck=False)


@intrinsic
def load_acquire(typingctx, array, index):
    """``array[index]`` (a C-contiguous int64 vector), an atomic acquire load."""
    if not _is_int64_vector(array):
        return None
    signature = types.int64(array, types.intp)

    def codegen(context, builder, sig, args):
        return builder.load_atomic(_pointer(context, builder, sig, args), "acquire", 8)

    return signature, codegen


@intrinsic
def store_release(typingctx, array, index, value):
    """``array[index] = value`` (an int64 vector), an atomic release store."""
    if not (_is_int64_vector(array) and isinstance(value, types.Integer)):
        return None
    signature = types.void(array, types.intp, types.int64)

    def codegen(context, builder, sig, args):
        value = context.cast(builder, args[2], sig.args[2], types.int64)
        builder.store_atomic(value, _pointer(context, builder, sig, args), "release", 8)
        return context.get_dummy_value()

    return signature, codegen


@intrinsic
def compare_exchange(typingctx, array, index, expected, desired):
    """If ``array[index]`` (a C-contiguous int64 vector) is ``expected``,
    make it ``desired``, atomically; whether it did."""
    if not (_is_int64_vector(array) and isinstance(expected, types.Integer)
            and isinstance(desired, types.Integer)):
        return None
    signature = types.boolean(array, types.intp, types.int64, types.int64)

    def codegen(context, builder, sig, args):
        pointer = _pointer(context, builder, sig, args)
        old = context.cast(builder, args[2], sig.args[2], types.int64)
        new = context.cast(builder, args[3], sig.args[3], types.int64)
        pair = builder.cmpxchg(pointer, old, new, "acq_rel", "acquire")
        return builder.extract_value(pair, 1)

    return signature, codegen


@intrinsic
def spin_hint(typingctx):
    """The CPU's spin-wait hint (x86 ``pause``); nothing elsewhere."""
    signature = types.void()

    def codegen(context, builder, sig, args):
        if _X86:
            pause = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(ir.VoidType(), []), "llvm.x86.sse2.pause")
            builder.call(pause, [])
        return context.get_dummy_value()

    return signature, codegen


@intrinsic
def yield_core(typingctx):
    """``sched_yield()``: let another runnable thread have this core."""
    signature = types.void()

    def codegen(context, builder, sig, args):
        function = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.IntType(32), []), "sched_yield")
        builder.call(function, [])
        return context.get_dummy_value()

    return signature, codegen


@njit(**KERNEL_JIT)
def wait_all(flags, parts, target):
    """Wait until every thread's flag is at least ``target``; False if a
    thread aborted meanwhile."""
    abort = parts * FLAG_STRIDE
    spins = 0
    for p in range(parts):
        while load_acquire(flags, p * FLAG_STRIDE) < target:
            if load_acquire(flags, abort) != 0:
                return False
            spins += 1
            if spins < SPINS_BEFORE_YIELD:
                spin_hint()
            else:
                yield_core()
    return True


@njit(**KERNEL_JIT)
def spin_until(flags, index, target, spins):
    """Whether ``flags[index]`` reached ``target`` within ``spins`` checks
    (spin-wait hints between them). Called from Python: the GIL is
    released meanwhile."""
    for _ in range(spins):
        if load_acquire(flags, index) >= target:
            return True
        spin_hint()
    return load_acquire(flags, index) >= target


@njit(**KERNEL_JIT)
def spin_until_all(flags, first, count, target, spins):
    """:func:`spin_until` for ``count`` counts, ``flags[first + p *
    FLAG_STRIDE]`` for p < count; whether they all reached ``target``."""
    for p in range(count):
        index = first + p * FLAG_STRIDE
        if not spin_until(flags, index, target, spins):
            return False
    return True


# A call's shares are claimed from one count, ``number * MAX_SHARES + the
# shares claimed``: a thread that comes late to a call (the machine gave
# its core to another process meanwhile) claims none, and one that comes
# with a later call's count claims none of that call's either.
MAX_SHARES = 1024


@njit(**KERNEL_JIT)
def claim(counts, index, number, shares):
    """The next share (0..shares-1) of call ``number`` not yet claimed
    (``counts[index]``, see MAX_SHARES), claimed for this thread; -1 when
    every share is claimed or the count is another call's."""
    base = number * MAX_SHARES
    while True:
        seen = load_acquire(counts, index)
        taken = seen - base
        if taken < 0 or taken >= shares:
            return -1
        if compare_exchange(counts, index, seen, seen + 1):
            return taken


@njit(**KERNEL_JIT)
def close_claims(counts, index, number, shares):
    """Claim every share of call ``number`` still unclaimed, for no thread
    (none will run it); returns how many had been claimed before."""
    base = number * MAX_SHARES
    while True:
        seen = load_acquire(counts, index)
        taken = seen - base
        if taken < 0 or taken >= shares:
            return shares
        if compare_exchange(counts, index, seen, base + shares):
            return taken
