"""fastrnn.benchmark's own logic: the peers' factories against the reference,
the interleaved rounds, the busy-run flag, the --cpu environment and the
busy-mode load. No timing figure is asserted: these run on shared machines."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from fastrnn import benchmark
from fastrnn.__main__ import main as cli_main
from fastrnn.benchmark import (
    CHECK_STEPS,
    CHUNK_IMPLEMENTATIONS,
    IMPLEMENTATIONS,
    ONE_CALL,
    QUICK_STEP_SIZES,
    REFERENCE,
    STEP_IMPLEMENTATIONS,
    STEPS_PER_SAMPLE,
    TOLERANCE,
    background_load,
    checked_chunks,
    checked_step,
    cpu_environment,
    format_table,
    interleaved_rounds,
    make_problem,
    noise_reasons,
    spread,
    start_load,
    step_reference,
    stop_load,
)


def _pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


# --- the peers ---------------------------------------------------------------


@pytest.mark.parametrize("name", ["onnxruntime", "openvino"])
@pytest.mark.parametrize("size", [(1, 10, 4, 8), (3, 7, 5, 6)])
def test_peer_agrees_with_the_reference(name, size):
    impl = IMPLEMENTATIONS[name]
    for module in impl.requires:
        pytest.importorskip(module)
    problem = make_problem(*size, np.float32, seed=3)
    originals = [array.copy() for array in problem]
    output = impl.factory(*problem)()
    expected = IMPLEMENTATIONS[REFERENCE].factory(*problem)()
    assert output.shape == expected.shape and output.dtype == np.float32
    np.testing.assert_allclose(output, expected, rtol=TOLERANCE["float32"],
                               atol=TOLERANCE["float32"])
    for original, array in zip(originals, problem, strict=True):
        np.testing.assert_array_equal(original, array)  # the caller's arrays untouched


@pytest.mark.parametrize(("name", "message"), [("onnxruntime", "float32 only"),
                                               ("openvino", "computes in float32")])
def test_peer_refuses_float64(name, message):
    impl = IMPLEMENTATIONS[name]
    for module in impl.requires:
        pytest.importorskip(module)
    assert impl.dtypes == ("float32",) and impl.reservoir is None
    with pytest.raises(ValueError, match=message):
        impl.factory(*make_problem(1, 3, 2, 4, np.float64))


@pytest.mark.parametrize("name", ["onnxruntime", "openvino"])
def test_peer_refuses_a_leak(name):
    impl = IMPLEMENTATIONS[name]
    for module in impl.requires:
        pytest.importorskip(module)
    with pytest.raises(ValueError, match="no leak"):
        impl.factory(*make_problem(1, 3, 2, 4, np.float32), leak=0.5)


def test_available_needs_every_module(monkeypatch):
    monkeypatch.setitem(IMPLEMENTATIONS, "needs-two", benchmark.Impl(
        IMPLEMENTATIONS[REFERENCE].factory, requires=("numpy", "no_such_module_fastrnn")))
    assert not benchmark.available("needs-two")
    assert benchmark.available(REFERENCE)


# --- interleaved rounds and the busy flag --------------------------------------


def test_interleaved_rounds_call_everyone_every_round_in_rotated_order():
    calls: list[str] = []

    def runner(name):
        def run():
            calls.append(name)
            return np.zeros(1)
        return run

    runs = {name: runner(name) for name in ("a", "b", "c")}
    # One call per round each, each after settle().
    timed = interleaved_rounds(runs, budget=0.0, rounds=4,
                               settle=lambda: calls.append("settle"))
    assert calls == [call for name in "abcbcacababc" for call in ("settle", name)]
    for name, (medians, fastest, count) in timed.items():
        assert len(medians) == 4 and count == 4, name
        assert 0 <= fastest <= min(medians)


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="reads /proc/self/task")
def test_quiesce_waits_for_this_process_s_other_threads_to_stop():
    # As a peer's thread pool spins a while after its last call.
    stop = time.perf_counter() + 0.2
    spinner = threading.Thread(target=lambda: [None for _ in iter(
        lambda: time.perf_counter() < stop, False)])
    spinner.start()
    waited = benchmark.quiesce(quiet=0.02, most=2.0)
    spinner.join()
    assert 0.15 <= waited < 1.0, waited
    assert benchmark.quiesce(quiet=0.02, most=2.0) < 0.5  # (nothing spins now)


def test_spread():
    assert spread([2.0, 2.0, 2.0]) == 0.0
    assert spread([1.0, 2.0, 3.0]) == pytest.approx(1.0)
    assert spread([0.0, 0.0]) == 0.0


def test_noise_reasons_quiet_run():
    rates = {"float32": 190e9, "float64": 100e9}
    steady = {"float32": 185e9, "float64": 104e9}  # within 15%
    spreads = [0.02, 0.05, 0.3] + [0.01] * 17  # one wide figure of 20: 5%
    assert noise_reasons(rates, steady, spreads, others_cpu=0.03) == []
    assert noise_reasons(rates, steady, spreads, others_cpu=None) == []


def test_noise_reasons_flags_a_rate_drop():
    reasons = noise_reasons({"float32": 190e9}, {"float32": 43e9}, [0.01], 0.0)
    assert len(reasons) == 1 and "float32 matmul rate went from 190 to 43" in reasons[0]


def test_noise_reasons_flags_spread_and_others():
    spreads = [0.5, 0.4, 0.3] + [0.01] * 7  # 3 of 10 wide
    reasons = noise_reasons({"float64": 1e11}, {"float64": 1e11}, spreads, others_cpu=0.45)
    assert len(reasons) == 2
    assert "3 of 10 figures varied" in reasons[0]
    assert "other processes used 45%" in reasons[1]


def _synthetic_report(noise: list[str]) -> dict:
    results = []
    for impl, seconds in (("fastrnn-numba", 1e-3), ("torch", 3e-3), ("onnxruntime", 2e-3)):
        results.append({"dtype": "float32", "kind": "dense", "size": [1, 10, 4, 8],
                        "flops": 2 * 10 * 8 * 12, "impl": impl, "median_s": seconds,
                        "min_s": seconds, "low_s": seconds * 0.9, "high_s": seconds * 1.1,
                        "spread": 0.2, "round_medians_s": [seconds] * 3, "calls": 3})
    return {"matmul_flops_per_s": {"float32": 1e11}, "matmul_flops_per_s_end": {"float32": 1e11},
            "rounds": 3, "others_cpu": 0.0, "noise": noise, "results": results}


def test_format_table_quiet_run_has_ratios_and_notes():
    table = format_table(_synthetic_report([]))
    assert "WARNING" not in table
    assert "| torch / fastrnn | onnxruntime / fastrnn |" in table
    assert "| 3.00x | 2.00x |" in table
    assert "1,000.0 ±10%" in table
    assert IMPLEMENTATIONS["onnxruntime"].note in table


def test_format_table_busy_run_withholds_ratios():
    table = format_table(_synthetic_report(["other processes used 80% of the CPU"]))
    assert table.startswith("**WARNING: the machine was busy")
    assert "other processes used 80% of the CPU" in table
    assert "/ fastrnn" not in table and "3.00x" not in table and "of matmul rate" not in table


@pytest.mark.parametrize("noise", [[], ["busy"]])
def test_plot_writes_a_png(tmp_path, noise):
    pytest.importorskip("matplotlib")
    report = _synthetic_report(noise)
    reservoir = dict(report["results"][0], kind="reservoir", size=[1, 100, 1, 10],
                     label="leak 0.3, sparse 0.1")
    report["results"].append(reservoir)
    path = tmp_path / "bench.png"
    assert benchmark.plot(report, str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --- --cpu -------------------------------------------------------------------


@pytest.mark.parametrize(("name", "openblas", "xla"), [
    ("haswell", "Haswell", "AVX2"), ("x86-64-v2", "Nehalem", "SSE4_2"),
    ("nehalem", "Nehalem", "SSE4_2"), ("skylake-avx512", "SkylakeX", "AVX512")])
def test_cpu_environment(name, openblas, xla, monkeypatch):
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    env = cpu_environment(name, "/tmp/cache")
    assert env["NUMBA_CPU_NAME"] == name
    assert env["NUMBA_CPU_FEATURES"] == ""  # the name alone keeps this CPU's features
    assert env["NUMBA_CACHE_DIR"] == "/tmp/cache"
    assert env["OPENBLAS_CORETYPE"] == openblas
    assert env["XLA_FLAGS"] == f"--xla_cpu_max_isa={xla}"


def test_cpu_environment_keeps_the_xla_flags_given(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
    env = cpu_environment("haswell", "/tmp/cache")
    assert env["XLA_FLAGS"] == ("--xla_force_host_platform_device_count=2 "
                                "--xla_cpu_max_isa=AVX2")


def test_cpu_environment_refuses_an_unknown_name():
    with pytest.raises(ValueError, match=r"cpu must be one of haswell, .*got 'pentium'"):
        cpu_environment("pentium", "/tmp/cache")


def test_bench_cli_refuses_an_unknown_cpu(capsys):
    with pytest.raises(SystemExit) as exc:
        cli_main(["bench", "--cpu", "pentium"])
    assert exc.value.code == 2
    assert "--cpu: unknown target 'pentium'; known: haswell" in capsys.readouterr().err


def test_run_for_cpu_sets_the_environment_and_removes_its_cache(tmp_path):
    out = tmp_path / "env.txt"
    script = ("import os, sys\n"
              "names = ('NUMBA_CPU_NAME', 'NUMBA_CPU_FEATURES', 'OPENBLAS_CORETYPE', "
              "'NUMBA_CACHE_DIR', 'EXTRA')\n"
              "open(sys.argv[1], 'w').write('\\n'.join(repr(os.environ.get(n)) "
              "for n in names))\n")
    status = benchmark.run_for_cpu("haswell", [sys.executable, "-c", script, str(out)],
                                   extra_env={"EXTRA": "1"})
    assert status == 0
    cpu, features, coretype, cache, extra = (eval(line) for line in
                                             out.read_text().splitlines())
    assert (cpu, features, coretype, extra) == ("haswell", "", "Haswell", "1")
    assert "fastrnn-numba-haswell-" in cache and not Path(cache).exists()


# --- --busy ------------------------------------------------------------------


def test_load_processes_are_killed():
    processes = start_load(2, seconds=60)
    pids = [process.pid for process in processes]
    assert all(process.poll() is None for process in processes)
    stop_load(processes)
    assert all(_pid_gone(pid) for pid in pids)


def test_background_load_is_killed_when_the_body_raises():
    pids = []
    with pytest.raises(KeyboardInterrupt), background_load(1, seconds=60) as processes:
        pids = [process.pid for process in processes]
        raise KeyboardInterrupt
    assert pids and all(_pid_gone(pid) for pid in pids)


def test_load_process_stops_itself_after_its_limit():
    (process,) = start_load(1, seconds=0.2)
    try:
        assert process.wait(timeout=30) == 0
    finally:
        stop_load([process])


@pytest.mark.parametrize(("processes", "seconds", "message"), [
    (0, 10, "processes must be a positive integer, got 0"),
    (True, 10, "processes must be a positive integer"),
    (1, 0, "seconds must be positive, got 0"),
])
def test_start_load_refuses_bad_arguments(processes, seconds, message):
    with pytest.raises(ValueError, match=message):
        start_load(processes, seconds)


def test_busy_mode_runs_and_records_its_load(tmp_path, capsys):
    """A one-size report in busy mode: the load is announced, recorded in the
    JSON and gone afterwards; the table either has ratios or the warning."""
    json_path, plot_path = tmp_path / "b.json", tmp_path / "b.png"
    status = cli_main(["bench", "--sizes", "1,5,2,3", "--dtype", "float32", "--budget",
                       "0.01", "--rounds", "2", "--only", "fastrnn-numba,fastrnn-numpy",
                       "--busy", "1", "--busy-limit", "120",
                       "--json", str(json_path), "--plot", str(plot_path)])
    assert status == 0
    printed = capsys.readouterr().out
    assert "busy-machine mode: 1 busy-looping process(es)" in printed
    report = json.loads(json_path.read_text())
    busy = report["busy_mode"]
    assert busy["processes"] == 1 and busy["limit_s"] == 120
    assert all(_pid_gone(pid) for pid in busy["pids"])
    assert ("/ fastrnn" in printed) != bool(report["noise"])
    assert {r["impl"] for r in report["results"]} == {"fastrnn-numba", "fastrnn-numpy"}
    assert all(len(r["round_medians_s"]) == 2 for r in report["results"])


def test_bench_cli_refuses_an_unknown_implementation(capsys):
    with pytest.raises(SystemExit):
        cli_main(["bench", "--only", "fastrnn-numba,tensorflow"])
    assert "--only: unknown implementation 'tensorflow'; known: fastrnn-numba" in (
        capsys.readouterr().err)


def test_help_is_plain_text(capsys):
    for argv in (["--help"], ["bench", "--help"]):
        with pytest.raises(SystemExit):
            cli_main(argv)
        text = capsys.readouterr().out
        assert "``" not in text and ":func:" not in text
    assert "--busy N" in text and "haswell" in text and "OpenBLAS Haswell" in text


def test_time_call_respects_min_calls():
    count = []
    median, fastest, calls = benchmark.time_call(lambda: count.append(1), 0.0, min_calls=1)
    assert calls == len(count) == 1 and fastest == median >= 0
    start = time.perf_counter()
    _, _, calls = benchmark.time_call(lambda: None, 0.0)
    assert calls == 3 and time.perf_counter() - start < 5



# --- the step and chunk call patterns -------------------------------------------


def _requires(impl) -> None:
    for module in impl.requires:
        pytest.importorskip(module)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", list(STEP_IMPLEMENTATIONS))
def test_step_implementation_agrees_with_forward(name, dtype):
    """Every step implementation, stepped, gives fastrnn.forward's states; its
    state carries on from call to call; the problem's arrays are untouched."""
    impl = STEP_IMPLEMENTATIONS[name]
    _requires(impl)
    problem = make_problem(2, 30, 3, 5, np.dtype(dtype), seed=4)
    originals = [array.copy() for array in problem]
    if dtype not in impl.dtypes:
        with pytest.raises(ValueError, match="float32"):
            impl.factory(*problem)
        return
    run, max_abs_diff = checked_step(name, problem, steps=CHECK_STEPS)
    assert max_abs_diff <= TOLERANCE[dtype]
    for _ in range(5):  # carried on: the state after CHECK_STEPS + 5 steps
        state = run()
    assert state.shape == (2, 5) and state.dtype == np.dtype(dtype)
    np.testing.assert_allclose(state, step_reference(problem, CHECK_STEPS + 5),
                               rtol=TOLERANCE[dtype], atol=TOLERANCE[dtype])
    for original, array in zip(originals, problem, strict=True):
        np.testing.assert_array_equal(original, array)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", list(CHUNK_IMPLEMENTATIONS))
