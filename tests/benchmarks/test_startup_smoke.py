"""The start-up benchmark (``benchmarks/startup/run.py``) on one process, one interpreter per variant, so that
it does not rot between full runs. No timing is asserted: each variant must run and be reported."""

from benchmarks.startup import run as startup


def test_the_start_up_benchmark_measures_both_variants_and_reports() -> None:
    process = "BFF worker (app built)"
    samples = startup.measure(1, {process: startup.PROCESSES[process]})
    assert set(samples) == {(process, variant) for variant in startup.VARIANTS}
    assert all(len(runs) == 1 and runs[0].wall_s > 0 and runs[0].cpu_s > 0 for runs in samples.values())
    text = startup.report(samples, 1, 1.0, "smoke")
    assert text.count(f"| {process} |") == 3  # a row per variant, and the saving
