"""How every kernel is compiled: Numba's settings, its on-disk cache keyed
to the whole source of this subpackage, and :class:`FewVariants`.

Numba keys a cached function to its own source file: a kernel in
``driver.py`` that inlines helpers from ``product.py``, ``simd.py`` or
``activations.py`` was loaded from the cache unchanged after those helpers
were edited (stale kernels, silently). The locators here are Numba's own
(``NUMBA_CACHE_DIR``, the package's ``__pycache__``, the user's cache
folder, in Numba's order), with one difference: for a function defined in
this folder, the source stamp is the hash of every ``.py`` file in it
(:data:`KERNEL_MODULES`), so editing any of them recompiles every kernel.
Functions elsewhere keep Numba's behaviour. Every kernel module imports this
one first, so the locators are in place before anything is compiled.
"""

from __future__ import annotations

import hashlib
import os
import threading
import warnings
from typing import Any

from numba import njit, types
from numba.core import caching
from numba.extending import intrinsic

HERE = os.path.dirname(os.path.abspath(__file__))
# Every module that defines or inlines compiled code: this folder's.
KERNEL_MODULES = tuple(sorted(name for name in os.listdir(HERE) if name.endswith(".py")))
_hashes: dict[tuple, str] = {}


def sources_stamp(folder: str = HERE, names: tuple[str, ...] = KERNEL_MODULES) -> str:
    """A SHA-256 of the kernel modules' contents (read again only when a
    file's modification time or size has changed)."""
    paths = [os.path.join(folder, name) for name in names]
    key = tuple((path, os.stat(path).st_mtime_ns, os.stat(path).st_size) for path in paths)
    stamp = _hashes.get(key)
    if stamp is None:
        digest = hashlib.sha256()
        for path in paths:
            with open(path, "rb") as handle:
                digest.update(handle.read())
        stamp = _hashes[key] = digest.hexdigest()
    return stamp


def _ours(py_file: str) -> bool:
    return os.path.dirname(os.path.abspath(py_file)) == HERE


class _WholeSource:
    # Mixed in before one of Numba's source-file locators.
    def get_source_stamp(self) -> Any:
        return sources_stamp()

    @classmethod
    def from_function(cls, py_func: Any, py_file: str) -> Any:
        if not _ours(py_file):
            return None
        return super().from_function(py_func, py_file)  # type: ignore[misc]


class UserProvidedLocator(_WholeSource, caching.UserProvidedCacheLocator):
    """NUMBA_CACHE_DIR."""


class InTreeLocator(_WholeSource, caching.InTreeCacheLocator):
    """The package's __pycache__."""


class UserWideLocator(_WholeSource, caching.UserWideCacheLocator):
    """The user's cache folder."""


LOCATORS = (UserProvidedLocator, InTreeLocator, UserWideLocator)


def install() -> bool:
    """Put the locators first in Numba's list (once). False where this Numba
    keeps the list elsewhere (its caching is then Numba's own)."""
    impl = getattr(caching, "CacheImpl", None) or getattr(caching, "_CacheImpl", None)
    classes = getattr(impl, "_locator_classes", None)
    if not isinstance(classes, list):
        return False
    if classes[:len(LOCATORS)] != list(LOCATORS):
        classes[:0] = list(LOCATORS)
    return True


install()


def _cache_available() -> bool:
    # njit(cache=True) raises at decoration when Numba finds no folder it may
    # write its cache to (this package's __pycache__, NUMBA_CACHE_DIR, the
    # user's cache folder): then compile in every process rather than fail.
    try:
        njit(cache=True)(_cache_available)
    except RuntimeError as exc:
        warnings.warn(
            f"fastrnn: Numba cannot cache compiled kernels ({exc}); they will be compiled "
            "again in every process. Point NUMBA_CACHE_DIR at a writable folder to cache them.",
            RuntimeWarning,
            stacklevel=2,
        )
        return False
    return True


# "contract" lets LLVM fuse multiply-adds. Nothing that assumes finite
# values ("nnan", "ninf") or reorders sums ("reassoc") is enabled, so NaN and
# inf propagate as IEEE arithmetic does.
JIT: dict[str, Any] = dict(cache=_cache_available(), nogil=True, error_model="numpy",
                           fastmath={"contract"})
