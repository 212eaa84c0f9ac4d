"""An append-only on-disk FIFO of byte records: where inference logs wait while the broker cannot take them.

Layout of a spool directory (owned by one process at a time, enforced with ``flock`` on ``LOCK``):

    <seq>.seg   segments, numbered in order; a frame is <u32 length><u32 crc32><payload>
    CURSOR      "<seq> <offset>": everything before it has been handed on (replaced atomically)
    LOCK

Appends go to the active segment with plain ``write`` calls (in the page cache at once, so they
survive the process being killed); it is fsynced when it is sealed (full, or at ``close``). A new
process never appends to an old segment: a crash may have left it with a torn last frame, which
reading detects (short frame) and skips. A frame with a wrong checksum is skipped and counted.
Readers take records from the cursor in append order and ``commit`` once they have handed them on;
segments wholly before the cursor are deleted. Not thread-safe: one event loop uses it.

Size limit: with ``max_bytes``, the segment files never hold more than that many bytes in total
(frames included, replayed ones too until their segment is deleted). ``append`` writes the records
that fit, in order, and returns how many; the caller decides what to do with the rest.
"""

from __future__ import annotations

import fcntl
import logging
import os
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

_HEADER = struct.Struct("<II")
_SEGMENT_SUFFIX = ".seg"
MAX_SLOTS = 64


class SpoolLockedError(RuntimeError):
    """Another process owns this spool directory."""


@dataclass(frozen=True, order=True)
class SpoolPosition:
    segment: int
    offset: int


@dataclass
class SpoolBatch:
    payloads: list[bytes]
    # Where the next read starts once this batch is committed.
    end: SpoolPosition
    # Frames skipped because their checksum did not match (records lost to disk corruption).
    corrupt: int = 0
    # Bytes of torn frames skipped at segment ends (left by a crash mid-write).
    torn_bytes: int = 0


@dataclass
class _Segment:
    seq: int
    size: int
    sealed: bool = True


