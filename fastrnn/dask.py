"""fastrnn on Dask arrays: the same forward pass, one task per batch chunk.

An optional extra: ``pip install "fastrnn[dask]"`` (Dask's arrays and
``distributed``). Importing this module does not import Dask; calling
:func:`forward` does, and raises an ImportError naming the extra when Dask is
missing.

Moving a job from a laptop to a cluster::

    from dask.distributed import Client
    client = Client("tcp://scheduler:8786")           # or Client() for a local cluster
    output, h_n = fastrnn.dask.forward(x, w_ih, w_hh)  # x: a dask array chunked on batch
    output, h_n = dask.compute(output, h_n)            # or .to_zarr(...), .persist()

How the work is split
---------------------
Sequences are independent, so each chunk of the batch axis is one task that
runs the same kernel as :func:`fastrnn.forward` over all its time steps, and
that one computation gives both that chunk's output and its h_n (compute the
two together, ``dask.compute(output, h_n)``, or the chunks run twice). The
time and feature axes of ``x`` must each be one chunk: other chunkings are
rechunked, with a :class:`RechunkWarning`. The weights enter the graph once,
as one key that every task depends on (sent once to each worker), not
embedded in every task.

Threads
-------
``threads=None`` (the default) chooses per task: a task running in a worker
thread (of a ``distributed`` worker, or of Dask's default local thread pool)
uses one thread, because that worker already runs one task per thread it was
given (a ``LocalCluster`` gives its workers one thread per core between
them), so more would oversubscribe the cores. A task on the main thread (``scheduler=
"synchronous"``) uses :func:`fastrnn.forward`'s default (``FASTRNN_NUM_THREADS``,
else every core). ``threads=k`` makes every task use at most k threads, e.g.
when each worker has fewer threads than cores.
"""

from __future__ import annotations

import math
import sys
import threading
from typing import Any

import numpy as np

from ._api import run_layer
from ._validate import FLOAT_DTYPES, validate_forward, validate_lengths

__all__ = ["forward", "RechunkWarning"]

INSTALL_HINT = 'pip install "fastrnn[dask]"'


class RechunkWarning(UserWarning):
    """x (or h0, lengths) had to be rechunked: the time and feature axes of x
    must each be a single chunk, the batch axis may be chunked freely."""


def _import_dask() -> tuple[Any, Any]:
    try:
        import dask
        import dask.array as da
    except ImportError as exc:
        raise ImportError(
            f"fastrnn.dask needs Dask, which could not be imported ({exc}); install it with "
            f"`{INSTALL_HINT}` (dask[array] and distributed)"
        ) from exc
    return dask, da


def _is_dask_array(value: Any) -> bool:
    da = sys.modules.get("dask.array")
    return da is not None and isinstance(value, da.Array)


def _stand_in(array: Any) -> np.ndarray:
    """A read-only NumPy array of a dask array's shape and dtype that uses no
    memory (every element is the same zero), for eager validation."""
    return np.broadcast_to(np.zeros((), dtype=array.dtype), array.shape)