def test_chunk_implementation_agrees_with_forward(name, dtype):
    """Every chunk implementation streams the whole sequence (the last chunk
    shorter) to fastrnn.forward's final state, and each call starts afresh."""
    impl = CHUNK_IMPLEMENTATIONS[name]
    _requires(impl)
    problem = make_problem(2, 250, 3, 5, np.dtype(dtype), seed=5)
    originals = [array.copy() for array in problem]
    run, max_abs_diff = checked_chunks(name, problem, chunk=100)
    assert max_abs_diff <= TOLERANCE[dtype]
    again = run()
    assert again.shape == (2, 5) and again.dtype == np.dtype(dtype)
    np.testing.assert_allclose(again, step_reference(problem, 250), rtol=TOLERANCE[dtype],
                               atol=TOLERANCE[dtype])
    for original, array in zip(originals, problem, strict=True):
        np.testing.assert_array_equal(original, array)


def test_pattern_checks_catch_a_wrong_implementation(monkeypatch):
    def factory(x, w_ih, w_hh, b_ih, b_hh, chunk=None):
        state = np.zeros((x.shape[0], w_ih.shape[0]), x.dtype)
        return lambda: state  # never steps

    monkeypatch.setitem(STEP_IMPLEMENTATIONS, "stuck", benchmark.PatternImpl(factory))
    monkeypatch.setitem(CHUNK_IMPLEMENTATIONS, "stuck", benchmark.PatternImpl(factory))
    problem = make_problem(1, 30, 3, 5, np.float64, seed=6)
    with pytest.raises(AssertionError, match="stuck's steps disagree with fastrnn.forward"):
        checked_step("stuck", problem)
    with pytest.raises(AssertionError, match="stuck's chunks disagree with fastrnn.forward"):
        checked_chunks("stuck", problem, chunk=10)
    with pytest.raises(ValueError, match="steps must be at most x's 30 time steps, got 31"):
        checked_step(REFERENCE, problem, steps=31)


