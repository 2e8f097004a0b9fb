"""fastrnn.RNN against torch.nn.RNN: a (B, T, I, H) = (64, 200, 128, 128)
float32 model, 2 layers, bidirectional, same weights, NumPy in and out.

Three pytest-benchmark groups:

* ``rnn f32 B=64 T=200 I=128 H=128 L=2 bidir``: every sequence full length;
  fastrnn's two backends and torch (``no_grad``, input tensor made once,
  outside the timed call).
* ``... bidir, random lengths``: lengths uniform in 1..T (seeded); fastrnn
  with ``lengths=`` against torch on the packed batch. A torch user must pack,
  so ``pack_padded_sequence`` is inside torch's timed call ("torch-packed");
  "torch-packed+pad" also pads the output back to (B, T, 2H), the shape fastrnn
  returns.
* ``rnn fastrnn-numba: full vs random lengths``: the same model with and
  without lengths; the work is proportional to sum(lengths), about half of
  B * T here.

Each test runs its call once untimed (compilation, thread start-up) and checks
the output against torch's on the same input before timing, so a wrong
answer is never timed. Rounds are planned to fill about
``--benchmark-max-time`` seconds (default 1 s). Skipped unless
``pytest --benchmark-only``; about 15 s in all on a quiet 2-core machine.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable

import numpy as np
import pytest

import fastrnn

BATCH, STEPS, INPUT, HIDDEN = 64, 200, 128, 128
LAYERS = 2
TOLERANCE = 1e-4  # float32, 2 layers of 200 steps, against torch's float32
MIN_ROUND_TIME = 100e-6  # seconds: shorter calls are repeated within a round
SHAPE = f"B={BATCH} T={STEPS} I={INPUT} H={HIDDEN} L={LAYERS} bidir"
GROUP_FULL = f"rnn f32 {SHAPE}"
GROUP_LENGTHS = f"rnn f32 {SHAPE}, random lengths"
GROUP_SAVING = f"rnn fastrnn-numba: full vs random lengths, f32 {SHAPE}"


@functools.lru_cache(maxsize=1)
def problem() -> tuple[fastrnn.RNN, np.ndarray, np.ndarray]:
    """The seeded model, input and lengths (uniform in 1..T)."""
    rnn = fastrnn.RNN(INPUT, HIDDEN, num_layers=LAYERS, bidirectional=True, seed=0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((BATCH, STEPS, INPUT), dtype=np.float32)
    lengths = rng.integers(1, STEPS + 1, BATCH)
    for array in (x, lengths):
        array.setflags(write=False)
    return rnn, x, lengths


@functools.lru_cache(maxsize=1)
def torch_model():
    import torch

    rnn, _, _ = problem()
    model = torch.nn.RNN(INPUT, HIDDEN, num_layers=LAYERS, bidirectional=True,
                         batch_first=True)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in rnn.state_dict().items()})
    return model.eval()


def fastrnn_call(backend: str, with_lengths: bool) -> Callable[[], np.ndarray]:
    rnn, x, lengths = problem()
    given = lengths if with_lengths else None

    def run() -> np.ndarray:
        return rnn(x, lengths=given, backend=backend)[0]

    return run


def torch_call(packed: bool, pad: bool) -> Callable[[], np.ndarray]:
    import torch
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    model = torch_model()
    _, x, lengths = problem()
    xt = torch.from_numpy(x.copy())  # prepared once, outside the timed call
    lengths_t = torch.from_numpy(lengths.copy())

    def run_padded() -> np.ndarray:
        with torch.no_grad():
            return model(xt)[0].numpy()

    def run_packed():
        with torch.no_grad():
            output, _ = model(pack_padded_sequence(xt, lengths_t, batch_first=True,
                                                   enforce_sorted=False))
            if not pad:
                return output  # a PackedSequence
            return pad_packed_sequence(output, batch_first=True, total_length=STEPS)[0].numpy()

    return run_packed if packed else run_padded


@functools.lru_cache(maxsize=2)
def expected(with_lengths: bool) -> np.ndarray:
    """torch's output for the problem (zeros past each length), or fastrnn's
    NumPy backend's where torch is missing (tests/test_rnn.py checks it
    against torch)."""
    try:
        import torch  # noqa: F401
    except ImportError:
        return fastrnn_call("numpy", with_lengths)()
    return torch_call(packed=with_lengths, pad=True)()


# (group, implementation name, with lengths, callable factory); "torch*" need torch.
CASES: list[tuple[str, str, bool, Callable[[], Callable[[], object]]]] = [
    (GROUP_FULL, "fastrnn-numba", False, lambda: fastrnn_call("numba", False)),
    (GROUP_FULL, "fastrnn-numpy", False, lambda: fastrnn_call("numpy", False)),
    (GROUP_FULL, "torch", False, lambda: torch_call(packed=False, pad=False)),
    (GROUP_LENGTHS, "fastrnn-numba", True, lambda: fastrnn_call("numba", True)),
    (GROUP_LENGTHS, "fastrnn-numpy", True, lambda: fastrnn_call("numpy", True)),
    (GROUP_LENGTHS, "torch-packed", True, lambda: torch_call(packed=True, pad=False)),
    (GROUP_LENGTHS, "torch-packed+pad", True, lambda: torch_call(packed=True, pad=True)),
    (GROUP_SAVING, "fastrnn-numba", False, lambda: fastrnn_call("numba", False)),
    (GROUP_SAVING, "fastrnn-numba-lengths", True, lambda: fastrnn_call("numba", True)),
]
IDS = {GROUP_FULL: "full", GROUP_LENGTHS: "lengths", GROUP_SAVING: "saving"}


def seconds_per_call(run: Callable[[], object]) -> float:
    """Median time of one call, from calls filling at least ~20 ms."""
    times: list[float] = []
    while sum(times) < 0.02 or len(times) < 3:
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


@pytest.mark.parametrize(("group", "name", "with_lengths", "factory"),
                         [pytest.param(*case, id=f"{IDS[case[0]]}-{case[1]}") for case in CASES])
def test_rnn(benchmark, request, group: str, name: str, with_lengths: bool,
             factory: Callable[[], Callable[[], object]]) -> None:
    if name.startswith("torch"):
        pytest.importorskip("torch")
    benchmark.group = group
    run = factory()

    # Warm-up (compilation, thread start-up) and correctness, both untimed.
    output = run()
    if isinstance(output, np.ndarray):
        reference = expected(with_lengths)
        assert output.shape == reference.shape and output.dtype == np.float32
        np.testing.assert_allclose(output, reference, rtol=TOLERANCE, atol=TOLERANCE,
                                   err_msg=f"{name} disagrees with torch")
    del output

    per_call = seconds_per_call(run)
    iterations = max(1, math.ceil(MIN_ROUND_TIME / per_call))
    max_time = float(request.config.getoption("benchmark_max_time"))
    min_rounds = int(request.config.getoption("benchmark_min_rounds"))
    rounds = max(min_rounds, round(max_time / (per_call * iterations)))
    _, _, lengths = problem()
    benchmark.extra_info.update(
        impl=name, dtype="f32", B=BATCH, T=STEPS, I=INPUT, H=HIDDEN, layers=LAYERS,
        bidirectional=True,
        steps_run=int(lengths.sum()) if with_lengths else BATCH * STEPS,
    )
    benchmark.pedantic(run, rounds=rounds, iterations=iterations, warmup_rounds=0)
