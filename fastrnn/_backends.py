"""The explicit table of backends, and how "auto" chooses among them."""

from __future__ import annotations

import importlib
import threading
import warnings
from collections.abc import Callable
from typing import Any

from ._plan import SMALL_MAX_HIDDEN

# forward(x, w_ih, w_hh, b_ih, b_hh, h0, out, h_n, relu, batch_first): see _numpy.forward
BackendForward = Callable[..., None]

# name -> module defining ``forward``; imported on first use so that
# ``import fastrnn`` never imports Numba.
BACKENDS = {
    "numba": "fastrnn._numba",
    "numpy": "fastrnn._numpy",
}
CHOICES = ("auto",) + tuple(BACKENDS)

# name -> the functions of its module that run the plain call of one small
# sequence, where it has them (see get_small); their limit is
# fastrnn._plan.SMALL_MAX_HIDDEN.
SMALL_KERNELS = {
    "numba": ("forward_small", "forward_small_call"),
}

_loaded: dict[str, BackendForward] = {}
# backend (as the caller names it, "auto" included) -> get_small's answer
_small: dict[str, tuple[BackendForward, int, BackendForward] | None] = {}
_UNKNOWN: Any = object()  # a backend not in _small yet
_numba_missing: str | None = None  # why "auto" fell back, once known
_auto_lock = threading.Lock()


def _load(name: str) -> BackendForward:
    module = importlib.import_module(BACKENDS[name])
    _loaded[name] = module.forward
    return module.forward


def get_backend(backend: str) -> BackendForward:
    """The forward function of ``backend``; raises for unknown names."""
    found = _loaded.get(backend) if isinstance(backend, str) else None
    if found is not None:
        return found
    if backend == "auto":
        # Locked: threads making their first call at once resolve "auto"
        # (and warn about a missing Numba) once.
        with _auto_lock:
            found = _loaded.get("auto")
            if found is None:
                found = _loaded["auto"] = _auto()
        return found
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ValueError(f"backend must be one of {CHOICES}, got {backend!r}")
    if backend == "numba":
        try:
            return _load("numba")
        except ImportError as exc:
            raise ImportError(
                f"backend='numba' needs Numba, which could not be imported ({exc}); "
                "install it with `pip install numba`, or use backend='numpy'"
            ) from exc
    return _load(backend)


def get_small(backend: str) -> tuple[BackendForward, int, BackendForward] | None:
    """``(forward_small, max_hidden, compiling)`` of ``backend``'s module,
    when it has a kernel of its own for the plain call of one sequence (B =
    1) of at most ``max_hidden`` units: ``forward_small(x, w_ih, w_hh, b_ih,
    b_hh, out, h_n, relu)``, x (1, T, I), no h0, every other option at its
    default, which raises TypeError for argument types it has no compiled
    variant for; ``compiling`` takes the same arguments and compiles that
    variant. None otherwise (then ``get_backend(backend)`` runs it)."""
    # Only a str can name a backend (and a list, say, cannot be hashed):
    # anything else goes on to get_backend's ValueError.
    found = _small.get(backend, _UNKNOWN) if isinstance(backend, str) else _UNKNOWN
    if found is not _UNKNOWN:
        return found
    get_backend(backend)  # checks the name, imports the module, resolves "auto"
    name = auto_backend_name() if backend == "auto" else backend
    kernels = SMALL_KERNELS.get(name)
    if kernels is not None:
        module = importlib.import_module(BACKENDS[name])
        found = (getattr(module, kernels[0]), SMALL_MAX_HIDDEN, getattr(module, kernels[1]))
    else:
        found = None
    _small[backend] = found  # the same answer whichever thread writes it
    return found


def _auto() -> BackendForward:
    global _numba_missing
    try:
        return _load("numba")
    except ImportError as exc:
        _numba_missing = str(exc)
        warnings.warn(
            f"fastrnn: Numba could not be imported ({exc}); backend='auto' uses "
            "the slower NumPy backend. Install numba for the compiled kernels.",
            RuntimeWarning,
            stacklevel=4,
        )
        return _load("numpy")


def auto_backend_name() -> str:
    """Which backend "auto" resolves to (importing Numba if needed)."""
    get_backend("auto")
    return "numpy" if _numba_missing is not None else "numba"
