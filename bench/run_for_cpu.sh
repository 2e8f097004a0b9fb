#!/bin/sh
# Run the pytest-benchmark suite with fastrnn compiled for another CPU.
#
#   bench/run_for_cpu.sh NAME [pytest arguments]
#   bench/run_for_cpu.sh haswell --benchmark-json=haswell.json bench/test_forward_bench.py
#
# NAME is a Numba CPU name of fastrnn.benchmark.CPU_TARGETS (haswell, x86-64-v3,
# skylake-avx512, x86-64-v4, nehalem, x86-64-v2; `python -m fastrnn bench --help`
# lists them with their kernels). pytest runs with --benchmark-only and:
#   NUMBA_CPU_NAME=NAME
#   NUMBA_CPU_FEATURES=""          (with the name alone Numba keeps this CPU's features)
#   NUMBA_CACHE_DIR=<a fresh temporary folder, removed afterwards>
#   OPENBLAS_CORETYPE, MKL_ENABLE_INSTRUCTIONS, ONEDNN_MAX_CPU_ISA
#                                  the peers' BLAS held to the matching kernels
#                                  (haswell: Haswell/AVX2/AVX2; x86-64-v2: Nehalem/
#                                  SSE4_2/SSE41; skylake-avx512: SkylakeX/AVX512/AVX512_CORE)
#   XLA_FLAGS                      its flags, then --xla_cpu_max_isa=AVX2 (SSE4_2, AVX512):
#                                  JAX's own code (its dots, YNNPACK's, ignore it)
# Setting those variables by hand before `pytest --benchmark-only` does the same.
set -eu
if [ $# -lt 1 ]; then
    echo "usage: bench/run_for_cpu.sh NAME [pytest arguments]" >&2
    exit 2
fi
PYTHON=${PYTHON:-python}
exec "$PYTHON" -c '
import sys
from fastrnn.benchmark import CPU_TARGETS, run_for_cpu
name = sys.argv[1]
if name not in CPU_TARGETS:
    sys.exit("run_for_cpu.sh: unknown CPU %r; known: %s" % (name, ", ".join(CPU_TARGETS)))
sys.exit(run_for_cpu(name, [sys.executable, "-m", "pytest", "--benchmark-only", *sys.argv[2:]]))
' "$@"