def forward(
    x: Any,
    w_ih: Any,
    w_hh: Any,
    b_ih: Any = None,
    b_hh: Any = None,
    h0: Any = None,
    *,
    lengths: Any = None,
    nonlinearity: str = "tanh",
    batch_first: bool = True,
    leak: Any = None,
    return_sequences: bool = True,
    backend: str = "auto",
    threads: int | None = None,
) -> Any:
    """:func:`fastrnn.forward` over a dask array, lazily: each chunk of the
    batch axis is one task running fastrnn's kernel on all its time steps.

    Parameters
    ----------
    x : dask.array.Array, shape (B, T, I) if ``batch_first`` else (T, B, I)
        float32 or float64, with known chunk sizes. Chunk it along the batch
        axis only; a chunked time or feature axis is rechunked to one chunk,
        with a :class:`RechunkWarning`. (For a NumPy array call
        :func:`fastrnn.forward`, or wrap it with ``dask.array.from_array(x,
        chunks=...)``; unbatched 2-D input is not supported here.)
    w_ih, w_hh, b_ih, b_hh, nonlinearity, batch_first, leak, backend
        As for :func:`fastrnn.forward`; NumPy arrays (``w_hh`` may be SciPy
        sparse), validated now, so that a wrong shape or dtype raises here and
        not when the graph runs.
    h0 : NumPy or dask array, shape (B, H), optional
        A NumPy array is validated now and split along the batch chunks; a
        dask array has its shape and dtype checked now and is rechunked to
        the batch chunks of ``x`` (a :class:`RechunkWarning` when they
        differ).
    lengths : NumPy or dask integer array, shape (B,), optional
        As ``h0``. A dask array's values (0 <= length <= T) are checked when
        the graph runs; a bad value raises ValueError then.
    return_sequences : bool
        When False, only h_n is computed and returned.
    threads : int, optional
        The most threads each task uses; None chooses per task (see the
        module's documentation: one thread in a worker thread).

    Returns
    -------
    output : dask array, shape (B, T, H) or (T, B, H), chunked like x
    h_n : dask array, shape (B, H), chunked like x's batch axis
        Lazy; ``dask.compute(output, h_n)`` runs each chunk once for both.
        Only h_n when ``return_sequences`` is False.
    """
    dask, da = _import_dask()

    if not isinstance(x, da.Array):
        raise TypeError(
            f"x must be a dask array, got {type(x).__name__}; for in-memory data call "
            "fastrnn.forward, or wrap it with dask.array.from_array(x, chunks=(batch_chunk, "
            "-1, -1))"
        )
    if x.ndim != 3:
        raise ValueError(
            "x must be a 3-D dask array: (batch, time, input) when batch_first, (time, "
            f"batch, input) otherwise (unbatched input is not supported); got shape {x.shape}"
        )
    if any(math.isnan(size) for size in x.shape):
        raise ValueError(
            f"x must have known chunk sizes, got shape {x.shape}; call x.compute_chunk_sizes() "
            "first"
        )

    h0_is_dask = _is_dask_array(h0)
    lengths_is_dask = _is_dask_array(lengths)
    for name, value in (("w_ih", w_ih), ("w_hh", w_hh), ("b_ih", b_ih), ("b_hh", b_hh),
                        ("leak", leak)):
        if _is_dask_array(value):
            raise TypeError(
                f"{name} must be a NumPy array (the weights are small and sent once to each "
                f"worker), got a dask array; call {name}.compute() first"
            )
    # Every check of fastrnn.forward, on stand-ins of x (and of a dask h0 or
    # lengths) that have their shape and dtype but no data.
    (_, w_ih_v, w_hh_v, b_ih_v, b_hh_v, h0_v, _, relu, batch_first_, _, _, batch, hidden,
     lengths_v, leak_v) = validate_forward(
        _stand_in(x), w_ih, w_hh, b_ih, b_hh, _stand_in(h0) if h0_is_dask else h0,
        nonlinearity, batch_first, None,
        _stand_in(lengths) if lengths_is_dask else lengths, leak, return_sequences, threads)
    # The backend name too, without importing Numba here.
    from ._backends import CHOICES
    if not isinstance(backend, str) or backend not in CHOICES:
        raise ValueError(f"backend must be one of {CHOICES}, got {backend!r}")

    batch_axis, time_axis = (0, 1) if batch_first_ else (1, 0)
    steps = x.shape[time_axis]
    if x.numblocks[time_axis] > 1 or x.numblocks[2] > 1:
        _warn_rechunk(2, f"x of shape {x.shape} has chunks {x.chunksize} (at most) with the "
                      "time and feature axes split; rechunking them to one chunk each (chunk "
                      "x along the batch axis only to avoid this)")
        x = x.rechunk({time_axis: -1, 2: -1})
    batch_chunks = x.chunks[batch_axis]

    h0_arg: Any = None
    if h0_is_dask:
        h0_arg = _aligned(h0, (batch_chunks, (hidden,)), "h0")
    elif h0_v is not None:
        h0_arg = da.from_array(h0_v, chunks=(batch_chunks, (hidden,)))
    lengths_arg: Any = None
    if lengths_is_dask:
        lengths_arg = _aligned(lengths, (batch_chunks,), "lengths")
        lengths_arg = lengths_arg.map_blocks(_checked_lengths, steps, dtype=np.int64,
                                             meta=np.empty((0,), np.int64))
    elif lengths_v is not None:
        lengths_arg = da.from_array(lengths_v, chunks=(batch_chunks,))

    # The weights: one key in the graph, which every task depends on.
    weights = (w_ih_v, w_hh_v, b_ih_v, b_hh_v, leak_v)
    token = dask.base.tokenize(*(_token_parts(w) for w in weights))
    weights_key = dask.delayed(weights, traverse=False, pure=True,
                               name=f"fastrnn-weights-{token}")

    x_index = "bti" if batch_first_ else "tbi"
    arguments: list[Any] = [x, x_index]
    arguments += [h0_arg, "bk"] if h0_arg is not None else [None, None]
    arguments += [lengths_arg, "b"] if lengths_arg is not None else [None, None]
    arguments += [weights_key, None]
    dtype = x.dtype
    options = dict(relu=relu, batch_first=batch_first_, steps=steps, threads=threads,
                   backend=backend)
    if not return_sequences:
        return da.blockwise(_chunk_h_n, "bj", *arguments, new_axes={"j": hidden},
                            concatenate=True, dtype=dtype, meta=np.empty((0, 0), dtype),
                            token="fastrnn-forward", **options)
    # Each task returns one buffer holding its chunk's output and h_n (see
    # _chunk_forward), so that one computation gives both; output and h_n
    # are views of it.
    combined = da.blockwise(_chunk_forward, x_index[:2] + "j", *arguments,
                            new_axes={"j": hidden}, adjust_chunks={"t": lambda n: n + 1},
                            concatenate=True, dtype=dtype, meta=np.empty((0, 0, 0), dtype),
                            token="fastrnn-forward", **options)
    output_chunks = list(combined.chunks)
    output_chunks[time_axis] = (steps,)
    output = combined.map_blocks(_output_part, steps, batch_first_, chunks=tuple(output_chunks),
                                 dtype=dtype, meta=np.empty((0, 0, 0), dtype),
                                 token="fastrnn-output")
    h_n = combined.map_blocks(_h_n_part, steps, batch_first_, drop_axis=time_axis,
                              dtype=dtype, meta=np.empty((0, 0), dtype), token="fastrnn-h_n")
    return output, h_n


