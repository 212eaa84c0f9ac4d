"""The BFF's on-disk spool: FIFO order across segments and restarts, crash in the middle of a segment
(torn last frame, a process killed while appending), corruption, disk failure, ownership, the size
limit and the count of records waiting."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import bff.spool as spool_module
from bff.spool import Spool, SpoolLockedError
from mlops_common.settings import REPO_ROOT


def drain(spool: Spool, chunk: int = 7) -> list[bytes]:
    out: list[bytes] = []
    while spool.has_pending():
        batch = spool.read(chunk)
        out.extend(batch.payloads)
        spool.commit(batch)
    return out


def segments(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.glob("*.seg"))


def payloads(n: int, start: int = 0) -> list[bytes]:
    return [f"record-{i:05d}".encode() * (1 + i % 3) for i in range(start, start + n)]


def test_records_come_out_in_append_order_across_segments(tmp_path):
    spool = Spool(tmp_path, segment_max_bytes=1024)
    expected: list[bytes] = []
    out: list[bytes] = []
    # Interleave appends (some in bulk) with partial reads and commits.
    for round_ in range(20):
        batch_in = payloads(1 + round_ % 5 * 7, start=len(expected))
        spool.append(batch_in)
        expected += batch_in
        batch = spool.read(5)
        out += batch.payloads
        spool.commit(batch)
    assert len(segments(tmp_path)) > 1
    out += drain(spool)
    assert out == expected
    assert spool.pending_bytes == 0
    spool.close()
    # Everything handed on: the segments are gone.
    assert segments(tmp_path) == []


def test_reading_does_not_consume_until_commit(tmp_path):
    spool = Spool(tmp_path)
    spool.append(payloads(10))
    assert spool.read(4).payloads == payloads(4)
    assert spool.read(4).payloads == payloads(4)
    spool.commit(spool.read(4))
    assert spool.read(100).payloads == payloads(6, start=4)


def test_a_restarted_process_resumes_at_the_committed_cursor(tmp_path):
    spool = Spool(tmp_path, segment_max_bytes=256)
    spool.append(payloads(30))
    spool.commit(spool.read(12))
    spool.read(5)  # read but never committed: must come again
    spool.close()

    reopened = Spool(tmp_path, segment_max_bytes=256)
    reopened.append(payloads(5, start=30))  # new records go after the old ones
    assert drain(reopened) == payloads(23, start=12)
    reopened.close()


def frame_bounds(path: Path) -> list[int]:
    data = path.read_bytes()
    bounds, pos = [0], 0
    while pos < len(data):
        length = int.from_bytes(data[pos : pos + 4], "little")
        pos += 8 + length
        bounds.append(pos)
    return bounds


def test_a_torn_last_frame_is_skipped_at_every_cut_point(tmp_path):
    source = tmp_path / "source"
    spool = Spool(source)
    spool.append(payloads(4))
    spool.close()
    [segment] = segments(source)
    data = (source / segment).read_bytes()
    last_frame_start = frame_bounds(source / segment)[-2]

    for cut in range(last_frame_start + 1, len(data)):
        directory = tmp_path / f"cut-{cut}"
        directory.mkdir()
        (directory / segment).write_bytes(data[:cut])
        crashed = Spool(directory)
        assert crashed.pending_records == 3, cut
        batch = crashed.read(100)
        assert batch.payloads == payloads(3), cut
        assert batch.torn_bytes == cut - last_frame_start
        assert batch.corrupt == 0
        crashed.commit(batch)
        # Appends after the crash go to a fresh segment and come out after the survivors.
        crashed.append([b"after"])
        assert drain(crashed) == [b"after"]
        crashed.close()


def test_a_process_killed_while_appending_leaves_a_readable_prefix(tmp_path):
    code = textwrap.dedent(
        """
        import sys
        from bff.spool import Spool
        spool = Spool(sys.argv[1], segment_max_bytes=64 * 1024)
        i = 0
        while True:
            spool.append([f"{n:08d}".encode() * 20 for n in range(i, i + 10)])
            i += 10
            if i == 5000:
                print("ready", flush=True)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "services")}
    child = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], env=env, stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == b"ready\n"
        time.sleep(0.2)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()

    spool = Spool(tmp_path, segment_max_bytes=64 * 1024)
    out = drain(spool, chunk=1000)
    assert len(out) >= 5000
    # Exactly the records appended before the kill, in order, nothing invented or reordered.
    assert out == [f"{n:08d}".encode() * 20 for n in range(len(out))]
    spool.close()


