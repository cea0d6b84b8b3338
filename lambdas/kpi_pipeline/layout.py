"""Where every object of the pipeline lives in S3: one place, so keys never drift.

Objects a run writes live under its run id, so re-running the same input replaces rather
than duplicates. Curated plays are partitioned by ``kpi_date`` and keyed by the *content*
of their source file, so the KPIs of a date can be recomputed from every play ever accepted
for it, and the same content delivered twice lands on the same object.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from dataclasses import dataclass

from kpi_pipeline.settings import StorageSettings

_SAFE_RUN_KEY = re.compile(r"[A-Za-z0-9._-]+")


# Tables derived from the songs at extract and kept beside them (see songs_sibling_key).
SONG_TABLES = ("song_artists", "song_tracks")


def run_key(run_id: str) -> str:
    """The run id as it appears in S3 keys: itself when it has only letters, digits, '.',
    '_' and '-'; else those characters, the rest replaced by '_', and a short hash of the
    whole id, so that two run ids never share a key (``rerun@2024-06-25`` becomes
    ``rerun_2024-06-25-<hash>``)."""
    if _SAFE_RUN_KEY.fullmatch(run_id):
        return run_id
    digest = hashlib.sha256(run_id.encode()).hexdigest()[:8]
    return f"{re.sub(r'[^A-Za-z0-9._-]', '_', run_id)}-{digest}"


@dataclass(frozen=True)
class Layout:
    data_bucket: str
    landing_bucket: str
    landing_prefix: str

    @classmethod
    def from_settings(cls, settings: StorageSettings) -> Layout:
        return cls(settings.data_bucket, settings.landing_bucket, settings.landing_prefix)

    # --- source snapshot (extract_rds) --------------------------------------------------
    def snapshot_key(self, run_id: str, table: str) -> str:
        return f"snapshots/run_id={run_key(run_id)}/{table}.parquet"

    @staticmethod
    def songs_sibling_key(songs_key: str, table: str) -> str:
        """A table derived from the songs at extract (``SONG_TABLES``), kept beside them (in
        the run's snapshot, and in the catalogue a date is pinned to)."""
        if songs_key.startswith("catalogue/songs/"):
            return f"catalogue/{table}/" + songs_key.removeprefix("catalogue/songs/")
        return songs_key.removesuffix("songs.parquet") + f"{table}.parquet"

    @classmethod
    def song_artists_key(cls, songs_key: str) -> str:
        """The songs' artists, split and trimmed at extract."""
        return cls.songs_sibling_key(songs_key, "song_artists")

    @classmethod
    def song_tracks_key(cls, songs_key: str) -> str:
        """The songs' columns the KPIs read, in the warehouse engine's COPY order."""
        return cls.songs_sibling_key(songs_key, "song_tracks")

    # What of the source was processed: each table's watermark and raw snapshot.
    source_state_key = "source/state.json"

    def source_quarantine_key(self, run_id: str, table: str) -> str:
        return f"quarantine/source/run_id={run_key(run_id)}/{table}.parquet"

    # --- run bookkeeping -----------------------------------------------------------------
    def manifest_key(self, run_id: str) -> str:
        return f"runs/{run_key(run_id)}/manifest.json"

    def manifest_files_key(self, run_id: str) -> str:
        """The manifest's files alone, a JSON array: what the ingest Map reads."""
        return f"runs/{run_key(run_id)}/manifest_files.json"

    @staticmethod
    def map_results_prefix() -> str:
        """Where the ingest Distributed Map writes its result manifests (per map run)."""
        return "runs/ingest-map-results/"

    def ingest_results_prefix(self, run_id: str) -> str:
        return f"runs/{run_key(run_id)}/ingest/"

    def ingest_result_key(self, run_id: str, index: int) -> str:
        # Unpadded: the Map's Catch writes failed results with States.Format, which cannot pad.
        return f"{self.ingest_results_prefix(run_id)}{index}.json"

    @staticmethod
    def transform_map_results_prefix() -> str:
        """Where the TransformDates Distributed Map writes its result manifests."""
        return "runs/transform-map-results/"

    def transform_prefix(self, run_id: str, attempt: str) -> str:
        return f"runs/{run_key(run_id)}/transform/attempt={attempt}/"

    def transform_dates_key(self, run_id: str, attempt: str) -> str:
        """The plan's dates, a JSON array of items: what the TransformDates Map reads."""
        return f"{self.transform_prefix(run_id, attempt)}dates.json"

    def transform_result_key(self, run_id: str, attempt: str, kpi_date: dt.date) -> str:
        return (
            f"{self.transform_prefix(run_id, attempt)}results/kpi_date={kpi_date.isoformat()}.json"
        )

    def warehouse_manifest_key(
        self, run_id: str, attempt: str, kpi_date: dt.date, table: str
    ) -> str:
        """The COPY manifest of one input table of a date the warehouse engine computes."""
        return (
            f"{self.transform_prefix(run_id, attempt)}manifests/"
            f"kpi_date={kpi_date.isoformat()}/{table}.manifest"
        )

    def recompute_details_key(self, run_id: str) -> str:
        """A recompute's dates without plays, and each re-pinned date's previous catalogue."""
        return f"runs/{run_key(run_id)}/recompute.json"

    def revalidate_result_key(self, run_id: str) -> str:
        """What a revalidation checked and moved to the quarantine (Archive summarises it)."""
        return f"runs/{run_key(run_id)}/revalidate.json"

    def replay_result_key(self, run_id: str) -> str:
        """What a replay of the quarantine re-checked and accepted (Archive summarises it)."""
        return f"runs/{run_key(run_id)}/replay.json"

    # How each execution ended, one document per execution name, written by the state
    # machine at every end (the run summary, an early end's status, or the failure).
    outcomes_prefix = "runs/outcomes/"

    def load_plan_key(self, run_id: str) -> str:
        return f"runs/{run_key(run_id)}/load_plan.json"

    def summary_key(self, run_id: str) -> str:
        return f"runs/{run_key(run_id)}/summary.json"

    # --- accepted data ---------------------------------------------------------------------
    def curated_date_prefix(self, kpi_date: dt.date) -> str:
        return f"curated/plays/kpi_date={kpi_date.isoformat()}/"

    def curated_plays_key(self, kpi_date: dt.date, content_key: str) -> str:
        return f"{self.curated_date_prefix(kpi_date)}{content_key}.parquet"

    def ledger_key(self, content_key: str) -> str:
        """The record that a file content was accepted (and by which run it was loaded)."""
        return f"ledger/files/{content_key}.json"

    pending_prefix = "ledger/pending/"

    def pending_key(self, content_key: str) -> str:
        """Accepted content whose dates the warehouse does not have yet (removed by Load)."""
        return f"{self.pending_prefix}{content_key}.json"

    def catalogue_songs_key(self, run_id: str) -> str:
        """The songs a date is validated and computed with (see kpi_pipeline.catalogue)."""
        return f"catalogue/songs/run_id={run_key(run_id)}.parquet"

    def catalogue_users_key(self, run_id: str) -> str:
        """The user ids a date is validated with (see kpi_pipeline.catalogue)."""
        return f"catalogue/users/run_id={run_key(run_id)}.parquet"

    def catalogue_pin_key(self, kpi_date: dt.date) -> str:
        return f"catalogue/dates/kpi_date={kpi_date.isoformat()}.json"

    def kpi_prefix(self, run_id: str, attempt: str) -> str:
        """Where one Transform attempt writes its KPI parts: what Load's COPY reads (a key
        prefix: COPY lists it and reads every object under it)."""
        return f"kpis/run_id={run_key(run_id)}/attempt={attempt}/"

    @staticmethod
    def kpi_part_key(kpi_prefix: str, kpi_date: dt.date) -> str:
        """The KPI part of one date: Transform writes one per date of the plan."""
        return f"{kpi_prefix}part-{kpi_date.isoformat()}.parquet"

    # --- rejected data and processed files -----------------------------------------------
    quarantine_rows_prefix = "quarantine/rows/"
    attempts_prefix = "quarantine/attempts/"  # failed ingest attempts (kpi_pipeline.attempts)

    def quarantine_rows_key(self, content_key: str) -> str:
        return f"{self.quarantine_rows_prefix}{content_key}.parquet"

    def quarantine_file_key(self, run_id: str, landing_key: str) -> str:
        return f"quarantine/files/run_id={run_key(run_id)}/{self.relative(landing_key)}"

    def archive_key(self, run_id: str, landing_key: str) -> str:
        return f"archive/run_id={run_key(run_id)}/{self.relative(landing_key)}"

    def relative(self, landing_key: str) -> str:
        """The key below the landing prefix (sub-folders are kept)."""
        return landing_key.removeprefix(self.landing_prefix)