def _warn_rechunk(depth: int, message: str) -> None:
    # depth: frames between the caller of forward and this function's caller
    import warnings
    warnings.warn(f"fastrnn.dask.forward: {message}", RechunkWarning, stacklevel=depth + 1)


def _aligned(array: Any, chunks: tuple[tuple[int, ...], ...], name: str) -> Any:
    # A dask h0 or lengths, chunked as x's batch axis (already validated).
    if array.chunks != chunks:
        _warn_rechunk(3, f"{name} has chunks {array.chunks}, rechunking it to x's batch chunks "
                      f"{chunks[0]}")
        array = array.rechunk(chunks)
    return array


def _token_parts(value: Any) -> Any:
    # What identifies a weight for the graph's key: a sparse w_hh by its arrays.
    if value is None or isinstance(value, np.ndarray):
        return value
    return ("csr", value.shape, value.data, value.indices, value.indptr)


def _checked_lengths(block: np.ndarray, steps: int, block_info: Any = None) -> np.ndarray:
    # Values of a dask lengths chunk, checked when the graph runs; an error
    # names the position in the whole array.
    try:
        return validate_lengths(block, block.shape[0], steps)
    except ValueError:
        offset = block_info[0]["array-location"][0][0] if block_info else 0
        bad = int(np.flatnonzero((block < 0) | (block > steps))[0])
        raise ValueError(
            f"lengths must lie in [0, {steps}] (the number of time steps), got "
            f"lengths[{offset + bad}] = {block[bad]}"
        ) from None


