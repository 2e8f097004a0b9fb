"""Dask figures for the README: one batch in memory, Dask's threaded
scheduler, and a 2-worker LocalCluster (one thread each).

    python bench/dask_figures.py [B T I H]
"""

import statistics
import sys
import time

import dask
import dask.array as da
import numpy as np
from distributed import Client, LocalCluster, wait

import fastrnn
import fastrnn.dask as fdask


def timed(fn, repeat=5):
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main():
    B, T, I_, H = map(int, sys.argv[1:5]) if len(sys.argv) > 4 else (512, 200, 32, 64)
    chunk = B // 4
    rng = np.random.default_rng(0)
    x = rng.standard_normal((B, T, I_), dtype=np.float32)
    w_ih = (rng.standard_normal((H, I_)) / np.sqrt(I_)).astype(np.float32)
    w_hh = (rng.standard_normal((H, H)) / np.sqrt(H)).astype(np.float32)
    print(f"B={B} T={T} I={I_} H={H} float32, chunks of {chunk}; median ms of 5")
    print("in-memory fastrnn.forward (default threads)",
          round(timed(lambda: fastrnn.forward(x, w_ih, w_hh)), 1))
    print("in-memory fastrnn.forward threads=1",
          round(timed(lambda: fastrnn.forward(x, w_ih, w_hh, threads=1)), 1))
    xd = da.from_array(x, chunks=(chunk, -1, -1))
    print("dask threaded scheduler, compute(output, h_n)",
          round(timed(lambda: dask.compute(*fdask.forward(xd, w_ih, w_hh),
                                           scheduler="threads")), 1))
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        print("LocalCluster 2x1: x from client, compute(output, h_n) gathered",
              round(timed(lambda: client.compute(list(fdask.forward(xd, w_ih, w_hh)),
                                                 sync=True)), 1))
        xw = da.random.default_rng(0).standard_normal((B, T, I_), chunks=(chunk, -1, -1),
                                                     dtype=np.float32)
        xw = xw.persist()
        wait(xw)

        variants = iter([w_ih * (1 + 1e-6 * k) for k in range(1, 100)])

        def on_workers():  # new weights each time: the keys are deterministic
            output, h_n = fdask.forward(xw, next(variants), w_hh)
            persisted = client.persist([output, h_n])
            wait(persisted)

        print("LocalCluster 2x1: x already on workers, persist(output, h_n)",
              round(timed(on_workers), 1))
        print("LocalCluster 2x1: x already on workers, h_n only gathered",
              round(timed(lambda: fdask.forward(xw, next(variants), w_hh,
                                                return_sequences=False).compute()), 1))


if __name__ == "__main__":
    main()
