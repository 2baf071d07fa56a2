"""Durable online events: an append-only JSON-lines log and the per-user state it implies.

Every accepted ``POST /events`` is one line of the log, written with a single ``write`` on a
file opened ``O_APPEND`` under an exclusive ``flock`` and ``fsync``-ed before the request is
answered, so an accepted event survives a crash and several worker processes can share one
log. The in-memory state is only ever derived from the log: a process appends, then reads
the log forward from where it last stopped (picking up other workers' lines too), and on
start-up or reload replays it from the beginning.

A line that does not parse (a torn final write after a power loss, which was never
acknowledged) is skipped with a warning.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
from collections import deque
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["EventLog", "EventRecord", "OnlineState"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class EventRecord:
    """One interaction event as stored in the log.

    Ids are stored as the client sent them (string or integer) and re-parsed against the
    vocabulary of whichever artifact is loaded, so the log outlives a model swap.
    """

    user_id: str | int
    item_id: str | int
    timestamp: int
    rating: float | None
    received: float

    def to_line(self) -> bytes:
        """The record as one JSON line (UTF-8, newline-terminated)."""
        payload = {
            "user_id": self.user_id,
            "item_id": self.item_id,
            "timestamp": self.timestamp,
            "rating": self.rating,
            "received": round(self.received, 6),
        }
        return (json.dumps(payload, ensure_ascii=False, separators=(",", ":")) + "\n").encode()

    @classmethod
    def from_line(cls, line: bytes) -> EventRecord:
        """Parse one log line; raises ``ValueError`` on anything malformed."""
        obj = json.loads(line)
        if not isinstance(obj, dict):
            raise ValueError("event line is not a JSON object")
        user, item = _id(obj.get("user_id")), _id(obj.get("item_id"))
        rating = obj.get("rating")
        return cls(
            user_id=user,
            item_id=item,
            timestamp=int(obj["timestamp"]),
            rating=None if rating is None else float(rating),
            received=float(obj.get("received", 0.0)),
        )


def _id(value: object) -> str | int:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError(f"bad id {value!r}")
    return value


class EventLog:
    """An append-only, fsync-ed JSON-lines file of :class:`EventRecord`.

    Stability: internal

    Parameters
    ----------
    path
        The log file; its directory is created when missing.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._write_lock = threading.Lock()
        self._fd = self._open()

    def _open(self) -> int:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def _ensure_current(self) -> None:
        """Reopen when the path no longer names the open file (removed or replaced, e.g. by
        re-saving the artifact directory), so that accepted events land where a restart
        reads them."""
        try:
            on_disk = os.stat(self.path)
        except FileNotFoundError:
            on_disk = None
        mine = os.fstat(self._fd)
        if on_disk is None or (on_disk.st_dev, on_disk.st_ino) != (mine.st_dev, mine.st_ino):
            logger.warning("event log was removed or replaced, reopening log=%s", self.path)
            os.close(self._fd)
            self._fd = self._open()

    def close(self) -> None:
        """Close the append handle (idempotent)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def append(self, record: EventRecord) -> None:
        """Append one record durably: one ``write`` under ``flock``, then ``fsync``."""
        line = record.to_line()
        with self._write_lock:
            self._ensure_current()
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                written = os.write(self._fd, line)
                if written != len(line):  # a short write on a regular file means a full disk
                    raise OSError(f"short write to {self.path}: {written} of {len(line)} bytes")
                os.fsync(self._fd)
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    def stat(self) -> os.stat_result | None:
        """``os.stat`` of the log path; ``None`` when there is no file."""
        try:
            return os.stat(self.path)
        except FileNotFoundError:
            return None

    def read_from(self, offset: int) -> tuple[list[EventRecord], int]:
        """Complete records from byte ``offset`` to the last newline, and the new offset."""
        try:
            with open(self.path, "rb") as fh:
                fh.seek(offset)
                data = fh.read()
        except FileNotFoundError:
            return [], offset
        end = data.rfind(b"\n") + 1  # an unterminated tail is a write still in progress
        records = list(self._parse(data[:end], offset))
        return records, offset + end

    def _parse(self, data: bytes, offset: int) -> Iterator[EventRecord]:
        pos = offset
        for line in data.splitlines(keepends=True):
            try:
                yield EventRecord.from_line(line)
            except (ValueError, KeyError, TypeError) as exc:
                logger.warning(
                    "skipping malformed event line log=%s byte=%d (%s)", self.path, pos, exc
                )
            pos += len(line)


class OnlineState:
    """Per-user item histories from the event log, keyed by vocabulary-form user ids.

    Thread-safe. ``parse_user`` and ``parse_item`` map the logged ids to the current
    artifact's id types (see :class:`recsys.serving.ids.IdCodec`).

    Stability: internal

    Parameters
    ----------
    log
        The event log to follow.
    parse_user, parse_item
        Id parsers of the loaded artifact.
    max_per_user
        Most recent events kept per user in memory.
    on_records
        Called with each batch of newly applied records (e.g. to feed the feature store's
        online view); its exceptions are logged, never raised to the request.
    """

    def __init__(
        self,
        log: EventLog,
        parse_user: Callable[[Any], Hashable],
        parse_item: Callable[[Any], Any],
        max_per_user: int,
        on_records: Callable[[list[EventRecord]], None] | None = None,
    ) -> None:
        self.log = log
        self._on_records = on_records
        self._parse_user = parse_user
        self._parse_item = parse_item
        self._max = max_per_user
        self._lock = threading.Lock()
        self._items: dict[Hashable, deque[Any]] = {}
        self._file: tuple[int, int] | None = None  # (st_dev, st_ino) of the file being read
        self._offset = 0
        self.n_events = 0

    def sync(self) -> None:
        """Apply log lines written since the last sync (by this or any other process).

        One ``stat`` when nothing changed. A log that was replaced or truncated is read from
        its start on top of what was already applied: accepted events are never forgotten
        while the process lives.
        """
        st = self.log.stat()
        if st is None:
            return
        ident = (st.st_dev, st.st_ino)
        if ident == self._file and st.st_size == self._offset:
            return
        with self._lock:
            if ident != self._file or st.st_size < self._offset:
                if self._file is not None:
                    logger.warning(
                        "event log replaced or truncated, rereading log=%s", self.log.path
                    )
                self._file = ident
                self._offset = 0
            records, self._offset = self.log.read_from(self._offset)
            for rec in records:
                self._apply(rec)
            if records and self._on_records is not None:
                try:
                    self._on_records(records)
                except Exception:  # a side view must never fail the request
                    logger.exception("event consumer failed n_records=%d", len(records))

    def _apply(self, rec: EventRecord) -> None:
        user = self._parse_user(rec.user_id)
        items = self._items.get(user)
        if items is None:
            items = self._items[user] = deque(maxlen=self._max)
        item = self._parse_item(rec.item_id)
        if item in items:  # keep one entry per item, most recent last
            items.remove(item)
        items.append(item)
        self.n_events += 1

    def items_of(self, user: Hashable) -> list[Any]:
        """The user's event items (vocabulary form), oldest first; empty when none."""
        items = self._items.get(user)
        if not items:
            return []
        with self._lock:
            return list(items)

    @property
    def n_users(self) -> int:
        """Users with at least one event."""
        return len(self._items)
