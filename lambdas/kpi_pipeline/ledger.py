"""The ledger: which file contents were accepted, for which dates, and which wait for a load.

- ``ledger/files/<content>.json`` is written once per accepted content, by IngestFile, after
  every curated object it lists is in place: it is the proof of acceptance, and its
  ``kpi_dates`` say exactly which curated objects (``curated/plays/kpi_date=D/<content>``)
  hold the content's plays.
- ``ledger/pending/<content>.json`` marks accepted content whose dates the warehouse lacks:
  written by IngestFile before the entry, removed by Load once the dates are in the warehouse.

A date's plays are therefore the curated objects that ledger entries name for that date,
nothing else: an object written by an ingest that died before its entry, or that the entry
of a later, successful ingest of the same content no longer names, is not a play.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from kpi_pipeline.layout import Layout
from kpi_pipeline.parallel import parallel
from kpi_pipeline.storage import Storage


@dataclass
class Ledger:
    storage: Storage
    layout: Layout
    _entries: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def entry(self, content_key: str) -> dict[str, Any] | None:
        """The content's ledger entry (None: not accepted), read once per Ledger."""
        with self._lock:
            if content_key in self._entries:
                return self._entries[content_key]
        found = self.storage.get_json(self.layout.data_bucket, self.layout.ledger_key(content_key))
        with self._lock:
            self._entries[content_key] = found
        return found

    def entries(self, content_keys: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The entries of those contents the ledger accepted."""
        keys = sorted(set(content_keys))
        found = parallel(self.entry, keys)
        return {key: entry for key, entry in zip(keys, found, strict=True) if entry is not None}

    def pending(self) -> list[str]:
        """Contents with a pending marker."""
        return sorted(self.pending_since())

    def pending_since(self) -> dict[str, dt.datetime]:
        """Contents with a pending marker, and when each marker was written."""
        objects = self.storage.list_objects(self.layout.data_bucket, self.layout.pending_prefix)
        return {_stem(o.key): o.last_modified for o in objects if o.key.endswith(".json")}

    def accepted_by_date(self, kpi_dates: Iterable[dt.date]) -> dict[dt.date, list[str]]:
        """For each date, the contents whose accepted plays include that date."""
        return {d: sorted(sizes) for d, sizes in self.accepted_sizes_by_date(kpi_dates).items()}

    def accepted_sizes_by_date(self, kpi_dates: Iterable[dt.date]) -> dict[dt.date, dict[str, int]]:
        """For each date, the size of each accepted content's curated object of that date
        (one listing per date)."""
        dates = sorted(set(kpi_dates))
        candidates = parallel(self.curated_sizes, dates)
        entries = self.entries(key for sizes in candidates for key in sizes)
        return {
            kpi_date: {
                key: size
                for key, size in sizes.items()
                if key in entries and kpi_date.isoformat() in entries[key].get("kpi_dates", [])
            }
            for kpi_date, sizes in zip(dates, candidates, strict=True)
        }

    def remove_pending(self, content_keys: Iterable[str]) -> None:
        bucket = self.layout.data_bucket
        parallel(
            lambda key: self.storage.delete(bucket, self.layout.pending_key(key)), content_keys
        )

    def curated_sizes(self, kpi_date: dt.date) -> dict[str, int]:
        """The size of each curated object of the date, by content: one listing, no entry
        read (accepted or not is :meth:`accepted_by_date`'s question)."""
        prefix = self.layout.curated_date_prefix(kpi_date)
        return {
            _stem(o.key): o.size
            for o in self.storage.list_objects(self.layout.data_bucket, prefix)
            if o.key.endswith(".parquet")
        }


def _stem(key: str) -> str:
    return PurePosixPath(key).stem


def entry_dates(entry: dict[str, Any]) -> list[dt.date]:
    return [dt.date.fromisoformat(d) for d in entry.get("kpi_dates", [])]