class Spool:
    def __init__(self, directory: Path, *, segment_max_bytes: int = 16 << 20, max_bytes: int | None = None) -> None:
        if max_bytes is not None and max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, not {max_bytes}")
        self.directory = Path(directory)
        self.segment_max_bytes = segment_max_bytes
        self.max_bytes = max_bytes
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(self.directory / "LOCK", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise SpoolLockedError(f"spool {self.directory} is in use by another process") from None
        self._cursor = self._read_cursor()
        self._segments: dict[int, _Segment] = {}
        for path in self.directory.glob(f"*{_SEGMENT_SUFFIX}"):
            seq = int(path.stem)
            if seq < self._cursor.segment:
                # Handed on before a crash that came between the cursor update and the delete.
                path.unlink()
            else:
                self._segments[seq] = _Segment(seq, path.stat().st_size)
        if self._cursor.segment not in self._segments:
            self._cursor = SpoolPosition(self._cursor.segment, 0)
        self._next_seq = max([*self._segments, self._cursor.segment - 1]) + 1
        self._active: _Segment | None = None
        self._fd: int | None = None
        self._closed = False
        self._pending_records = 0
        self.commit(SpoolBatch([], self._cursor))
        # Complete frames after the cursor (a torn tail is not a record): counted once here, then kept
        # up to date by append and commit.
        self._pending_records = sum(
            self._count_frames(s, self._cursor.offset if s.seq == self._cursor.segment else 0)
            for s in self._segments.values()
        )

    @classmethod
    def open_slot(cls, base: Path, *, segment_max_bytes: int = 16 << 20, max_bytes: int | None = None) -> Spool:
        """The first spool under ``base/slot-N`` that no other process holds: several processes
        (uvicorn workers) can share one configured directory, and a restarted one adopts a slot.
        ``max_bytes`` limits each slot."""
        for slot in range(MAX_SLOTS):
            try:
                return cls(Path(base) / f"slot-{slot}", segment_max_bytes=segment_max_bytes, max_bytes=max_bytes)
            except SpoolLockedError:
                continue
        raise SpoolLockedError(f"all {MAX_SLOTS} spool slots under {base} are in use")

    # -- writing ------------------------------------------------------------------------------------
    def append(self, payloads: Sequence[bytes]) -> int:
        """Append records in order, as many as fit under ``max_bytes``; returns how many were written
        (a prefix of ``payloads``). Raises OSError when the disk fails; nothing partial stays behind."""
        if self._closed:
            raise OSError(f"spool {self.directory} is closed")
        if not payloads:
            return 0
        frames = [_HEADER.pack(len(p), zlib.crc32(p)) + p for p in payloads]
        fitting = self._fitting(frames)
        if fitting < len(frames) and self._caught_up_on_active():
            # Everything in the active segment was handed on: delete it rather than count it.
            self._seal(sync=False)
            fitting = self._fitting(frames)
        if fitting == 0:
            return 0
        blob = b"".join(frames[:fitting])
        if self._active is not None and self._active.size and self._active.size + len(blob) > self.segment_max_bytes:
            self._seal()
        if self._active is None:
            self._open_segment()
        assert self._active is not None
        assert self._fd is not None
        start = self._active.size
        try:
            written = 0
            while written < len(blob):
                written += os.write(self._fd, memoryview(blob)[written:])
        except OSError:
            # Cut off the partial frame so the segment stays readable, then start a fresh one.
            try:
                os.ftruncate(self._fd, start)
            finally:
                self._seal(sync=False)
            raise
        self._active.size += len(blob)
        self._pending_records += fitting
        return fitting

    def _fitting(self, frames: list[bytes]) -> int:
        """How many of the frames, from the first, fit under ``max_bytes``."""
        if self.max_bytes is None:
            return len(frames)
        room = self.max_bytes - self.disk_bytes
        for count, frame in enumerate(frames):
            room -= len(frame)
            if room < 0:
                return count
        return len(frames)

    def _caught_up_on_active(self) -> bool:
        active = self._active
        return active is not None and active.size > 0 and self._cursor == SpoolPosition(active.seq, active.size)

    def _open_segment(self) -> None:
        seq = self._next_seq
        self._next_seq += 1
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC
        self._fd = os.open(self._segment_path(seq), flags, 0o644)
        self._active = _Segment(seq, 0, sealed=False)
        self._segments[seq] = self._active

    def _seal(self, *, sync: bool = True) -> None:
        if self._fd is None or self._active is None:
            return
        try:
            if sync:
                os.fsync(self._fd)
        finally:
            os.close(self._fd)
            self._fd = None
            sealed, self._active = self._active, None
            sealed.sealed = True
            if sealed.size == 0:
                self._segments.pop(sealed.seq, None)
                self._segment_path(sealed.seq).unlink(missing_ok=True)
            elif self._cursor.segment == sealed.seq:
                # Already read to the end: let the cursor step past it so it is deleted.
                self.commit(SpoolBatch([], self._cursor))

    def sync(self) -> None:
        """fsync the active segment: what is spooled now survives a power loss."""
        if self._fd is not None:
            os.fsync(self._fd)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._seal()
        finally:
            os.close(self._lock_fd)

    # -- reading ------------------------------------------------------------------------------------
    @property
    def disk_bytes(self) -> int:
        """Bytes of the segment files: what ``max_bytes`` limits."""
        return sum(s.size for s in self._segments.values())

    @property
    def pending_bytes(self) -> int:
        """Bytes (frames included) not yet committed."""
        return self.disk_bytes - self._cursor.offset

    @property
    def pending_records(self) -> int:
        """Records not yet committed (frames that fail their checksum included, until read)."""
        return self._pending_records

    def has_pending(self) -> bool:
        return self.pending_bytes > 0

    def read(self, max_records: int) -> SpoolBatch:
        """Up to ``max_records`` records from the cursor on, in append order; does not move the cursor."""
        batch = SpoolBatch([], self._cursor)
        seq, offset = self._cursor.segment, self._cursor.offset
        for segment in sorted((s for s in self._segments.values() if s.seq >= seq), key=lambda s: s.seq):
            if segment.seq != seq:
                seq, offset = segment.seq, 0
            offset = self._read_segment(segment, offset, max_records, batch)
            if offset < segment.size or not segment.sealed or len(batch.payloads) >= max_records:
                break
        batch.end = SpoolPosition(seq, offset)
        return batch

    def _read_segment(self, segment: _Segment, offset: int, max_records: int, batch: SpoolBatch) -> int:
        """Add the segment's records from ``offset`` to the batch; returns the offset reached."""
        with self._segment_path(segment.seq).open("rb") as handle:
            handle.seek(offset)
            while offset < segment.size and len(batch.payloads) < max_records:
                header = handle.read(_HEADER.size)
                length, crc = _HEADER.unpack(header) if len(header) == _HEADER.size else (-1, 0)
                if length < 0 or offset + _HEADER.size + length > segment.size:
                    # A frame cut short by a crash mid-write: the rest of the segment is unusable.
                    batch.torn_bytes += segment.size - offset
                    return segment.size
                payload = handle.read(length)
                if zlib.crc32(payload) == crc:
                    batch.payloads.append(payload)
                else:
                    batch.corrupt += 1
                offset += _HEADER.size + length
        return offset

    def commit(self, batch: SpoolBatch) -> None:
        """Everything up to ``batch.end`` has been handed on: move the cursor, delete spent segments."""
        end = batch.end
        current = self._segments.get(end.segment)
        if current is not None and current.sealed and end.offset >= current.size:
            end = SpoolPosition(end.segment + 1, 0)
        tmp = self.directory / "CURSOR.tmp"
        tmp.write_text(f"{end.segment} {end.offset}\n")
        tmp.replace(self.directory / "CURSOR")
        self._cursor = end
        self._pending_records = max(0, self._pending_records - len(batch.payloads) - batch.corrupt)
        for seq in [s for s in self._segments if s < end.segment]:
            self._segment_path(seq).unlink(missing_ok=True)
            del self._segments[seq]

    # -- helpers ------------------------------------------------------------------------------------
    def _segment_path(self, seq: int) -> Path:
        return self.directory / f"{seq:020d}{_SEGMENT_SUFFIX}"

    def _count_frames(self, segment: _Segment, offset: int) -> int:
        """Complete frames from ``offset`` on, reading only their headers."""
        count = 0
        with self._segment_path(segment.seq).open("rb") as handle:
            while offset + _HEADER.size <= segment.size:
                handle.seek(offset)
                header = handle.read(_HEADER.size)
                if len(header) < _HEADER.size:
                    break
                end = offset + _HEADER.size + _HEADER.unpack(header)[0]
                if end > segment.size:
                    break
                count, offset = count + 1, end
        return count

    def _read_cursor(self) -> SpoolPosition:
        try:
            segment, offset = (self.directory / "CURSOR").read_text().split()
            return SpoolPosition(int(segment), int(offset))
        except FileNotFoundError:
            return SpoolPosition(0, 0)
        except ValueError:
            log.error("spool %s: unreadable CURSOR; replaying from the oldest segment", self.directory)
            return SpoolPosition(0, 0)
