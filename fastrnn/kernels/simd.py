"""SIMD vectors for Numba kernels, as wide as the CPU Numba compiles for.

LLVM's auto-vectoriser keeps a loop's accumulators in memory when the loop
over output units is innermost, and on this CPU it prefers 256-bit vectors.
A register-blocked micro-kernel (several samples times several vectors of
output units, accumulated over the inner dimension) needs its accumulators in
registers, so they are written here as explicit LLVM vector values:
one register each: ``<16 x float>`` on AVX-512, ``<8 x float>`` on AVX2/AVX,
``<4 x float>`` on SSE and NEON. Only what the kernels use is defined: load,
store, broadcast, multiply-add, gather, and a prefetch for writing.

The width is read once from the CPU Numba compiles for (:data:`TARGET`,
which honours ``NUMBA_CPU_NAME``/``NUMBA_CPU_FEATURES``): vectors wider than
the registers are split by LLVM into halves, and a register block sized for
32 AVX-512 registers then spills on AVX2's 16 (405 stack references in the
4 x 4 block against 93: slower than NumPy at every product-bound size).
"""

from __future__ import annotations

import platform
import re
from dataclasses import dataclass

import llvmlite.binding as llvm
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, models, register_model


@dataclass(frozen=True)
class Target:
    """What the CPU that Numba compiles for offers the kernels."""

    name: str  # LLVM's CPU name, e.g. "znver3", "haswell", "x86-64-v2"
    vector_bits: int  # the widest float vector register: 512, 256 or 128
    registers: int  # vector registers: 32 (AVX-512, AArch64) or 16 (x86 otherwise)
    fma: bool  # whether a multiply-add is one instruction (fused)


# A multiply-add of two 16-float vectors, compiled by the target machine
# Numba uses: the registers in its assembly say how wide the vectors are,
# and whether the multiply-add became one instruction says if there is FMA.
_PROBE = """
declare <16 x float> @llvm.fmuladd.v16f32(<16 x float>, <16 x float>, <16 x float>)
define <16 x float> @probe(<16 x float> %a, <16 x float> %b, <16 x float> %c) {
  %r = call <16 x float> @llvm.fmuladd.v16f32(<16 x float> %a, <16 x float> %b, <16 x float> %c)
  ret <16 x float> %r
}
"""


def _probe_target() -> Target:
    # Numba's own target machine: it honours NUMBA_CPU_NAME and
    # NUMBA_CPU_FEATURES (the CPU name alone keeps the host's features).
    from numba.core.registry import cpu_target

    codegen = cpu_target.target_context.codegen()
    module = llvm.parse_assembly(_PROBE)
    module.triple = llvm.get_process_triple()
    assembly = codegen._tm.emit_assembly(module).lower()
    name = codegen._get_host_cpu_name()
    arm = platform.machine().lower() in ("arm64", "aarch64")
    if "zmm" in assembly:
        bits = 512
    elif "ymm" in assembly:
        bits = 256
    else:
        bits = 128
    fused = re.search(r"\bv?fn?madd|\bfmla\b", assembly) is not None
    return Target(name=name, vector_bits=bits, registers=32 if bits == 512 or arm else 16,
                  fma=fused)


TARGET = _probe_target()
VECTOR_BITS = TARGET.vector_bits
# Whether vgather uses the hardware's gather instruction or one scalar load
# per lane. AVX-512 gathers fast enough for sparse weights to pay (AMD Zen 4:
# 1.6 cycles a value; a 1000-unit reservoir at density 0.1 ran 1.85x faster
# sparse than dense in float64). AVX2's did not, on AMD Zen 3, one thread,
# (1, 3000, 1, H) reservoirs at density 0.1 (ms, gather against scalar loads):
# float32 H = 1000 528 against 313, H = 100 11.7 against 7.9; float64
# H = 1000 652 against 211, H = 100 13.9 against 3.9. SSE has no gather.
GATHER = VECTOR_BITS >= 512
VECTOR_BYTES = VECTOR_BITS // 8


class SimdVector(types.Type):
    """A Numba type for an LLVM vector of ``lanes`` values of ``dtype``."""

    def __init__(self, dtype: types.Float) -> None:
        self.dtype = dtype
        self.lanes = VECTOR_BITS // dtype.bitwidth
        super().__init__(name=f"SimdVector({dtype}x{self.lanes})")


@register_model(SimdVector)
class _SimdVectorModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        element = dmm.lookup(fe_type.dtype).get_value_type()
        super().__init__(dmm, fe_type, ir.VectorType(element, fe_type.lanes))


