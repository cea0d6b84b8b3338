"""Redshift's grammar and reserved words (local_runner/redshift/grammar.py): every statement
the Redshift adapter would send parses with sqlfluff's redshift dialect and names no
reserved word."""

from __future__ import annotations

import datetime as dt

import pytest

from kpi_pipeline.warehouse.kpi_sql import date_kpi_statements
from local_runner.redshift.grammar import RESERVED_WORDS, GrammarCheck, RedshiftWouldRefuse


def check(statements: list[str]) -> None:
    GrammarCheck(shapes=set()).check(statements, "a test")


def test_the_warehouse_engines_kpi_sql_parses_as_redshift() -> None:
    """Issue 18, item 1: `AS top` (TOP is reserved) failed every warehouse date."""
    check(date_kpi_statements(dt.date(2024, 6, 25), "run-1"))


def test_a_reserved_word_as_an_alias_is_refused_naming_the_statement() -> None:
    with pytest.raises(
        RedshiftWouldRefuse, match=r"statement 2 of a test: Line 1, Position 8: Found unparsable"
    ):
        check(["SELECT 1", "SELECT top.a FROM t AS top"])


def test_a_reserved_word_the_parser_accepts_is_refused_by_the_word_list() -> None:
    """sqlfluff 4.5 takes ten of Redshift's reserved words for identifiers (GZIP, WALLET...)."""
    assert {"TOP", "OPEN", "SNAPSHOT", "GZIP", "WALLET"} <= RESERVED_WORDS
    with pytest.raises(RedshiftWouldRefuse, match="'gzip' is a reserved word in Redshift"):
        check(["SELECT gzip FROM t"])


def test_a_delimited_reserved_word_is_an_identifier() -> None:
    check(['SELECT "top".a FROM t AS "top"'])