# The product kernels allocate nothing, so they are compiled without Numba's
# reference counting (_nrt=False): otherwise every array passed between these
# small functions costs atomic increments and decrements in the hot loop.
KERNEL_JIT: dict[str, Any] = dict(JIT, _nrt=False)


class FewVariants:
    """Calls a compiled function through a few compiled variants.

    Numba compiles a new variant of a function for every combination of
    argument types it is called with, and an array's type includes its
    layout (C, Fortran, any) and whether it is read-only: the test suite
    once held 117 variants of the old ``_numba._forward_range``, each compiled for
    seconds, and a user's first call with a Fortran-ordered or read-only
    ``x`` compiled again. Here the arrays at the ``inputs`` positions are
    compiled as read-only arrays of any layout, and those at ``outputs`` as
    writeable arrays of any layout, so one variant serves every layout;
    the rest (None or an array, scalars, packed buffers) keep their types.
    Calls go straight to Numba's dispatcher, with its compilation disabled
    so that it converts the arguments to a compiled variant's types; a call
    that none accepts compiles the variant for its types.
    """

    def __init__(self, dispatcher: Any, inputs: tuple[int, ...], outputs: tuple[int, ...]):
        self.dispatcher = dispatcher
        self.relaxed = {**{i: True for i in inputs}, **{i: False for i in outputs}}
        self._lock = threading.Lock()
        self._compiled = False  # (the dispatcher's `signatures` is slow to read)
        if hasattr(os, "register_at_fork"):
            # A child forked while another thread compiled has the lock held
            # by a thread it does not have: it gets a lock of its own.
            os.register_at_fork(after_in_child=self._new_lock)
        # Where the dispatcher would compile for the exact types (another
        # thread's call while compile_for lets it compile), it compiles the
        # variant instead.
        dispatcher._compile_for_args = lambda *args: self.compile_for(args)

    def _new_lock(self) -> None:
        self._lock = threading.Lock()

    def __call__(self, *args: Any) -> Any:
        if self._compiled:
            try:
                return self.dispatcher(*args)
            except TypeError:  # no compiled variant takes these types
                pass
        self.compile_for(args)
        return self.dispatcher(*args)

    def variant_types(self, args: tuple) -> tuple:
        """The argument types of the variant that serves ``args``."""
        kinds = []
        for position, value in enumerate(args):
            kind = self.dispatcher.typeof_pyval(value)
            readonly = self.relaxed.get(position)
            if readonly is not None and isinstance(kind, types.Array):
                kind = kind.copy(layout="A", readonly=readonly or not kind.mutable)
            kinds.append(kind)
        return tuple(kinds)

    def compile_for(self, args: tuple) -> Any:
        """Compile (or load from the cache) the variant that serves ``args``;
        returns it."""
        with self._lock:
            self.dispatcher._can_compile = True
            try:
                variant = self.dispatcher.compile(self.variant_types(args))
                self._compiled = True
                return variant
            finally:
                # Disabled: the dispatcher converts arguments to compiled
                # variants (a C array is an array of any layout) instead of
                # compiling one for their exact types.
                self.dispatcher._can_compile = False


@intrinsic
def c_view(typingctx, array):
    """``array`` typed as C-contiguous (the same data, shape and strides).
    Only for an array that :func:`is_c_contiguous` accepts: a C-typed
    array's elements are addressed from its shape alone."""
    if not isinstance(array, types.Array):
        return None
    result = array.copy(layout="C")

    def codegen(context, builder, sig, args):
        # Every layout has the same data model: the same struct, retyped.
        if context.enable_nrt:
            context.nrt.incref(builder, sig.return_type, args[0])
        return args[0]

    return result(array), codegen


@njit(**dict(KERNEL_JIT, inline="always"))
def is_c_contiguous(array):
    """Whether ``array``'s strides are exactly those of a C-ordered array of
    its shape (a size-1 axis with another stride says no: the caller then
    takes its any-layout path, which is only slower)."""
    stride = array.itemsize
    for axis in range(array.ndim - 1, -1, -1):
        if array.strides[axis] != stride:
            return False
        stride *= array.shape[axis]
    return True
