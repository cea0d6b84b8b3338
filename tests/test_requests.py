"""What an execution may ask for (kpi_pipeline.requests), and how `make run` asks it."""

from __future__ import annotations

import argparse
import datetime as dt

import pytest

from kpi_pipeline.errors import InvalidRequest
from kpi_pipeline.reasons import REPLAYABLE_REASONS, RowReason
from kpi_pipeline.requests import check_request, check_run_id
from local_runner.__main__ import execution_input
from local_runner.run import UsageError


def check(execution_input: object, max_days: int = 31):
    return check_request(execution_input, max_recompute_days=max_days)


@pytest.mark.parametrize(
    "daily",
    [
        None,
        {},
        {"trigger": "schedule"},
        {"Comment": "Insert your JSON here"},
        {"full_extract": True},
    ],
)
def test_the_schedule_the_console_and_a_full_extract_are_daily_runs(daily):
    assert check(daily).kind == "daily"


def test_a_recompute_takes_its_range_inclusive_and_keeps_pins_by_default():
    options = check({"recompute": {"from": "2024-06-01", "to": "2024-07-01"}})
    assert (options.kind, options.catalogue) == ("recompute", "pinned")
    assert (options.date_from, options.date_to) == (dt.date(2024, 6, 1), dt.date(2024, 7, 1))
    # 31 days is the limit here; one day more is refused, naming the setting
    with pytest.raises(InvalidRequest, match=r"32 days .* max_recompute_days \(31\)"):
        check({"recompute": {"from": "2024-06-01", "to": "2024-07-02"}})
    one_day = check(
        {"recompute": {"from": "2024-06-01", "to": "2024-06-01", "catalogue": "current"}}
    )
    assert one_day.catalogue == "current" and one_day.covers(dt.date(2024, 6, 1))
    assert not one_day.covers(dt.date(2024, 6, 2))


def test_a_revalidation_takes_a_bounded_range_of_dates():
    options = check(
        {"revalidate": {"from": "2024-06-01", "to": "2024-06-30"}, "full_extract": True}
    )
    assert (options.kind, options.date_from, options.date_to) == (
        "revalidate",
        dt.date(2024, 6, 1),
        dt.date(2024, 6, 30),
    )
    with pytest.raises(InvalidRequest, match=r"revalidate covers 32 days .* max_recompute_days"):
        check({"revalidate": {"from": "2024-06-01", "to": "2024-07-02"}})


def test_a_replay_takes_replayable_reasons_and_an_optional_range():
    options = check({"replay_quarantine": {"reasons": ["unknown_track_id", "unknown_user_id"]}})
    assert options.kind == "replay_quarantine"
    assert options.reasons == ["unknown_track_id", "unknown_user_id"]
    assert options.date_from is options.date_to is None
    assert options.covers(dt.date(1999, 1, 1))
    ranged = check({"replay_quarantine": {"reasons": ["unknown_user_id"], "from": "2024-06-25"}})
    assert ranged.date_from == dt.date(2024, 6, 25) and ranged.date_to is None
    with pytest.raises(InvalidRequest, match="is after"):
        check(
            {
                "replay_quarantine": {
                    "reasons": ["unknown_user_id"],
                    "from": "2024-06-25",
                    "to": "2024-06-24",
                }
            }
        )


def test_only_the_reasons_a_snapshot_decides_can_be_replayed():
    assert set(REPLAYABLE_REASONS) == {RowReason.UNKNOWN_USER_ID, RowReason.UNKNOWN_TRACK_ID}
    for reason in set(RowReason) - set(REPLAYABLE_REASONS):
        with pytest.raises(InvalidRequest, match="can never pass"):
            check({"replay_quarantine": {"reasons": [reason.value]}})
    with pytest.raises(InvalidRequest, match="not a row quarantine reason"):
        check({"replay_quarantine": {"reasons": ["missing_columns"]}})


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ([1, 2], "must be a JSON object, not a list"),
        ({"full_extract": "yes"}, "'full_extract' must be true or false"),
        ({"recompute": "2024-06-25"}, "must be an object"),
        ({"recompute": {"from": "2024-06-25", "to": "2024-06-25", "until": "x"}}, "unknown key"),
        ({"recompute": {"from": 20240625, "to": "2024-06-25"}}, "YYYY-MM-DD, not 20240625"),
        ({"recompute": {"from": "2024-06-25T00:00", "to": "2024-06-25"}}, "YYYY-MM-DD"),
        ({"replay_quarantine": {"reasons": "unknown_user_id"}}, "non-empty list"),
        ({"revalidate": {"from": "2024-06-25"}}, r"'revalidate' .*\['from', 'to'\]|lacks"),
        ({"revalidate": {"from": "2024-06-26", "to": "2024-06-25"}}, "is after revalidate.to"),
        (
            {"revalidate": {"from": "2024-06-25", "to": "2024-06-25"}, "recompute": {}},
            "'recompute' and 'revalidate' cannot be asked in one execution",
        ),
    ],
)
def test_a_bad_request_says_what_to_fix(bad, message):
    with pytest.raises(InvalidRequest, match=message):
        check(bad)


def test_no_run_may_be_named_like_the_outcomes_folder():
    check_run_id("outcome")
    check_run_id("daily-2024-06-25")
    with pytest.raises(InvalidRequest, match="may not be named 'outcomes'"):
        check_run_id("outcomes")


def args(**given: object) -> argparse.Namespace:
    values = {
        "recompute": None,
        "catalogue": None,
        "replay": None,
        "dates": None,
        "revalidate": None,
        "full_extract": False,
        **given,
    }
    return argparse.Namespace(**values)


def test_make_run_turns_its_variables_into_the_execution_input():
    assert execution_input(args()) == {}
    assert execution_input(args(recompute="2024-06-24..2024-06-25", catalogue="current")) == {
        "recompute": {"from": "2024-06-24", "to": "2024-06-25", "catalogue": "current"}
    }
    assert execution_input(args(recompute="2024-06-24")) == {
        "recompute": {"from": "2024-06-24", "to": "2024-06-24", "catalogue": "pinned"}
    }
    assert execution_input(
        args(replay="unknown_user_id, unknown_track_id", dates="2024-06-24..2024-06-25")
    ) == {
        "replay_quarantine": {
            "reasons": ["unknown_user_id", "unknown_track_id"],
            "from": "2024-06-24",
            "to": "2024-06-25",
        }
    }
    assert execution_input(args(revalidate="2024-06-24..2024-06-25", full_extract=True)) == {
        "full_extract": True,
        "revalidate": {"from": "2024-06-24", "to": "2024-06-25"},
    }
    assert execution_input(args(full_extract=True)) == {"full_extract": True}
    for wrong in (
        args(recompute="2024-06-24", replay="unknown_user_id"),
        args(revalidate="2024-06-24", replay="unknown_user_id"),
        args(catalogue="current"),
        args(dates="2024-06-24"),
    ):
        with pytest.raises(UsageError):
            execution_input(wrong)


def test_a_name_longer_than_the_kpi_tables_run_id_is_refused():
    """Step Functions takes 80 characters, any script: 80 of 'é' are 160 bytes, and the KPI
    table's run_id (docs/kpis.md) is a VARCHAR(128), counted in bytes by Redshift."""
    check_run_id("é" * 64)  # 128 bytes
    with pytest.raises(InvalidRequest, match=r"at most 128 bytes in UTF-8.*this one has 160"):
        check_run_id("é" * 80)