def task_threads(threads: int | None) -> int | None:
    """The ``threads`` one task passes to the kernel: ``threads`` when given;
    else 1 in a worker thread (a ``distributed`` worker's, or Dask's local
    thread pool's), which already runs one task per core it was given; else
    None, fastrnn.forward's default (a task on the main thread)."""
    if threads is not None:
        return threads
    if _on_distributed_worker():
        return 1
    if threading.current_thread() is not threading.main_thread():
        return 1
    return None


def _on_distributed_worker() -> bool:
    distributed = sys.modules.get("distributed")
    if distributed is None:  # never imported: not a worker
        return False
    try:
        distributed.get_worker()
    except ValueError:
        return False
    return True


def _run_chunk(x: np.ndarray, h0: np.ndarray | None, lengths: np.ndarray | None,
               weights: tuple[Any, ...], out: np.ndarray | None, h_n: np.ndarray, *,
               relu: bool, batch_first: bool, threads: int | None, backend: str) -> None:
    w_ih, w_hh, b_ih, b_hh, leak = weights
    if x.dtype not in FLOAT_DTYPES:  # a dask array whose meta lied about its dtype
        raise TypeError(f"x chunk has dtype {x.dtype}, not float32 or float64")
    if lengths is not None:
        lengths = np.asarray(lengths, dtype=np.int64)
    run_layer(x, w_ih, w_hh, b_ih, b_hh, h0, out, h_n, relu=relu, batch_first=batch_first,
              lengths=lengths, leak=leak, threads=task_threads(threads), backend=backend)


def _chunk_forward(x: np.ndarray, h0: np.ndarray | None, lengths: np.ndarray | None,
                   weights: tuple[Any, ...], *, relu: bool, batch_first: bool, steps: int,
                   threads: int | None, backend: str) -> np.ndarray:
    # One batch chunk of b sequences: a C-contiguous buffer of b*(T+1)*H
    # values, the output (b, T, H) or (T, b, H) followed by h_n (b, H), both
    # C-contiguous (the kernel's fastest output layout), returned shaped as
    # the graph declares it, (b, T+1, H) or (T+1, b, H). _output_part and
    # _h_n_part read them back; the flat order survives any copy.
    batch = x.shape[0 if batch_first else 1]
    hidden = weights[0].shape[0]
    size = batch * steps * hidden
    buffer = np.empty(size + batch * hidden, x.dtype)
    out_shape = (batch, steps, hidden) if batch_first else (steps, batch, hidden)
    out = buffer[:size].reshape(out_shape)
    h_n = buffer[size:].reshape(batch, hidden)
    _run_chunk(x, h0, lengths, weights, out, h_n, relu=relu, batch_first=batch_first,
               threads=threads, backend=backend)
    if batch_first:
        return buffer.reshape(batch, steps + 1, hidden)
    return buffer.reshape(steps + 1, batch, hidden)


def _output_part(block: np.ndarray, steps: int, batch_first: bool) -> np.ndarray:
    hidden = block.shape[2]
    batch = block.shape[0 if batch_first else 1]
    shape = (batch, steps, hidden) if batch_first else (steps, batch, hidden)
    return block.reshape(-1)[:batch * steps * hidden].reshape(shape)


def _h_n_part(block: np.ndarray, steps: int, batch_first: bool) -> np.ndarray:
    hidden = block.shape[2]
    batch = block.shape[0 if batch_first else 1]
    return block.reshape(-1)[batch * steps * hidden:].reshape(batch, hidden)


def _chunk_h_n(x: np.ndarray, h0: np.ndarray | None, lengths: np.ndarray | None,
               weights: tuple[Any, ...], *, relu: bool, batch_first: bool, steps: int,
               threads: int | None, backend: str) -> np.ndarray:
    batch = x.shape[0 if batch_first else 1]
    h_n = np.empty((batch, weights[0].shape[0]), x.dtype)
    _run_chunk(x, h0, lengths, weights, None, h_n, relu=relu, batch_first=batch_first,
               threads=threads, backend=backend)
    return h_n