def test_a_corrupt_frame_is_counted_and_skipped(tmp_path):
    spool = Spool(tmp_path)
    spool.append(payloads(5))
    spool.close()
    [segment] = segments(tmp_path)
    path = tmp_path / segment
    data = bytearray(path.read_bytes())
    data[frame_bounds(path)[2] + 9] ^= 0xFF  # a payload byte of the third record
    path.write_bytes(bytes(data))

    reopened = Spool(tmp_path)
    assert reopened.pending_records == 5  # headers only: the bad checksum shows when it is read
    batch = reopened.read(100)
    assert batch.payloads == [p for i, p in enumerate(payloads(5)) if i != 2]
    assert batch.corrupt == 1
    reopened.commit(batch)
    assert reopened.pending_records == 0
    reopened.close()


def test_a_failed_write_leaves_the_spool_readable(tmp_path, monkeypatch):
    spool = Spool(tmp_path)
    spool.append(payloads(3))
    real_write = os.write

    def half_then_enospc(fd: int, data) -> int:
        # Half the frame reaches the file, then the disk is full.
        if fd == spool._fd:
            real_write(fd, bytes(data[: len(data) // 2]))
            raise OSError(28, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(spool_module.os, "write", half_then_enospc)
    with pytest.raises(OSError, match="No space"):
        spool.append([b"lost"])
    monkeypatch.undo()

    spool.append([b"after"])
    assert drain(spool) == [*payloads(3), b"after"]
    spool.close()
    assert Spool(tmp_path).read(10).payloads == []


def test_one_process_per_spool_and_free_slots(tmp_path):
    first = Spool.open_slot(tmp_path)
    with pytest.raises(SpoolLockedError):
        Spool(first.directory)
    second = Spool.open_slot(tmp_path)
    assert (first.directory.name, second.directory.name) == ("slot-0", "slot-1")
    first.append([b"from slot 0"])
    first.close()
    # A restarted process takes the free slot, and with it what was left there.
    adopted = Spool.open_slot(tmp_path)
    assert adopted.directory.name == "slot-0"
    assert drain(adopted) == [b"from slot 0"]
    adopted.close()
    second.close()


def test_closed_spool_refuses_appends(tmp_path):
    spool = Spool(tmp_path)
    spool.close()
    with pytest.raises(OSError, match="closed"):
        spool.append([b"late"])


def disk_usage(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.glob("*.seg"))


def test_pending_records_follow_appends_commits_and_restarts(tmp_path):
    spool = Spool(tmp_path, segment_max_bytes=256)
    for start in range(0, 30, 5):
        spool.append(payloads(5, start=start))
    assert spool.pending_records == 30
    spool.commit(spool.read(12))
    spool.read(5)  # read, not committed: still pending
    assert spool.pending_records == 18
    spool.close()

    reopened = Spool(tmp_path, segment_max_bytes=256)
    assert len(segments(tmp_path)) > 1
    assert reopened.pending_records == 18  # counted from the files, across segments, from the cursor
    reopened.append(payloads(2, start=30))
    assert reopened.pending_records == 20
    assert len(drain(reopened)) == 20
    assert reopened.pending_records == 0
    reopened.close()


def test_the_segment_files_never_exceed_max_bytes(tmp_path):
    limit = 4096
    spool = Spool(tmp_path, segment_max_bytes=1024, max_bytes=limit)
    accepted: list[bytes] = []
    refused = 0
    for i in range(400):
        record = payloads(1, start=i)
        written = spool.append(record)
        assert written in (0, 1)
        accepted += record[:written]
        refused += 1 - written
        assert disk_usage(tmp_path) == spool.disk_bytes <= limit
    assert refused > 0
    # Full: nothing more fits, although a frame of the smallest records would fit in what is left.
    assert limit - spool.disk_bytes < 8 + len(max(accepted, key=len))
    assert spool.append([b"x" * 100]) == 0
    # A batch that does not fit entirely: the records that fit, in order, and how many.
    assert drain(spool) == accepted
    big = [b"y" * 1000] * 6
    assert spool.append(big) == 4  # 4 frames of 1008 bytes; a fifth would pass 4096
    assert disk_usage(tmp_path) <= limit
    assert drain(spool) == big[:4]
    spool.close()
    # What was refused was never written: a new process finds exactly what was accepted, nothing more.
    assert Spool(tmp_path, max_bytes=limit).read(1000).payloads == []


def test_a_limit_below_one_segment_frees_the_replayed_active_segment(tmp_path):
    # The active segment (16 MiB by default) is never full here: once everything in it was handed on,
    # it must not keep counting against the limit, or the spool would refuse records forever.
    spool = Spool(tmp_path, max_bytes=2048)
    for _ in range(5):
        first = spool.append(payloads(200))
        assert 0 < first < 200
        assert disk_usage(tmp_path) <= 2048
        assert len(drain(spool)) == first
        assert spool.pending_bytes == 0
    spool.close()


def test_max_bytes_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="max_bytes"):
        Spool(tmp_path, max_bytes=0)
