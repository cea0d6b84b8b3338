"""The zombie matrix: an execution is stopped while one of its Lambda invocations (or a Data
API batch) goes on, as AWS lets it; another run takes the lock over and loads; the zombie
then makes its write. After the next daily run: the warehouse equals the reference of every
file, nothing is pending that should not be, no file is lost.

In AWS a stopped execution's Lambda invocation ends at its function's timeout at the latest,
and the lock is taken over only after the longest timeout (WaitOutHolderFunctions: locally,
until the zombie invocations are over). A warehouse batch outlives that: the fence row in the
warehouse refuses a load whose token is older than the last load's. Redrive (which moto
lacks) is modelled as AWS documents it: the execution runs again from the state it ended in.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest

from local_runner.faults import SideEffect
from local_runner.sample_data import write_stream_file
from tests.harness import SAMPLE_CONFIG, Harness, assert_matches_reference, running_harness
from tests.reference_kpis import compute_reference

pytestmark = pytest.mark.e2e
DAY = SAMPLE_CONFIG.start_date

# Every write a stale invocation can make after another run took the lock, with the harness
# it needs ("auto": the warehouse engine computes the scenario's date).
ZOMBIE_POINTS: tuple[tuple[SideEffect, str], ...] = (
    (SideEffect("IngestFile", "put", "curated plays"), "lambda"),
    (SideEffect("IngestFile", "put", "pending marker"), "lambda"),
    (SideEffect("IngestFile", "put", "ledger entry"), "lambda"),
    (SideEffect("PlanTransform", "put", "load plan"), "lambda"),
    (SideEffect("Load", "commit", "warehouse dates"), "lambda"),
    (SideEffect("Load", "delete", "pending marker"), "lambda"),
    (SideEffect("Archive", "copy", "archived file"), "lambda"),
    (SideEffect("Archive", "delete", "landing file"), "lambda"),
    (SideEffect("Archive", "put", "source mark"), "lambda"),
    (SideEffect("TransformInWarehouse", "commit", "date stage table"), "auto"),
)
ZOMBIE_MATRIX: dict[str, str] = {}  # printed by conftest's terminal summary


@pytest.fixture(scope="module")
def day_files(tmp_path_factory) -> tuple[Path, Path]:
    """Two files of the same date: the second lands once the first run was stopped."""
    folder = tmp_path_factory.mktemp("zombie-files")
    f1 = write_stream_file(
        folder / "streams_f1.csv", config=SAMPLE_CONFIG, day=DAY, plays=300, seed=41
    )
    f2 = write_stream_file(
        folder / "streams_f2.csv", config=SAMPLE_CONFIG, day=DAY, plays=200, seed=42
    )
    return f1, f2


@pytest.fixture
def harnesses(
    pipeline, warehouse_engine_pipeline, new_database, tmp_path, retry_sleeps
) -> Iterator[dict[str, object]]:
    """The harness of each kind, built on demand (one per test)."""
    built: dict[str, object] = {}
    stack = []

    def get(kind: str) -> Harness:
        if kind not in built:
            chosen = pipeline if kind == "lambda" else warehouse_engine_pipeline
            context = running_harness(chosen, new_database, tmp_path / kind)
            built[kind] = context.__enter__()
            stack.append(context)
        return built[kind]  # type: ignore[return-value]

    yield {"get": get}
    for context in reversed(stack):
        context.__exit__(None, None, None)


@pytest.mark.parametrize(("point", "kind"), ZOMBIE_POINTS, ids=lambda p: str(p))
def test_a_stopped_runs_write_after_another_run_took_the_lock_loses_and_invents_nothing(
    harnesses, sample, day_files, point: SideEffect, kind: str
) -> None:
    harness: Harness = harnesses["get"](kind)  # type: ignore[operator]
    f1, f2 = day_files
    harness.load_source(sample.users_csv, sample.songs_csv)
    harness.put_streams(f1)
    park = harness.local.side_effects.park_before(point, "A")
    a = harness.local.start("A")
    assert park.reached.wait(timeout=120), f"A never reached {point}"
    harness.local.stop(a)
    assert harness.local.wait(a).status == "ABORTED"

    harness.put_streams(f2)
    b = harness.run("B")  # takes the lock over once A's functions are over
    park.release.set()  # A's warehouse batch (if that is the zombie) commits now, late
    for zombie in harness.local.zombies:
        zombie.join(timeout=120)
    c = harness.run("C")

    assert b.status == "SUCCEEDED", b.cause
    assert c.status == "SUCCEEDED", c.cause
    assert "TakeOverLock" in b.states_entered()
    reference = compute_reference(sample.users_csv, sample.songs_csv, [f1, f2])
    assert_matches_reference(harness.warehouse(), reference)
    assert harness.keys(harness.data_bucket, "ledger/pending/") == [], "markers left"
    landing_bucket, prefix = harness.landing
    assert harness.keys(landing_bucket, prefix) == [], "a file left in landing"
    archived = harness.keys(harness.data_bucket, "archive/")
    for path in (f1, f2):
        assert any(key.endswith("/" + path.name) for key in archived), path.name
    when = (
        "after B loaded (a warehouse batch)"
        if point.action == "commit"
        else "while B waited out A's functions"
    )
    ZOMBIE_MATRIX[str(point)] = (
        f"A stopped before it, wrote it {when}; B {b.output['status']}, next run "
        f"{c.output['status']}; warehouse = reference, nothing pending, no file lost"
    )


REPLAY = {"replay_quarantine": {"reasons": ["unknown_user_id"]}}
REPLAY_ZOMBIE_POINTS = (
    SideEffect("ReplayQuarantine", "put", "curated plays"),
    SideEffect("ReplayQuarantine", "put", "pending marker"),
    SideEffect("ReplayQuarantine", "put", "ledger entry"),
)


@pytest.fixture(scope="module")
def late_users(tmp_path_factory, sample) -> tuple[Path, Path]:
    """A file of plays by four users the source lacks yet (on a date no other file has, so
    it is never pinned), and the users table with them."""
    folder = tmp_path_factory.mktemp("zombie-late-users")
    track = sample.songs_csv.read_text().splitlines()[1].split(",")[1]
    late = folder / "streams_late_users.csv"
    day = DAY + dt.timedelta(days=7)
    late.write_text(
        "user_id,track_id,listen_time\n"
        + "".join(f"{9000 + n},{track},{day} 1{n}:00:00\n" for n in range(4))
    )
    users = folder / "users.csv"
    lines = sample.users_csv.read_text().splitlines()
    first = lines[1].split(",")
    users.write_text(
        "\n".join([*lines, *(",".join([str(9000 + n), *first[1:]]) for n in range(4))]) + "\n"
    )
    return late, users


@pytest.mark.parametrize("point", REPLAY_ZOMBIE_POINTS, ids=str)
def test_a_stopped_replays_write_after_another_replay_took_the_lock_counts_nothing_twice(
    harness, sample, day_files, late_users, point: SideEffect
) -> None:
    """Replay A is stopped before a write; replay B takes the lock over and accepts the rows;
    A's write lands late. Each row is accepted once, and the warehouse is the reference."""
    f1, _ = day_files
    late, users = late_users
    harness.load_source(sample.users_csv, sample.songs_csv)
    harness.put_streams(f1, late)
    assert harness.run("day-1").output["rows_quarantined"]["unknown_user_id"] >= 4
    harness.load_source(users, sample.songs_csv)
    park = harness.local.side_effects.park_before(point, "A")
    a = harness.local.start("A", REPLAY)
    assert park.reached.wait(timeout=120), f"A never reached {point}"
    harness.local.stop(a)
    assert harness.local.wait(a).status == "ABORTED"

    b = harness.run("B", REPLAY)
    park.release.set()
    for zombie in harness.local.zombies:
        zombie.join(timeout=120)
    c = harness.run("C")

    assert b.status == "SUCCEEDED", b.cause
    assert c.status == "SUCCEEDED", c.cause
    reference = compute_reference(users, sample.songs_csv, [f1, late])
    assert_matches_reference(harness.warehouse(), reference)
    assert harness.keys(harness.data_bucket, "ledger/pending/") == [], "markers left"
    entries = [
        harness.local.read_json(harness.data_bucket, key)
        for key in harness.keys(harness.data_bucket, "ledger/files/")
        if "-replay-" in key
    ]
    accepted = [(e["replay_of"], n) for e in entries for n in e["replayed_rows"]]
    assert len(accepted) == len(set(accepted)) == 4, "a row accepted twice, or lost"
    ZOMBIE_MATRIX[str(point)] = (
        f"replay A stopped before it, wrote it while B waited out A's functions; B "
        f"{b.output['status']}, next run {c.output['status']}; warehouse = reference, each "
        "row accepted once"
    )


