"""Deterministic, realistic sample input for the KPI pipeline.

Writes ``users.csv``, ``songs.csv`` (public Spotify tracks data-set layout) and one
``streams{i}.csv`` per day, salted with the dirt the pipeline must survive: late rows,
exact duplicates, malformed rows of every quarantine class, timestamps in several ISO
8601 spellings, an extra column, and optionally a file without a ``listen_time`` header.

Everything derives from ``numpy.random.default_rng`` seeded from the config, so the same
config always yields byte-identical files. Stream files are produced in bounded chunks,
so memory stays flat however many plays a day holds.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

__all__ = [
    "BAD_ROW_CLASSES",
    "GENRES",
    "SONGS_HEADER",
    "STREAMS_HEADER",
    "USERS_HEADER",
    "SampleConfig",
    "SampleData",
    "StreamFileStats",
    "generate",
    "main",
    "write_stream_file",
    "write_stream_file_with_stats",
]

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
ObjArray = npt.NDArray[np.object_]

USERS_HEADER = ("user_id", "user_name", "user_age", "user_country", "created_at")
SONGS_HEADER = (
    "id",
    "track_id",
    "artists",
    "album_name",
    "track_name",
    "popularity",
    "duration_ms",
    "explicit",
    "danceability",
    "energy",
    "key",
    "loudness",
    "mode",
    "speechiness",
    "acousticness",
    "instrumentalness",
    "liveness",
    "valence",
    "tempo",
    "time_signature",
    "track_genre",
)
STREAMS_HEADER = ("user_id", "track_id", "listen_time")
EXTRA_COLUMN = "device"
BAD_HEADER_FILE = "streams_bad_header.csv"

# Each bad row carries exactly one defect, so a pipeline's per-reason counts can be
# checked against the generator's. Bad row j of a file gets class j % 6, which puts
# every class in any file with at least six bad rows.
BAD_ROW_CLASSES = (
    "user_id_not_integer",
    "track_id_empty",
    "listen_time_unparseable",
    "unknown_user",
    "unknown_track",
    "wrong_field_count",
)
_BAD_USER_IDS = ("abc", "1.5", "", "12a", "-")
_BAD_TRACK_IDS = ("", "   ")
# "{date} 10:00" parses in lenient parsers but lacks the seconds the contract requires.
_BAD_LISTEN_TIMES = ("{year}-13-01 10:00:00", "yesterday", "{date} 10:00", "{year}-02-30 12:00:00")
_UNKNOWN_USER_OFFSET = 1000

# Pop-like genres dominate a streaming catalogue; the weights are relative.
GENRES: tuple[tuple[str, float], ...] = (
    ("pop", 14.0),
    ("hip-hop", 10.0),
    ("dance", 8.0),
    ("rock", 8.0),
    ("latin", 7.0),
    ("edm", 6.0),
    ("indie", 6.0),
    ("r-n-b", 6.0),
    ("k-pop", 5.0),
    ("country", 4.0),
    ("techno", 4.0),
    ("metal", 3.0),
    ("jazz", 3.0),
    ("soul", 3.0),
    ("folk", 3.0),
    ("classical", 2.0),
    ("reggae", 2.0),
    ("blues", 2.0),
    ("ambient", 2.0),
    ("punk", 2.0),
)
# A track filed under several genres is filed under neighbouring ones, as in the data set.
_RELATED_GENRES: dict[str, tuple[str, ...]] = {
    "pop": ("dance", "k-pop", "indie", "r-n-b", "edm", "latin"),
    "hip-hop": ("r-n-b", "pop", "dance"),
    "dance": ("pop", "edm", "techno", "latin"),
    "rock": ("indie", "metal", "punk", "blues", "folk"),
    "latin": ("pop", "dance", "reggae"),
    "edm": ("dance", "techno", "pop"),
    "indie": ("rock", "pop", "folk"),
    "r-n-b": ("soul", "hip-hop", "pop"),
    "k-pop": ("pop", "dance"),
    "country": ("folk", "rock", "blues"),
    "techno": ("edm", "dance", "ambient"),
    "metal": ("rock", "punk"),
    "jazz": ("blues", "soul", "classical"),
    "soul": ("r-n-b", "jazz", "blues"),
    "folk": ("country", "indie", "blues"),
    "classical": ("ambient", "jazz"),
    "reggae": ("latin", "soul"),
    "blues": ("jazz", "rock", "soul"),
    "ambient": ("classical", "techno"),
    "punk": ("rock", "metal"),
}

# Share of plays per UTC hour: trough 2-6h, evening peak (the audience is mostly
# European/American, so the UTC evening is everybody's prime time).
_HOURLY_WEIGHTS = (
    3.0, 2.2, 1.4, 1.0, 0.9, 1.0, 1.5, 2.4, 3.2, 3.6, 3.8, 4.0,
    4.3, 4.4, 4.4, 4.6, 5.0, 5.6, 6.2, 6.6, 6.8, 6.4, 5.4, 4.2,
)  # fmt: skip

# listen_time spellings: (code, share). Code 0 is the plain "YYYY-MM-DD HH:MM:SS".
_FMT_PLAIN, _FMT_T, _FMT_FRACTION, _FMT_Z, _FMT_OFFSET = range(5)
_FMT_SHARES = ((_FMT_T, 0.010), (_FMT_FRACTION, 0.008), (_FMT_Z, 0.006), (_FMT_OFFSET, 0.006))
_OFFSETS_MIN = (120, -300, 330, 540, -180, 60, -420)

_USER_COUNTRIES = (
    ("US", 22.0), ("BR", 9.0), ("GB", 7.0), ("DE", 6.0), ("MX", 6.0), ("IN", 5.0),
    ("FR", 4.0), ("CA", 4.0), ("ID", 3.0), ("PH", 3.0), ("ES", 3.0), ("IT", 3.0),
    ("JP", 3.0), ("AU", 3.0), ("KR", 2.0), ("NL", 2.0), ("SE", 2.0), ("PL", 2.0),
    ("AR", 2.0), ("CO", 2.0), ("TR", 2.0), ("NG", 1.0), ("ZA", 1.0), ("NO", 1.0),
)  # fmt: skip
_USER_COUNTRIES_CODES = tuple(c for c, _ in _USER_COUNTRIES)
_USER_COUNTRIES_WEIGHTS = tuple(w for _, w in _USER_COUNTRIES)

_DEVICES = (
    ("android", 45.0), ("ios", 35.0), ("web", 10.0), ("desktop", 6.0), ("car", 2.0),
    ("smart_speaker", 2.0),
)  # fmt: skip

_ZIPF_EXPONENT = 1.1
_CHUNK_ROWS = 200_000
_BASE62 = np.frombuffer(
    b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz", dtype=np.uint8
)

# Independent child streams per concern: the stream files need only the cheap parts of
# the catalogue (ids, play weights, user activity), which they regenerate from the seed.
_SALT_TRACK_IDS, _SALT_TRACK_META, _SALT_USERS, _SALT_ACTIVITY, _SALT_STREAMS = range(5)

_FIRST_NAMES = (
    "Maria", "James", "Sofia", "Liam", "Emma", "Noah", "Olivia", "Lucas", "Mia", "Mateo",
    "Ana", "Yuki", "Hana", "Min-jun", "Ji-woo", "Arjun", "Priya", "Chen", "Wei", "Fatima",
    "Omar", "Lea", "Jonas", "Chloe", "Hugo", "Giulia", "Marco", "Zoe", "Ethan", "Ava",
    "Isabella", "Gabriel", "Camila", "Diego", "Valentina", "Leon", "Emily", "Jack", "Aisha",
    "Kwame", "Amara", "Ingrid", "Lars", "Anouk", "Daan", "Kasia", "Piotr", "Elif", "Emre",
    "Thandiwe", "Sipho", "Lucia", "Pablo", "Nina", "Oscar", "Freya", "Ravi", "Mei", "Sora",
)  # fmt: skip
_LAST_NAMES = (
    "Silva", "Smith", "Garcia", "Muller", "Martin", "Rossi", "Kim", "Lee", "Park", "Sato",
    "Suzuki", "Patel", "Sharma", "Wang", "Li", "Zhang", "Nguyen", "Johnson", "Brown", "Lopez",
    "Gonzalez", "Fernandez", "Schmidt", "Dubois", "Bernard", "Jansen", "de Vries", "Kowalski",
    "Nowak", "Yilmaz", "Demir", "Okafor", "Mensah", "Dlamini", "Andersson", "Hansen", "Novak",
    "Costa", "Santos", "Oliveira", "Wilson", "Taylor", "Moreau", "Romano", "Ricci", "Tanaka",
    "O'Brien", "Murphy", "Kelly", "Walsh", "Cohen", "Levi", "Haddad", "Rahman", "Khan",
)  # fmt: skip
_ADJECTIVES = (
    "Golden", "Electric", "Midnight", "Silver", "Neon", "Broken", "Velvet", "Wild", "Silent",
    "Crimson", "Lonely", "Burning", "Blue", "Crystal", "Hollow", "Cosmic", "Paper", "Sweet",
    "Dark", "Bright", "Frozen", "Endless", "Lost", "Young", "Secret", "Restless", "Northern",
    "Sunday", "Late", "Stone", "Tender", "Fading", "Summer", "Ghost", "Little", "Heavy",
)  # fmt: skip
_NOUNS = (
    "Heart", "Night", "Dream", "River", "Fire", "Light", "Road", "City", "Ocean", "Sky",
    "Rain", "Shadow", "Garden", "Mirror", "Storm", "Echo", "Wave", "Star", "Moon", "Kiss",
    "Horizon", "Signal", "Dance", "Letter", "Window", "Highway", "Paradise", "Thunder",
    "Satellite", "Memory", "Rose", "Tide", "Flame", "Machine", "Island", "Velocity",
)  # fmt: skip
_BAND_NOUNS = (
    "Wolves", "Foxes", "Kings", "Lights", "Tigers", "Saints", "Rebels", "Ravens", "Echoes",
    "Pilots", "Strangers", "Lovers", "Giants", "Sparrows", "Machines", "Drifters", "Sisters",
    "Brothers", "Owls", "Horses", "Comets", "Ghosts", "Satellites", "Wanderers",
)  # fmt: skip
_TRACK_PATTERNS = (
    "{adj} {noun}",
    "{noun}",
    "{noun} of {noun2}",
    "The {adj} {noun}",
    "{verb} the {noun}",
    "{noun}s",
    "{adj} {noun} ({adj2} Mix)",
    "{noun} - Remastered 2011",
    "{noun} - Live",
)
_VERBS = ("Chasing", "Hold", "Dancing in", "Falling for", "Burn", "Find", "Save", "Lost in")
# CSV quoting must survive these (commas, double quotes, apostrophes).
_QUOTING_ARTIST = "Lowe, Hart & Bell"
_QUOTING_TRACK = 'Say "When", Then Go'
_QUOTING_ALBUM = 'Live at the "Roxy", 1979'
_QUOTING_USER = 'Jo "JJ" Okafor, Jr.'


@dataclass(frozen=True)
class SampleConfig:
    """What to generate; every file is a pure function of these values."""

    seed: int = 7
    users: int = 500
    tracks: int = 2000
    start_date: datetime.date = datetime.date(2024, 6, 25)
    days: int = 3
    plays_per_day: int = 20_000
    bad_row_rate: float = 0.002
    duplicate_rate: float = 0.005
    late_row_rate: float = 0.01
    include_bad_file: bool = True


@dataclass(frozen=True)
class SampleData:
    """Paths of the files :func:`generate` wrote."""

    users_csv: Path
    songs_csv: Path
    stream_files: tuple[Path, ...]  # every streams*.csv written, sorted by name


@dataclass(frozen=True)
class StreamFileStats:
    """What one stream file holds, by construction (for tests and the CLI report).

    ``rows`` = ``on_day_plays + late_plays + duplicates + sum(bad.values())``. Valid
    plays are distinct in (user_id, track_id, second) within the file; ``duplicates``
    are exact textual copies of valid on-day rows.
    """

    path: Path
    day: datetime.date
    rows: int
    on_day_plays: int
    late_plays: int
    duplicates: int
    bad: dict[str, int] = field(default_factory=dict)
    extra_column: bool = False


@dataclass(frozen=True)
class _Core:
    """The parts of the catalogue that stream files need."""

    n_users: int
    track_ids: ObjArray  # str, catalogue order
    track_rank: IntArray  # 1 = most played
    track_cdf: FloatArray  # cumulative play probability, last == 1.0
    user_cdf: FloatArray


def _rng(config: SampleConfig, *salt: int) -> np.random.Generator:
    return np.random.default_rng([config.seed, *salt])


def _cdf(weights: Sequence[float] | FloatArray) -> FloatArray:
    cdf = np.cumsum(np.asarray(weights, dtype=np.float64))
    cdf /= cdf[-1]
    cdf[-1] = 1.0  # so searchsorted(cdf, u < 1, "right") never runs off the end
    return cdf


def _draw(rng: np.random.Generator, cdf: FloatArray, n: int) -> IntArray:
    return np.searchsorted(cdf, rng.random(n), side="right").astype(np.int64)


def _base62_ids(rng: np.random.Generator, n: int) -> list[str]:
    codes = _BASE62[rng.integers(0, 62, size=(n, 22))]
    return [row.tobytes().decode("ascii") for row in codes]


def _core(config: SampleConfig) -> _Core:
    if config.users < 1 or config.tracks < 1:
        raise ValueError("users and tracks must be >= 1")
    rng = _rng(config, _SALT_TRACK_IDS)
    ids = _base62_ids(rng, config.tracks)
    # 62**22 makes a clash practically impossible; re-draw anyway so ids are a key.
    seen: dict[str, None] = {}
    for i, tid in enumerate(ids):
        while tid in seen:
            tid = _base62_ids(rng, 1)[0]
            ids[i] = tid
        seen[tid] = None
    rank = rng.permutation(config.tracks).astype(np.int64) + 1
    track_cdf = _cdf(rank.astype(np.float64) ** -_ZIPF_EXPONENT)
    # Lognormal activity: most users play a few dozen tracks a day, a few play hundreds.
    activity = _rng(config, _SALT_ACTIVITY).lognormal(0.0, 1.1, config.users)
    return _Core(
        n_users=config.users,
        track_ids=np.array(ids, dtype=object),
        track_rank=rank,
        track_cdf=track_cdf,
        user_cdf=_cdf(activity),
    )


# --------------------------------------------------------------------------- users


def _write_users(path: Path, config: SampleConfig) -> int:
    rng = _rng(config, _SALT_USERS)
    n = config.users
    first = rng.integers(0, len(_FIRST_NAMES), n)
    last = rng.integers(0, len(_LAST_NAMES), n)
    names = [f"{_FIRST_NAMES[f]} {_LAST_NAMES[la]}" for f, la in zip(first, last, strict=True)]
    names[int(rng.integers(0, n))] = _QUOTING_USER
    # Mostly a young gamma bulk, with a uniform tail so older listeners exist at all.
    young = 13.0 + rng.gamma(2.0, 7.0, n)
    older = rng.uniform(13.0, 81.0, n)
    ages = np.clip(np.where(rng.random(n) < 0.88, young, older), 13, 80).astype(np.int64)
    countries = _USER_COUNTRIES_CODES
    country = _draw(rng, _cdf(_USER_COUNTRIES_WEIGHTS), n)
    # Sign-ups since 2012, skewed towards recent years (the service grows).
    first_day = np.datetime64("2012-01-01T00:00:00", "s")
    span = int((np.datetime64(config.start_date, "s") - first_day) / np.timedelta64(1, "s"))
    offsets = (rng.random(n) ** 0.6 * span).astype(np.int64)
    created = np.datetime_as_string(first_day + offsets.astype("timedelta64[s]"), unit="s")
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(USERS_HEADER)
        for i in range(n):
            writer.writerow(
                (
                    i + 1,
                    names[i],
                    int(ages[i]),
                    countries[country[i]],
                    str(created[i]).replace("T", " "),
                )
            )
    return n


# --------------------------------------------------------------------------- songs


def _artist_pool(rng: np.random.Generator, size: int) -> list[str]:
    """Distinct, plausible artist names (solo acts, bands, DJs)."""
    pool: dict[str, None] = {}
    attempts = 0
    while len(pool) < size and attempts < 4:
        attempts += 1
        batch = max(64, 2 * (size - len(pool)))
        form = rng.integers(0, 6, batch)
        a = rng.integers(0, 1 << 20, batch)
        b = rng.integers(0, 1 << 20, batch)
        for f, x, y in zip(form.tolist(), a.tolist(), b.tolist(), strict=True):
            if f <= 1:
                name = f"{_FIRST_NAMES[x % len(_FIRST_NAMES)]} {_LAST_NAMES[y % len(_LAST_NAMES)]}"
            elif f == 2:
                adj = _ADJECTIVES[x % len(_ADJECTIVES)]
                name = f"The {adj} {_BAND_NOUNS[y % len(_BAND_NOUNS)]}"
            elif f == 3:
                name = f"{_ADJECTIVES[x % len(_ADJECTIVES)]} {_NOUNS[y % len(_NOUNS)]}"
            elif f == 4:
                prefix = ("DJ", "Lil", "MC", "Young")[y % 4]
                name = f"{prefix} {_NOUNS[x % len(_NOUNS)]}"
            else:
                band = _BAND_NOUNS[y % len(_BAND_NOUNS)]
                name = f"{_FIRST_NAMES[x % len(_FIRST_NAMES)]} & the {band}"
            pool.setdefault(name, None)
            if len(pool) == size:
                break
    names = list(pool)
    # Huge catalogues exhaust the word lists: number the remaining acts.
    base = len(names)
    names.extend(f"{names[i % base]} {i // base + 2}" for i in range(size - base))
    return names


def _track_title(rng: np.random.Generator) -> str:
    x = rng.integers(0, 1 << 20, 6).tolist()
    return _TRACK_PATTERNS[x[0] % len(_TRACK_PATTERNS)].format(
        adj=_ADJECTIVES[x[1] % len(_ADJECTIVES)],
        adj2=_ADJECTIVES[x[2] % len(_ADJECTIVES)],
        noun=_NOUNS[x[3] % len(_NOUNS)],
        noun2=_NOUNS[x[4] % len(_NOUNS)],
        verb=_VERBS[x[5] % len(_VERBS)],
    )


def _songs_rows(config: SampleConfig, core: _Core) -> list[list[object]]:
    """One row per (track, genre), in data-set order: grouped by genre."""
    rng = _rng(config, _SALT_TRACK_META)
    n = config.tracks
    genre_names = [g for g, _ in GENRES]
    genre_index = {g: i for i, g in enumerate(genre_names)}
    primary = _draw(rng, _cdf([w for _, w in GENRES]), n)

    # ~15% of tracks are filed under 2-3 genres (one row each), else exactly one.
    n_genres = np.where(rng.random(n) < 0.15, np.where(rng.random(n) < 0.7, 2, 3), 1)
    genres_of: list[list[int]] = []
    for t in range(n):
        own = [int(primary[t])]
        related = [genre_index[g] for g in _RELATED_GENRES[genre_names[own[0]]]]
        order = rng.permutation(len(related)).tolist()
        own.extend(related[k] for k in order[: int(n_genres[t]) - 1])
        genres_of.append(own)

    # Artists: prolific acts dominate (Zipf weights over a shuffled pool, ~4 tracks/act).
    pool = _artist_pool(rng, max(8, n // 4))
    artist_cdf = _cdf(np.arange(1, len(pool) + 1, dtype=np.float64) ** -0.6)
    lead = _draw(rng, artist_cdf, n)
    pool[int(lead[0])] = _QUOTING_ARTIST  # credited at least once, on every row of its tracks
    n_artists = np.where(rng.random(n) < 0.20, np.where(rng.random(n) < 0.7, 2, 3), 1)
    credits: list[str] = []
    feat: list[str | None] = []
    for t in range(n):
        chosen = [int(lead[t])]
        want = min(int(n_artists[t]), len(pool))
        while len(chosen) < want:
            extra = int(_draw(rng, artist_cdf, 1)[0])
            if extra not in chosen:
                chosen.append(extra)
        credits.append(";".join(pool[a] for a in chosen))
        feat.append(pool[chosen[1]] if len(chosen) > 1 else None)

    titles = [_track_title(rng) for _ in range(n)]
    use_feat = rng.random(n) < 0.4
    single = rng.random(n) < 0.35
    album_titles = [_track_title(rng).split(" - ")[0] for _ in range(n)]
    albums = [
        titles[t].split(" - ")[0].split(" (")[0] if single[t] else album_titles[t] for t in range(n)
    ]
    for t in range(n):
        artist = feat[t]
        if artist is not None and use_feat[t] and not any(c in titles[t] for c in "(-"):
            titles[t] = f"{titles[t]} (feat. {artist})"
    if n > 1:
        titles[1] = _QUOTING_TRACK
    if n > 2:
        albums[2] = _QUOTING_ALBUM

    # Popularity follows play rank (log scale) plus noise: hits are popular, the long
    # tail is not, but the relation is not perfectly monotonic.
    log_rank = np.log(core.track_rank.astype(np.float64)) / math.log(n + 1)
    popularity = np.clip(np.rint(95 - 72 * log_rank + rng.normal(0, 6, n)), 0, 100)
    duration = np.clip(np.rint(rng.normal(210_000, 50_000, n)), 30_000, 900_000)
    g0 = [genre_names[g[0]] for g in genres_of]
    rap = np.array([g in ("hip-hop", "r-n-b") for g in g0])
    loud_genre = np.array([g in ("metal", "punk", "edm", "techno", "rock") for g in g0])
    calm_genre = np.array([g in ("classical", "ambient", "jazz", "folk") for g in g0])
    explicit = rng.random(n) < np.where(rap, 0.45, 0.06)
    danceability = np.round(rng.beta(5, 3, n), 3)
    energy = np.round(np.clip(rng.beta(4, 2.5, n) + 0.15 * loud_genre - 0.3 * calm_genre, 0, 1), 3)
    key = rng.integers(0, 12, n)
    loudness = np.round(np.clip(rng.normal(-8.0, 3.5, n) - 8.0 * calm_genre, -40.0, 1.0), 3)
    mode = (rng.random(n) < 0.63).astype(np.int64)
    speechiness = np.round(rng.beta(1.2, 14, n) + 0.15 * rap, 4)
    acousticness = np.round(np.clip(rng.beta(0.7, 1.8, n) + 0.5 * calm_genre, 0, 0.996), 4)
    # Mostly vocal tracks (tiny values, written in scientific notation as in the data set).
    instrumentalness = np.where(
        rng.random(n) < 0.75 - 0.6 * calm_genre,
        np.round(rng.exponential(2e-5, n), 8),
        np.round(rng.beta(2, 1.2, n), 4),
    )
    liveness = np.round(rng.beta(1.6, 7, n), 4)
    valence = np.round(rng.beta(2.4, 2.4, n), 4)
    tempo = np.round(np.clip(rng.normal(121, 28, n), 50, 220), 3)
    time_signature = rng.choice([4, 3, 5, 1], size=n, p=[0.89, 0.08, 0.02, 0.01])

    per_track: list[list[object]] = [
        [
            core.track_ids[t],
            credits[t],
            albums[t],
            titles[t],
            int(popularity[t]),
            int(duration[t]),
            "True" if explicit[t] else "False",
            float(danceability[t]),
            float(energy[t]),
            int(key[t]),
            float(loudness[t]),
            int(mode[t]),
            float(speechiness[t]),
            float(acousticness[t]),
            float(instrumentalness[t]),
            float(liveness[t]),
            float(valence[t]),
            float(tempo[t]),
            int(time_signature[t]),
        ]
        for t in range(n)
    ]
    pairs = sorted((genre_names[g], t) for t in range(n) for g in genres_of[t])
    return [[i, *per_track[t], genre] for i, (genre, t) in enumerate(pairs)]


def _write_songs(path: Path, config: SampleConfig, core: _Core) -> int:
    rows = _songs_rows(config, core)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(SONGS_HEADER)
        writer.writerows(rows)
    return len(rows)


# --------------------------------------------------------------------------- streams


@functools.cache
def _clock_strings() -> tuple[str, ...]:
    return tuple(
        f"{h:02d}:{m:02d}:{s:02d}" for h in range(24) for m in range(60) for s in range(60)
    )


def _timestamp_table(first: datetime.date, days: int) -> ObjArray:
    """Plain "YYYY-MM-DD HH:MM:SS" for every second of `days` days from `first`."""
    out: list[str] = []
    for d in range(days):
        prefix = (first + datetime.timedelta(days=d)).isoformat() + " "
        out.extend(prefix + c for c in _clock_strings())
    return np.array(out, dtype=object)


def _render_variant(midnight: datetime.datetime, sec: int, micro: int, fmt: int, aux: int) -> str:
    """A non-plain spelling of the UTC instant `midnight + sec + micro`.

    The instant is fixed first and only then rendered, so an offset spelling shifts the
    wall clock and the UTC day/hour stay what the plan intended.
    """
    instant = midnight + datetime.timedelta(seconds=sec)
    if fmt == _FMT_T:
        return instant.strftime("%Y-%m-%dT%H:%M:%S")
    if fmt == _FMT_FRACTION:
        # Truncate (never round) so the instant cannot spill into the next second/day.
        frac = f".{micro:06d}" if aux % 2 else f".{micro // 1000:03d}"
        sep = "T" if aux % 3 == 0 else " "
        return instant.strftime(f"%Y-%m-%d{sep}%H:%M:%S") + frac
    if fmt == _FMT_Z:
        frac = f".{micro // 1000:03d}" if aux % 4 == 0 else ""
        return instant.strftime("%Y-%m-%dT%H:%M:%S") + frac + "Z"
    minutes = _OFFSETS_MIN[aux % len(_OFFSETS_MIN)]
    local = instant + datetime.timedelta(minutes=minutes)
    sign = "+" if minutes >= 0 else "-"
    hh, mm = divmod(abs(minutes), 60)
    sep = " " if aux % 5 == 0 else "T"
    return local.strftime(f"%Y-%m-%d{sep}%H:%M:%S") + f"{sign}{hh:02d}:{mm:02d}"


@dataclass
class _Rows:
    """Valid plays drawn for one chunk (or the late rows of a file)."""

    sec: IntArray  # seconds since midnight UTC of the file's day (negative = day before)
    micro: IntArray
    user: IntArray  # 0-based index; user_id = index + 1
    track: IntArray


def _make_unique(rows: _Rows, n_users: int, n_tracks: int) -> None:
    """Re-point clashing (user, track, second) triples at the next track.

    One listener cannot start the same track twice in one second; without this a skewed
    draw at millions of plays would add accidental duplicates on top of the planned ones.
    (Gives up after 50 rounds, which only a one-track catalogue can need.)
    """
    for _ in range(50):
        key = ((rows.sec + 86_400) * n_tracks + rows.track) * n_users + rows.user
        order = np.argsort(key, kind="stable")
        ordered = key[order]
        clash = order[np.flatnonzero(ordered[1:] == ordered[:-1]) + 1]
        if clash.size == 0:
            return
        rows.track[clash] = (rows.track[clash] + 1) % n_tracks


def _draw_rows(rng: np.random.Generator, core: _Core, sec: IntArray, micro: IntArray) -> _Rows:
    n = sec.size
    rows = _Rows(sec, micro, _draw(rng, core.user_cdf, n), _draw(rng, core.track_cdf, n))
    _make_unique(rows, core.n_users, core.track_ids.size)
    return rows


class _Renderer:
    """Turns drawn rows into CSV lines (no quoting needed: no value has , " or newline)."""

    def __init__(
        self,
        core: _Core,
        day: datetime.date,
        rng: np.random.Generator,
        *,
        extra_column: bool,
        with_previous_day: bool,
    ) -> None:
        self.rng = rng
        self.extra_column = extra_column
        self.users = np.array([str(i) for i in range(1, core.n_users + 1)], dtype=object)
        self.tracks = core.track_ids
        first = day - datetime.timedelta(days=1) if with_previous_day else day
        self.table_offset = 86_400 if with_previous_day else 0
        self.timestamps = _timestamp_table(first, 2 if with_previous_day else 1)
        self.midnight = datetime.datetime.combine(day, datetime.time())
        self.fmt_cdf = _cdf([1.0 - sum(s for _, s in _FMT_SHARES), *(s for _, s in _FMT_SHARES)])
        self.fmt_codes = np.array([_FMT_PLAIN, *(c for c, _ in _FMT_SHARES)], dtype=np.int64)
        self.devices = np.array([d for d, _ in _DEVICES], dtype=object)
        self.device_cdf = _cdf([w for _, w in _DEVICES])

    def timestamps_of(self, sec: IntArray, micro: IntArray) -> list[str]:
        out: list[str] = self.timestamps[sec + self.table_offset].tolist()
        fmt = self.fmt_codes[_draw(self.rng, self.fmt_cdf, sec.size)]
        fancy = np.flatnonzero(fmt != _FMT_PLAIN)
        aux = self.rng.integers(0, 1 << 30, fancy.size)
        for i, a in zip(fancy.tolist(), aux.tolist(), strict=True):
            out[i] = _render_variant(self.midnight, int(sec[i]), int(micro[i]), int(fmt[i]), a)
        return out

    def device(self, n: int) -> list[str]:
        out: list[str] = self.devices[_draw(self.rng, self.device_cdf, n)].tolist()
        return out

    def lines(self, rows: _Rows) -> list[str]:
        cols = [
            self.users[rows.user].tolist(),
            self.tracks[rows.track].tolist(),
            self.timestamps_of(rows.sec, rows.micro),
        ]
        if self.extra_column:
            cols.append(self.device(rows.sec.size))
        return list(map(",".join, zip(*cols, strict=True)))


def _bad_line(
    cls: int,
    variant: int,
    user: str,
    track: str,
    ts: str,
    device: str | None,
    *,
    day: datetime.date,
    n_users: int,
    unknown_track: str,
) -> str:
    """One row with exactly the defect of ``BAD_ROW_CLASSES[cls]``."""
    name = BAD_ROW_CLASSES[cls]
    if name == "user_id_not_integer":
        user = _BAD_USER_IDS[variant % len(_BAD_USER_IDS)]
    elif name == "track_id_empty":
        track = _BAD_TRACK_IDS[variant % len(_BAD_TRACK_IDS)]
    elif name == "listen_time_unparseable":
        pattern = _BAD_LISTEN_TIMES[variant % len(_BAD_LISTEN_TIMES)]
        ts = pattern.format(year=day.year, date=day.isoformat())
    elif name == "unknown_user":
        user = str(n_users + _UNKNOWN_USER_OFFSET + variant)
    elif name == "unknown_track":
        track = unknown_track
    else:  # wrong_field_count: alternately one field short and one too many
        if variant % 2 == 0:
            return f"{user},{track}"
        fields = [user, track, ts, *([device] if device is not None else []), "1"]
        return ",".join(fields)
    return ",".join([user, track, ts, *([device] if device is not None else [])])


def _plan(plays: int, config: SampleConfig) -> tuple[int, int, int, int]:
    """(bad, late, duplicates, on-day valid) row counts of a file of `plays` rows."""
    if plays < 0:
        raise ValueError("plays must be >= 0")
    bad = round(plays * config.bad_row_rate)
    if config.bad_row_rate > 0:
        bad = max(bad, len(BAD_ROW_CLASSES))  # every class, even in a tiny file
    # At least one on-day valid row, which the extras are spread around.
    bad = min(bad, max(plays - 1, 0))
    late = min(round(plays * config.late_row_rate), max(plays - bad - 1, 0))
    dup = min(round(plays * config.duplicate_rate), (plays - bad - late) // 2)
    return bad, late, dup, plays - bad - late - dup


def _share(total: int, cum_before: int, cum_after: int, whole: int) -> int:
    """This chunk's part of `total`, proportional to its rows, summing exactly to total."""
    if whole == 0:
        return 0
    return (total * cum_after) // whole - (total * cum_before) // whole


def write_stream_file_with_stats(
    path: Path,
    *,
    config: SampleConfig,
    day: datetime.date,
    plays: int,
    seed: int,
    extra_column: bool = False,
) -> StreamFileStats:
    """Like :func:`write_stream_file`, returning what the file holds by construction."""
    return _write_streams(
        path, _core(config), config, day=day, plays=plays, seed=seed, extra_column=extra_column
    )


def write_stream_file(
    path: Path,
    *,
    config: SampleConfig,
    day: datetime.date,
    plays: int,
    seed: int,
    extra_column: bool = False,
) -> Path:
    """One day's file for the catalogue/users of `config` (same seed → same users and tracks), so tests can add a 'next day' or a late file later.

    `plays` is the number of data rows, bad/late/duplicate rows included (at the rates of
    `config`). :func:`generate` uses ``seed=i`` for ``streams{i}.csv``; a different `seed`
    gives different plays over the same users and tracks.
    """  # noqa: E501 - the first line is the agreed API docstring
    write_stream_file_with_stats(
        path, config=config, day=day, plays=plays, seed=seed, extra_column=extra_column
    )
    return path


def _write_streams(
    path: Path,
    core: _Core,
    config: SampleConfig,
    *,
    day: datetime.date,
    plays: int,
    seed: int,
    extra_column: bool,
) -> StreamFileStats:
    """Write one day's stream file in bounded chunks; see :func:`write_stream_file`."""
    if seed < 0:
        raise ValueError("seed must be >= 0")
    rng = np.random.default_rng([config.seed, _SALT_STREAMS, seed])
    n_bad, n_late, n_dup, n_good = _plan(plays, config)
    render = _Renderer(core, day, rng, extra_column=extra_column, with_previous_day=n_late > 0)
    hour_cdf = _cdf(_HOURLY_WEIGHTS)

    # Late rows (yesterday's plays uploaded today) lean to yesterday evening; they are
    # drawn up front (a small share) so they can be made unique among themselves.
    late_hours = _draw(rng, _cdf([w * (h + 4) for h, w in enumerate(_HOURLY_WEIGHTS)]), n_late)
    late_rows = _draw_rows(
        rng,
        core,
        late_hours * 3600 + rng.integers(0, 3600, n_late) - 86_400,
        rng.integers(0, 1_000_000, n_late),
    )
    late_lines = render.lines(late_rows)  # drawn i.i.d., so already in random order

    # Chunks are time slices of the day, so the file comes out in time order (as a log
    # would) and no chunk exceeds _CHUNK_ROWS rows.
    chunks: list[tuple[int, int, int]] = []
    for hour, count in enumerate(rng.multinomial(n_good, np.diff(hour_cdf, prepend=0.0))):
        parts = max(1, math.ceil(int(count) / _CHUNK_ROWS))
        sizes = rng.multinomial(int(count), [1.0 / parts] * parts)
        for j, size in enumerate(sizes.tolist()):
            lo = hour * 3600 + (3600 * j) // parts
            hi = hour * 3600 + (3600 * (j + 1)) // parts
            chunks.append((lo, hi, size))

    known = set(core.track_ids.tolist()) if n_bad else set()
    header = [*STREAMS_HEADER, *([EXTRA_COLUMN] if extra_column else [])]
    bad_counts = dict.fromkeys(BAD_ROW_CLASSES, 0)
    done = bad_done = late_done = 0
    with path.open("w", newline="", encoding="utf-8") as fh:
        fh.write(",".join(header) + "\n")
        for lo, hi, size in chunks:
            before, done = done, done + size
            if size == 0:
                continue
            n_b = _share(n_bad, before, done, n_good)
            n_l = _share(n_late, before, done, n_good)
            n_d = _share(n_dup, before, done, n_good)

            t = np.sort(lo + rng.random(size) * (hi - lo))
            sec = np.minimum(t.astype(np.int64), hi - 1)
            micro = np.minimum(((t - sec) * 1e6).astype(np.int64), 999_999)
            lines = render.lines(_draw_rows(rng, core, sec, micro))

            # Duplicates follow their original (a client retry); bad and late rows land
            # anywhere in the chunk.
            dup_src = np.sort(rng.choice(size, n_d, replace=False)) if n_d else np.empty(0, int)
            extra_lines = [lines[i] for i in dup_src.tolist()]
            bad_pos = rng.integers(0, size, n_b)
            b_sec = rng.integers(lo, hi, n_b)
            b_user = _draw(rng, core.user_cdf, n_b)
            b_track = _draw(rng, core.track_cdf, n_b)
            b_device = render.device(n_b) if extra_column else [None] * n_b
            for j in range(n_b):
                k = bad_done + j
                cls = k % len(BAD_ROW_CLASSES)
                unknown = ""
                if BAD_ROW_CLASSES[cls] == "unknown_track":
                    unknown = _base62_ids(rng, 1)[0]
                    while unknown in known:
                        unknown = _base62_ids(rng, 1)[0]
                extra_lines.append(
                    _bad_line(
                        cls,
                        k // len(BAD_ROW_CLASSES),
                        str(int(b_user[j]) + 1),
                        str(core.track_ids[b_track[j]]),
                        str(render.timestamps[int(b_sec[j]) + render.table_offset]),
                        b_device[j],
                        day=day,
                        n_users=core.n_users,
                        unknown_track=unknown,
                    )
                )
                bad_counts[BAD_ROW_CLASSES[cls]] += 1
            bad_done += n_b
            late_pos = rng.integers(0, size, n_l)
            extra_lines.extend(late_lines[late_done : late_done + n_l])
            late_done += n_l

            keys = np.concatenate(
                [np.arange(size, dtype=np.float64), dup_src + 0.5, bad_pos + 0.5, late_pos + 0.5]
            )
            ordered = np.array(lines + extra_lines, dtype=object)[np.argsort(keys, kind="stable")]
            fh.write("\n".join(ordered.tolist()))
            fh.write("\n")
    return StreamFileStats(
        path=path,
        day=day,
        rows=plays,
        on_day_plays=n_good,
        late_plays=n_late,
        duplicates=n_dup,
        bad=bad_counts,
        extra_column=extra_column,
    )


def _write_bad_header_file(path: Path, config: SampleConfig, core: _Core) -> int:
    """A stream file whose header names the time column wrongly: quarantined whole."""
    rng = _rng(config, _SALT_STREAMS, 1_000_000)
    n = 5
    users = _draw(rng, core.user_cdf, n) + 1
    tracks = _draw(rng, core.track_cdf, n)
    secs = np.sort(rng.integers(0, 86_400, n))
    midnight = datetime.datetime.combine(config.start_date, datetime.time())
    with path.open("w", newline="", encoding="utf-8") as fh:
        fh.write("user_id,track_id,played_at\n")
        for u, t, s in zip(users.tolist(), tracks.tolist(), secs.tolist(), strict=True):
            stamp = (midnight + datetime.timedelta(seconds=s)).strftime("%Y-%m-%d %H:%M:%S")
            fh.write(f"{u},{core.track_ids[t]},{stamp}\n")
    return n


# --------------------------------------------------------------------------- entry points


def _generate(out_dir: Path, config: SampleConfig) -> tuple[SampleData, list[str]]:
    """Write everything; return the paths and a human-readable line per file."""
    if config.days < 0:
        raise ValueError("days must be >= 0")
    out_dir.mkdir(parents=True, exist_ok=True)
    core = _core(config)
    report: list[str] = []
    users_csv = out_dir / "users.csv"
    songs_csv = out_dir / "songs.csv"
    report.append(f"{users_csv}: {_write_users(users_csv, config)} users")
    song_rows = _write_songs(songs_csv, config, core)
    report.append(f"{songs_csv}: {song_rows} rows ({config.tracks} tracks)")
    streams: list[Path] = []
    for i in range(1, config.days + 1):
        day = config.start_date + datetime.timedelta(days=i - 1)
        stats = _write_streams(
            out_dir / f"streams{i}.csv",
            core,
            config,
            day=day,
            plays=config.plays_per_day,
            seed=i,
            extra_column=i == 2,  # the second file carries an extra column
        )
        streams.append(stats.path)
        bad = ", ".join(f"{k}={v}" for k, v in stats.bad.items() if v)
        report.append(
            f"{stats.path}: {stats.rows} rows for {day}"
            f"{' (+device column)' if stats.extra_column else ''}: "
            f"{stats.on_day_plays} on-day plays, {stats.late_plays} late, "
            f"{stats.duplicates} duplicates, {sum(stats.bad.values())} bad ({bad or 'none'})"
        )
    if config.include_bad_file:
        bad_path = out_dir / BAD_HEADER_FILE
        rows = _write_bad_header_file(bad_path, config, core)
        streams.append(bad_path)
        report.append(f"{bad_path}: {rows} rows, header without listen_time")
    data = SampleData(users_csv, songs_csv, tuple(sorted(streams, key=lambda p: p.name)))
    return data, report


MANY_DATES_FILE = "streams_many_dates.csv"
MANY_DATES_FROM = datetime.date(1990, 1, 1)


def write_many_dates_file(path: Path, users_csv: Path, songs_csv: Path, dates: int) -> int:
    """One valid play on each of ``dates`` consecutive days from 1990-01-01: a small file
    no day delivers, which loads over several runs (``max_dates_per_run``)."""
    with users_csv.open(encoding="utf-8") as users, songs_csv.open(encoding="utf-8") as songs:
        user = next(iter(csv.DictReader(users)))["user_id"]
        track = next(iter(csv.DictReader(songs)))["track_id"]
    with path.open("w", encoding="utf-8") as out:
        out.write("user_id,track_id,listen_time\n")
        for n in range(dates):
            day = MANY_DATES_FROM + datetime.timedelta(days=n)
            out.write(f"{user},{track},{day.isoformat()}T12:00:00Z\n")
    return dates


def generate(out_dir: Path, config: SampleConfig = SampleConfig()) -> SampleData:
    """Write users.csv, songs.csv and the stream files of `config` into `out_dir`."""
    return _generate(out_dir, config)[0]


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: ``python -m local_runner.sample_data OUT_DIR [options]``."""
    defaults = SampleConfig()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--days", type=int, default=defaults.days)
    parser.add_argument("--plays-per-day", type=int, default=defaults.plays_per_day)
    parser.add_argument("--users", type=int, default=defaults.users)
    parser.add_argument("--tracks", type=int, default=defaults.tracks)
    parser.add_argument("--no-bad-file", action="store_true")
    parser.add_argument(
        "--many-dates",
        type=int,
        default=0,
        metavar="N",
        help=f"also write {MANY_DATES_FILE}: one play on each of N days from {MANY_DATES_FROM}",
    )
    args = parser.parse_args(argv)
    config = SampleConfig(
        seed=args.seed,
        users=args.users,
        tracks=args.tracks,
        days=args.days,
        plays_per_day=args.plays_per_day,
        include_bad_file=not args.no_bad_file,
    )
    data, report = _generate(args.out_dir, config)
    if args.many_dates:
        path = args.out_dir / MANY_DATES_FILE
        write_many_dates_file(path, data.users_csv, data.songs_csv, args.many_dates)
        report.append(f"{path}: {args.many_dates} rows, one on each of {args.many_dates} days")
    print("\n".join(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