def lanes(dtype) -> int:
    """Values per vector for a NumPy float dtype (on AVX-512: 16 for float32,
    8 for float64)."""
    return VECTOR_BITS // (8 * dtype.itemsize)


def _is_float_matrix(array) -> bool:
    return (isinstance(array, types.Array) and array.ndim == 2 and array.layout == "C"
            and isinstance(array.dtype, types.Float))


def _element_pointer(context, builder, sig, args):
    # Address of array[row, col], computed in place: slicing a row out of the
    # array in a hot loop would cost a reference-count update per slice.
    array_type = sig.args[0]
    array_struct = context.make_array(array_type)(context, builder, args[0])
    indices = [context.cast(builder, value, typ, types.intp)
               for value, typ in zip(args[1:3], sig.args[1:3], strict=True)]
    return cgutils.get_item_pointer(context, builder, array_type, array_struct, indices,
                                    wraparound=False, boundscheck=False)


@intrinsic
def vload(typingctx, array, row, col):
    """``array[row, col:col + lanes]`` as a vector (a C-contiguous 2-D float
    array; the caller guarantees the range is in bounds)."""
    if not _is_float_matrix(array):
        return None
    vector = SimdVector(array.dtype)
    signature = vector(array, types.intp, types.intp)

    def codegen(context, builder, sig, args):
        vector_type = context.get_value_type(sig.return_type)
        pointer = builder.bitcast(_element_pointer(context, builder, sig, args),
                                  vector_type.as_pointer())
        return builder.load(pointer, align=sig.args[0].dtype.bitwidth // 8, typ=vector_type)

    return signature, codegen


@intrinsic
def vstore(typingctx, array, row, col, value):
    """Store ``value`` into ``array[row, col:col + lanes]``."""
    if not (_is_float_matrix(array) and isinstance(value, SimdVector)
            and value.dtype == array.dtype):
        return None
    signature = types.void(array, types.intp, types.intp, value)

    def codegen(context, builder, sig, args):
        pointer = builder.bitcast(_element_pointer(context, builder, sig, args),
                                  args[3].type.as_pointer())
        builder.store(args[3], pointer, align=sig.args[0].dtype.bitwidth // 8)
        return context.get_dummy_value()

    return signature, codegen


@intrinsic
def vsplat(typingctx, scalar):
    """A vector with every lane equal to ``scalar`` (a float32/float64)."""
    if not isinstance(scalar, types.Float):
        return None
    vector = SimdVector(scalar)
    signature = vector(scalar)

    def codegen(context, builder, sig, args):
        vector_type = context.get_value_type(sig.return_type)
        undef = ir.Constant(vector_type, ir.Undefined)
        first = builder.insert_element(undef, args[0], ir.Constant(ir.IntType(32), 0))
        mask = ir.Constant(ir.VectorType(ir.IntType(32), sig.return_type.lanes), None)
        return builder.shuffle_vector(first, undef, mask)

    return signature, codegen


@intrinsic
def vzero(typingctx, like):
    """A zero vector of the element type of ``like``, a float array."""
    if not (isinstance(like, types.Array) and isinstance(like.dtype, types.Float)):
        return None
    vector = SimdVector(like.dtype)
    signature = vector(like)

    def codegen(context, builder, sig, args):
        return ir.Constant(context.get_value_type(sig.return_type), None)

    return signature, codegen


@intrinsic
def vfma(typingctx, a, b, c):
    """``a * b + c`` lane by lane (llvm.fmuladd): one fused instruction where
    the CPU has FMA, a multiply and an add where it has not. (llvm.fma must
    round once: without FMA, LLVM calls libm's scalar fmaf for every lane,
    10-20x slower than NumPy.)"""
    if not (isinstance(a, SimdVector) and a == b == c):
        return None
    signature = a(a, b, c)

    def codegen(context, builder, sig, args):
        vector_type = context.get_value_type(sig.return_type)
        vector = sig.return_type
        name = f"llvm.fmuladd.v{vector.lanes}f{vector.dtype.bitwidth}"
        fma = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(vector_type, [vector_type] * 3), name)
        return builder.call(fma, list(args))

    return signature, codegen


@intrinsic
def vadd(typingctx, a, b):
    """``a + b`` lane by lane."""
    if not (isinstance(a, SimdVector) and a == b):
        return None
    signature = a(a, b)

    def codegen(context, builder, sig, args):
        return builder.fadd(args[0], args[1])

    return signature, codegen


@intrinsic
def vgather(typingctx, values, row, indices, pos):
    """``values[row, indices[pos:pos + lanes]]`` as a vector (llvm.masked.gather,
    AVX-512's vgather): ``values`` a C-contiguous 2-D float array, ``indices``
    a C-contiguous 1-D int32 array; the caller guarantees every index is in
    bounds."""
    if not (_is_float_matrix(values) and isinstance(indices, types.Array)
            and indices.ndim == 1 and indices.layout == "C" and indices.dtype == types.int32):
        return None
    vector = SimdVector(values.dtype)
    signature = vector(values, types.intp, indices, types.intp)

    def codegen(context, builder, sig, args):
        vector_type = context.get_value_type(sig.return_type)
        count = sig.return_type.lanes
        itemsize = sig.args[0].dtype.bitwidth // 8
        intp = context.get_constant(types.intp, 0).type
        row_start = _element_pointer(
            context, builder, types.void(sig.args[0], types.intp, types.intp),
            (args[0], args[1], context.get_constant(types.intp, 0)))
        index_array = context.make_array(sig.args[2])(context, builder, args[2])
        index_pointer = cgutils.get_item_pointer(context, builder, sig.args[2], index_array,
                                                 [args[3]], wraparound=False,
                                                 boundscheck=False)
        int32s = ir.VectorType(ir.IntType(32), count)
        wide = ir.VectorType(intp, count)
        index = builder.load(builder.bitcast(index_pointer, int32s.as_pointer()), align=4)
        # Addresses row_start + index * itemsize, as a vector of pointers.
        undef = ir.Constant(wide, ir.Undefined)
        base = builder.shuffle_vector(
            builder.insert_element(undef, builder.ptrtoint(row_start, intp),
                                   ir.Constant(ir.IntType(32), 0)),
            undef, ir.Constant(ir.VectorType(ir.IntType(32), count), None))
        offsets = builder.mul(builder.sext(index, wide), ir.Constant(wide, [itemsize] * count))
        pointers_type = ir.VectorType(vector_type.element.as_pointer(), count)
        pointers = builder.inttoptr(builder.add(base, offsets), pointers_type)
        if not GATHER:
            # One scalar load per lane, put in place: where the hardware's
            # gather is slow or missing (see GATHER).
            value = ir.Constant(vector_type, ir.Undefined)
            for lane in range(count):
                position = ir.Constant(ir.IntType(32), lane)
                pointer = builder.extract_element(pointers, position)
                value = builder.insert_element(value, builder.load(pointer, align=itemsize),
                                               position)
            return value
        mask = ir.Constant(ir.VectorType(ir.IntType(1), count), [1] * count)
        name = f"llvm.masked.gather.v{count}f{itemsize * 8}.v{count}p0"
        gather = cgutils.get_or_insert_function(
            builder.module,
            ir.FunctionType(vector_type, [pointers_type, ir.IntType(32), mask.type, vector_type]),
            name)
        return builder.call(gather, [pointers, ir.Constant(ir.IntType(32), itemsize), mask,
                                     ir.Constant(vector_type, None)])

    return signature, codegen


def _prefetch(write: int):
    def codegen(context, builder, sig, args):
        pointer = builder.bitcast(_element_pointer(context, builder, sig, args),
                                  ir.IntType(8).as_pointer())
        i32 = ir.IntType(32)
        prefetch = cgutils.get_or_insert_function(
            builder.module,
            ir.FunctionType(ir.VoidType(), [ir.IntType(8).as_pointer(), i32, i32, i32]),
            "llvm.prefetch.p0")
        builder.call(prefetch, [pointer, ir.Constant(i32, write), ir.Constant(i32, 3),
                                ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return codegen


@intrinsic
def prefetch_read(typingctx, array, row, col):
    """Ask for the cache line holding ``array[row, col]`` (a C-contiguous 2-D
    float array) for reading (llvm.prefetch, x86 ``prefetcht0``). A hint: it
    never faults, even past the array's end."""
    if not _is_float_matrix(array):
        return None
    return types.void(array, types.intp, types.intp), _prefetch(0)


@intrinsic
def prefetch_write(typingctx, array, row, col):
    """Ask for the cache line holding ``array[row, col]`` (a C-contiguous 2-D
    float array) for writing (llvm.prefetch, x86 ``prefetchw``): the line is
    fetched, and other cores' copies invalidated, before the stores that need
    it. A hint: it never faults, and does nothing where unsupported."""
    if not _is_float_matrix(array):
        return None
    return types.void(array, types.intp, types.intp), _prefetch(1)
