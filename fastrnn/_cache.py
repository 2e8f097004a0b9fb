"""Numba's on-disk cache, keyed to the source of every kernel module.

Numba keys a cached function to its own source file: a kernel in
``_numba.py`` that inlines helpers from ``_gemm.py``, ``_simd.py`` or
``_activations.py`` was loaded from the cache unchanged after those helpers
were edited (stale kernels, silently). The locators here are Numba's own
(``NUMBA_CACHE_DIR``, the package's ``__pycache__``, the user's cache
folder, in Numba's order), with one difference: for a function of this
package, the source stamp is the hash of all of :data:`KERNEL_MODULES`, so
editing any of them recompiles every kernel. Functions elsewhere keep
Numba's behaviour. Imported by ``_gemm`` before anything is compiled.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

from numba.core import caching

HERE = os.path.dirname(os.path.abspath(__file__))
# Every module that defines or inlines compiled code.
KERNEL_MODULES = ("_activations.py", "_simd.py", "_gemm.py", "_sync.py", "_step.py",
                  "_numba.py", "_units.py", "_cache.py")
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
