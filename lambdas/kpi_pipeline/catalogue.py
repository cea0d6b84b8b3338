"""Each date's source snapshot: the users and songs its plays are validated and computed with.

docs/kpis.md: a late file gives exactly the KPIs it would have given on time. So a date is tied
("pinned") to the source snapshot of the run that first accepted a play of it, kept under
``catalogue/`` for good, and every later file of that date is validated against that
snapshot's users and songs, and computed with its songs, whatever today's tables hold.
A date not pinned yet is validated with today's snapshot and pinned to it, before any of its
plays is written (so a retried or repeated ingest of the same content finds the same result).

A recompute with ``"catalogue": "current"`` (kpi_pipeline.requests) re-pins a range of dates
to the run's snapshot (:func:`repin_dates`), e.g. after correcting the songs table.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from kpi_pipeline.contracts import SnapshotRef
from kpi_pipeline.errors import PinConflict
from kpi_pipeline.layout import SONG_TABLES, Layout
from kpi_pipeline.parallel import parallel
from kpi_pipeline.storage import Storage
from kpi_pipeline.warehouse.copy_parquet import COPY_FORMAT


@dataclass(frozen=True)
class Pin:
    songs_key: str
    users_key: str | None  # pins made before users were pinned: validated with today's users
    pinned_by_run: str
    # the version of the Parquet rules its files follow (copy_parquet.COPY_FORMAT); pins made
    # before it was recorded: 1
    copy_format: int = 1

    def to_document(self) -> dict[str, Any]:
        return {
            "songs_key": self.songs_key,
            "users_key": self.users_key,
            "pinned_by_run": self.pinned_by_run,
            "copy_format": self.copy_format,
        }

    @classmethod
    def from_document(cls, document: dict[str, Any]) -> Pin:
        return cls(
            str(document["songs_key"]),
            document.get("users_key"),
            str(document.get("pinned_by_run", "")),
            int(document.get("copy_format", 1)),
        )


def read_pins(storage: Storage, layout: Layout, kpi_dates: list[dt.date]) -> dict[dt.date, Pin]:
    """The pins of those dates that have one."""
    dates = sorted(set(kpi_dates))
    found = parallel(
        lambda d: storage.get_json(layout.data_bucket, layout.catalogue_pin_key(d)), dates
    )
    return {d: Pin.from_document(doc) for d, doc in zip(dates, found, strict=True) if doc}


def snapshot_of_dates(
    storage: Storage, layout: Layout, kpi_dates: list[dt.date], today: SnapshotRef
) -> dict[dt.date, SnapshotRef]:
    """The snapshot each date is validated with: its pin's, else today's."""
    pins = read_pins(storage, layout, kpi_dates)
    snapshots = {}
    for kpi_date in kpi_dates:
        pin = pins.get(kpi_date)
        snapshots[kpi_date] = (
            SnapshotRef(users_key=pin.users_key or today.users_key, songs_key=pin.songs_key)
            if pin
            else today
        )
    return snapshots


def keep_snapshot(storage: Storage, layout: Layout, run_id: str, today: SnapshotRef) -> Pin:
    """Copy the run's snapshot (users, songs and the songs' derived tables) under
    ``catalogue/``, where it is kept for good: the pin of the dates tied to it."""
    kept = Pin(
        songs_key=layout.catalogue_songs_key(run_id),
        users_key=layout.catalogue_users_key(run_id),
        pinned_by_run=run_id,
        copy_format=COPY_FORMAT,
    )
    copies = [
        (today.songs_key, kept.songs_key),
        (today.users_key, kept.users_key or ""),
        *(
            (
                layout.songs_sibling_key(today.songs_key, table),
                layout.songs_sibling_key(kept.songs_key, table),
            )
            for table in SONG_TABLES
        ),
    ]
    for source, target in copies:
        if not storage.exists(layout.data_bucket, target):
            storage.copy(layout.data_bucket, source, layout.data_bucket, target)
    return kept


def repin_dates(
    storage: Storage, layout: Layout, kpi_dates: list[dt.date], run_id: str, today: SnapshotRef
) -> None:
    """Tie each date to this run's snapshot, whatever it was pinned to (a recompute with
    ``catalogue: current``, after a correction of the source). The caller passes only the
    dates not pinned to this run yet (it has read their pins)."""
    if not kpi_dates:
        return
    document = keep_snapshot(storage, layout, run_id, today).to_document()
    parallel(
        lambda d: storage.put_json(layout.data_bucket, layout.catalogue_pin_key(d), document),
        kpi_dates,
    )


def pin_dates(
    storage: Storage,
    layout: Layout,
    kpi_dates: list[dt.date],
    run_id: str,
    today: SnapshotRef,
    *,
    validated_unpinned: set[dt.date] | None = None,
) -> dict[dt.date, Pin]:
    """Pin each unpinned date to today's snapshot (kept under ``catalogue/``); return all pins.

    ``validated_unpinned``: dates a file was validated for with today's snapshot because
    they had no pin. If another run pinned one of them meanwhile (the lock rules that out,
    but the check is cheap), :class:`PinConflict` asks for the file to be validated again.
    """
    pins = read_pins(storage, layout, kpi_dates)
    unpinned = sorted(set(kpi_dates) - set(pins))
    if unpinned:
        kept = keep_snapshot(storage, layout, run_id, today)
        document = kept.to_document()
        for kpi_date in unpinned:
            key = layout.catalogue_pin_key(kpi_date)
            if storage.put_json_if_absent(layout.data_bucket, key, document):
                pins[kpi_date] = kept
            else:  # pinned by a parallel ingest since we looked
                pins[kpi_date] = Pin.from_document(storage.get_json(layout.data_bucket, key) or {})
    changed = sorted(d for d in validated_unpinned or () if pins[d].pinned_by_run != run_id)
    if changed:
        raise PinConflict(
            f"{', '.join(d.isoformat() for d in changed)} pinned by another run while this "
            "file was validated with this run's snapshot: validating it again"
        )
    return pins
