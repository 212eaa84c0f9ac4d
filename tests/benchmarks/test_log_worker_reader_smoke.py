"""The log worker's reader benchmark (``benchmarks/inference_logging/reader.py``) on small messages: the three
readers read them into the same rows and the report holds a line per size. No timing is asserted."""

from benchmarks.inference_logging import reader


def test_reader_benchmark_compares_the_readers_and_reports():
    readings = reader.measure((1, 20), rounds=2, repeats=2)
    assert [r.records for r in readings] == [1, 20]
    assert all(r.blocks_ms > 0 and r.lines_ms > 0 and r.model_ms > 0 for r in readings)
    # Columns are smaller than a JSON object per record.
    assert all(r.blocks_bytes < r.lines_bytes for r in readings)
    text = reader.report(readings, 2, 2, 0.0, "smoke")
    assert "| 20 |" in text