def test_step_sample_runs_its_steps():
    calls = []
    sample = benchmark.step_sample(lambda: calls.append(1) or np.zeros(1), steps=7)
    sample()
    assert len(calls) == 7


def _pattern_result(kind, impl, size, seconds, **extra):
    return {"dtype": "float32", "kind": kind, "size": list(size), "impl": impl,
            "median_s": seconds, "min_s": seconds, "low_s": seconds, "high_s": seconds * 1.2,
            "spread": 0.2, "round_medians_s": [seconds] * 3, "calls": 300, **extra}


def _pattern_report(noise: list[str]) -> dict:
    results = [_pattern_result("step", impl, (1, 16, 8), seconds, steps_per_sample=100)
               for impl, seconds in (("fastrnn-numba", 1e-6), ("numpy-loop", 4e-6),
                                     ("torch", 2.5e-5))]
    results += [_pattern_result("chunk", impl, (1, 10000, 16, 64), seconds, chunk=100)
                for impl, seconds in (("fastrnn-numba", 0.011), (ONE_CALL, 0.010),
                                      ("jax", 0.033))]
    return {"matmul_flops_per_s": {"float32": 1e11}, "matmul_flops_per_s_end": {"float32": 1e11},
            "rounds": 3, "others_cpu": 0.0, "noise": noise, "results": results}