def test_a_redriven_run_writes_nothing_once_another_run_holds_the_lock(harness, sample, day_files):
    """A fails at Load (released its lock); B loads; A is redriven from Load: its Load sees
    the lock is B's and refuses (LockLost), and the warehouse keeps B's rows."""
    f1, f2 = day_files
    harness.load_source(sample.users_csv, sample.songs_csv)
    harness.put_streams(f1)
    real = harness.local._handlers
    (load_name,) = [n for n, (f, _) in real.items() if f.handler == "load.handler.handler"]
    function, handler = real[load_name]

    def broken(event, context):
        raise RuntimeError("the warehouse went away")

    real[load_name] = (function, broken)
    a = harness.run("A")
    assert a.status == "FAILED" and a.failed_state == "Load"
    real[load_name] = (function, handler)
    harness.put_streams(f2)
    b = harness.run("B")
    assert b.output["status"] == "loaded"
    before = harness.warehouse()

    redriven = harness.local.wait(harness.local.redrive(a))

    assert redriven.status == "FAILED"
    assert redriven.error == "LockLost"
    assert "no longer holds the pipeline's lock" in str(redriven.cause)
    assert harness.warehouse() == before
    reference = compute_reference(sample.users_csv, sample.songs_csv, [f1, f2])
    assert_matches_reference(harness.warehouse(), reference)


