"""float32 error of fastrnn and of PyTorch against a float64 reference.

    python -m bench.accuracy                   # every size of `python -m fastrnn bench`
    python -m bench.accuracy --sizes 1,10,4,8 32,50,1024,1024 --seeds 3

For each (B, T, I, H): seeded inputs x ~ U(-1, 1), w_ih and the biases drawn
as PyTorch initialises them (U(-1/sqrt(H), 1/sqrt(H))), w_hh ~ N(0, 1/H)
rescaled to spectral radius 0.9. The reference is the float64 forward pass of
fastrnn's NumPy backend on the same (float32) values upcast to float64; its own
error (about 1e-15) is far below float32's. Reported: the largest absolute
error over the whole output of fastrnn float32 (Numba backend, default
threads and one thread) and of ``torch.nn.RNN`` float32, and the ratio
fastrnn / torch. Issue 13's target: ratio <= 1.5 at every size.
"""

from __future__ import annotations

import argparse
import math

import numpy as np

import fastrnn
from fastrnn.benchmark import SIZES


def make_inputs(size: tuple[int, int, int, int], seed: int, radius: float = 0.9
                ) -> tuple[np.ndarray, ...]:
    """float32 (x, w_ih, w_hh, b_ih, b_hh) for ``size`` = (B, T, I, H), w_hh
    scaled to spectral radius ``radius``."""
    batch, steps, inputs, hidden = size
    rng = np.random.default_rng(seed)
    bound = 1.0 / math.sqrt(hidden)
    x = rng.uniform(-1.0, 1.0, (batch, steps, inputs))
    w_ih = rng.uniform(-bound, bound, (hidden, inputs))
    w_hh = rng.standard_normal((hidden, hidden)) / math.sqrt(hidden)
    w_hh *= radius / np.max(np.abs(np.linalg.eigvals(w_hh)))
    b_ih = rng.uniform(-bound, bound, hidden)
    b_hh = rng.uniform(-bound, bound, hidden)
    return tuple(a.astype(np.float32) for a in (x, w_ih, w_hh, b_ih, b_hh))


def reference(arrays: tuple[np.ndarray, ...]) -> np.ndarray:
    """The float64 output (B, T, H) for float32 ``arrays`` upcast exactly."""
    out, _ = fastrnn.forward(*(a.astype(np.float64) for a in arrays), backend="numpy")
    return out


def torch_output(arrays: tuple[np.ndarray, ...]) -> np.ndarray:
    """``torch.nn.RNN``'s float32 output for the same arrays."""
    import torch

    x, w_ih, w_hh, b_ih, b_hh = arrays
    rnn = torch.nn.RNN(w_ih.shape[1], w_ih.shape[0], batch_first=True)
    with torch.no_grad():
        for name, value in (("weight_ih_l0", w_ih), ("weight_hh_l0", w_hh),
                            ("bias_ih_l0", b_ih), ("bias_hh_l0", b_hh)):
            getattr(rnn, name).copy_(torch.from_numpy(value))
        out, _ = rnn(torch.from_numpy(x))
    return out.numpy()


def errors(size: tuple[int, int, int, int], seed: int) -> dict[str, float]:
    """Largest absolute errors against the float64 reference at one size."""
    arrays = make_inputs(size, seed)
    ref = reference(arrays)
    result = {
        "fastrnn": float(np.max(np.abs(fastrnn.forward(*arrays)[0] - ref))),
        "fastrnn_1t": float(np.max(np.abs(fastrnn.forward(*arrays, threads=1)[0] - ref))),
    }
    try:
        result["torch"] = float(np.max(np.abs(torch_output(arrays) - ref)))
    except ImportError:
        result["torch"] = math.nan
    return result


def _size(text: str) -> tuple[int, int, int, int]:
    parts = tuple(int(p) for p in text.split(","))
    if len(parts) != 4:
        raise argparse.ArgumentTypeError(f"a size is B,T,I,H; got {text!r}")
    return parts  # type: ignore[return-value]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=_size, nargs="+", default=SIZES,
                        help="sizes B,T,I,H (default: the bench grid)")
    parser.add_argument("--seeds", type=int, default=1,
                        help="seeds per size; the largest error over them is reported")
    args = parser.parse_args(argv)
    print(f"{'(B, T, I, H)':>24} {'fastrnn':>9} {'1 thread':>9} {'torch':>9} {'ratio':>6}")
    for size in args.sizes:
        worst: dict[str, float] = {}
        for seed in range(args.seeds):
            for key, value in errors(size, seed).items():
                worst[key] = max(worst.get(key, 0.0), value)
        ratio = max(worst["fastrnn"], worst["fastrnn_1t"]) / worst["torch"]
        print(f"{str(size):>24} {worst['fastrnn']:9.2e} {worst['fastrnn_1t']:9.2e} "
              f"{worst['torch']:9.2e} {ratio:6.2f}", flush=True)


if __name__ == "__main__":
    main()