def test_format_table_step_and_chunk_tables():
    table = format_table(_pattern_report([]))
    assert "| dtype | B, T, I, H | fastrnn-numba (us) |" not in table  # no forward case
    assert ("| dtype | B, I, H | fastrnn-numba (us/step) | numpy-loop (us/step) | "
            "torch (us/step) | numpy-loop / fastrnn | torch / fastrnn |") in table
    assert "| float32 | 1, 16, 8 | 1.00 ±10% | 4.00 ±10% | 25.00 ±10% | 4.00x | 25.00x |" in table
    assert (f"| dtype | B, T, I, H | fastrnn-numba (ms) | {ONE_CALL} (ms) | jax (ms) | "
            "jax / fastrnn | fastrnn chunked / one call |") in table
    assert ("| float32 | 1, 10000, 16, 64 | 11.00 ±10% | 10.00 ±10% | 33.00 ±10% | 3.00x | "
            "1.10x |") in table
    assert benchmark.STEP_NOTE in table and benchmark.CHUNK_NOTE in table
    assert STEP_IMPLEMENTATIONS["numpy-loop"].note in table
    assert table.index("**Step") < table.index("**Chunk")


def test_format_table_patterns_busy_run_withholds_ratios():
    table = format_table(_pattern_report(["other processes used 80% of the CPU"]))
    assert table.startswith("**WARNING: the machine was busy")
    assert "1.00 ±10%" in table and "11.00 ±10%" in table
    assert "/ fastrnn" not in table and "one call |" not in table and "25.00x" not in table