def test_a_stopped_run_redriven_before_anyone_took_the_lock_finishes_its_work(
    harness, sample, day_files
):
    """Stopped in Load with the lock still its own, A is redriven from Load: it loads."""
    f1, _ = day_files
    harness.load_source(sample.users_csv, sample.songs_csv)
    harness.put_streams(f1)
    park = harness.local.side_effects.park_before(
        SideEffect("Load", "commit", "warehouse dates"), "A"
    )
    a = harness.local.start("A")
    assert park.reached.wait(timeout=120)
    harness.local.stop(a)  # its Load's batch never commits: it stands for one cancelled
    stopped = harness.local.wait(a)
    assert stopped.status == "ABORTED"

    redriven = harness.local.wait(harness.local.redrive(stopped))

    assert redriven.status == "SUCCEEDED", redriven.cause
    assert redriven.output["status"] == "loaded"
    assert redriven.states_entered()[0] == "Load"
    reference = compute_reference(sample.users_csv, sample.songs_csv, [f1])
    assert_matches_reference(harness.warehouse(), reference)
    park.release.set()  # the first batch, let go now, loads the same dates again
    for zombie in harness.local.zombies:
        zombie.join(timeout=120)
    assert_matches_reference(harness.warehouse(), reference)


def test_a_name_used_before_is_refused_before_anything_is_touched(harness, sample, day_files):
    """Issue 17, item 4: Step Functions takes a name again 90 days after its execution
    closed, and a recompute under it kept the old run's catalogue copy as its own."""
    f1, _ = day_files
    harness.load_source(sample.users_csv, sample.songs_csv)
    harness.put_streams(f1)
    assert harness.run("monthly-fix").output["status"] == "loaded"

    # The same name, 90 days later (moto keeps every name: the step is invoked as then), when
    # the lifecycle rule has expired runs/ (the catalogue copy and the archive stay).
    s3 = harness.local.client("s3")
    for key in harness.keys(harness.data_bucket, "runs/"):
        if "monthly-fix" in key:
            s3.delete_object(Bucket=harness.data_bucket, Key=key)
    with pytest.raises(RuntimeError, match="InvalidRequest") as refused:
        harness.local.invoke_handler(
            "transform.request.handler",
            {
                "run_id": "monthly-fix",
                "execution_input": {
                    "recompute": {"from": "2024-06-24", "to": "2024-06-24", "catalogue": "current"}
                },
            },
        )
    assert "an execution named 'monthly-fix' ran before" in str(refused.value)
    fresh = harness.local.invoke_handler(
        "transform.request.handler", {"run_id": "monthly-fix-2", "execution_input": {}}
    )
    assert fresh["kind"] == "daily"


@pytest.mark.parametrize(
    "handler",
    [
        "extract_s3.handler.ingest_file",
        "transform.plan.handler",
        "load.handler.handler",
        "archive.handler.handler",
    ],
)
def test_a_step_whose_lock_token_is_no_longer_current_writes_nothing(
    harness, sample, day_files, handler
):
    """Each step that writes what other runs read checks the lock first: called again with
    a run's token after that run released the lock (a redrive, a late retry), it fails with
    LockLost before its first write. Removing the check from any one step fails its case."""
    f1, _ = day_files
    events: list[dict] = []

    def recording(real):
        def call(event, context):
            events.append(event)
            return real(event, context)

        return call

    harness.wrap_handler(handler, recording)
    harness.load_source(sample.users_csv, sample.songs_csv)
    harness.put_streams(f1)
    assert harness.run("A").output["status"] == "loaded"
    harness.put_streams(f1)  # what an ingest would take again
    writes = len(harness.local.side_effects.seen)

    with pytest.raises(RuntimeError, match="LockLost"):
        harness.local.invoke_handler(handler, events[0])

    assert harness.local.side_effects.seen[writes:] == []