def test_format_table_keeps_forward_and_patterns_apart(tmp_path):
    report = _synthetic_report([])
    report["results"] += _pattern_report([])["results"]
    table = format_table(report)
    forward, patterns = table.split("**Step", 1)
    assert "1, 10, 4, 8" in forward and "1, 16, 8" not in forward
    assert "1, 10, 4, 8" not in patterns and "1, 16, 8" in patterns
    assert "| 3.00x | 2.00x |" in forward  # the forward ratios are unchanged
    pytest.importorskip("matplotlib")
    assert benchmark.plot(report, str(tmp_path / "b.png"))  # the forward cases only
    assert not benchmark.plot(_pattern_report([]), str(tmp_path / "none.png"))


def test_run_report_times_the_patterns_per_step_and_per_stream():
    report = benchmark.run_report(
        [], ["float32"], [], budget=0.02, matmul_sizes=(64,), rounds=2,
        step_sizes=[(1, 3, 4)], chunk_sizes=[(2, 250, 3, 4)],
        step_names=["fastrnn-numba", "numpy-loop"], chunk_names=["fastrnn-numba", ONE_CALL])
    by_kind: dict[str, list[dict]] = {}
    for result in report["results"]:
        by_kind.setdefault(result["kind"], []).append(result)
    assert sorted(by_kind) == ["chunk", "step"]
    assert [r["impl"] for r in by_kind["step"]] == ["fastrnn-numba", "numpy-loop"]
    assert [r["impl"] for r in by_kind["chunk"]] == ["fastrnn-numba", ONE_CALL]
    for result in by_kind["step"]:
        assert result["size"] == [1, 3, 4] and result["steps_per_sample"] == STEPS_PER_SAMPLE
        assert result["calls"] % STEPS_PER_SAMPLE == 0 and len(result["round_medians_s"]) == 2
        assert 0 < result["min_s"] <= result["median_s"] <= result["high_s"]
    for result in by_kind["chunk"]:
        assert result["size"] == [2, 250, 3, 4] and result["chunk"] == benchmark.CHUNK
        assert result["max_abs_diff"] <= TOLERANCE["float32"]
    table = format_table(report)
    assert "**Step" in table and "**Chunk" in table


def test_bench_cli_refuses_an_unknown_pattern(capsys):
    with pytest.raises(SystemExit):
        cli_main(["bench", "--patterns", "forward,stream"])
    assert "--patterns: unknown pattern 'stream'; known: forward, step, chunk" in (
        capsys.readouterr().err)


def test_bench_cli_knows_the_pattern_implementations(tmp_path, capsys):
    """--only accepts a name of the step registry alone; --patterns step runs
    the quick step sizes and nothing else."""
    json_path = tmp_path / "s.json"
    status = cli_main(["bench", "--quick", "--patterns", "step", "--rounds", "1",
                       "--only", "numpy-loop", "--json", str(json_path),
                       "--plot", str(tmp_path / "s.png")])
    assert status == 0
    printed = capsys.readouterr().out
    assert "plot: skipped (no forward case)" in printed
    report = json.loads(json_path.read_text())
    assert {(r["kind"], r["impl"]) for r in report["results"]} == {("step", "numpy-loop")}
    assert [r["size"] for r in report["results"]] == [list(s) for s in QUICK_STEP_SIZES]
