"""Redshift's grammar and reserved words, enforced on every statement the pipeline sends.

Locally the warehouse is PostgreSQL, which accepts SQL Redshift refuses (``AS top``: TOP
is reserved in Redshift). Every statement the Redshift adapter would send is parsed here
with sqlfluff's ``redshift`` dialect (pinned in requirements-dev.txt) and its identifiers
checked against Redshift's reserved words (``reserved_words.txt``, from the Developer
Guide). A statement that does not parse fails the call that would have sent it, naming it.

Literals never change what parses, so statements are cached by their shape (string
literals and numbers blanked): a run parses each shape once.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from kpi_pipeline.errors import WarehouseStatementFailed

RESERVED_WORDS = frozenset(
    line.strip().upper()
    for line in (Path(__file__).parent / "reserved_words.txt").read_text().splitlines()
    if line.strip() and not line.startswith("#")
)


@dataclass(frozen=True)
class Allowance:
    """A statement Redshift documents but sqlfluff's dialect does not parse."""

    pattern: re.Pattern[str]
    reason: str


# Kept short: each entry is a real Redshift construct the parser lacks, with its source.
ALLOWED: tuple[Allowance, ...] = (
    Allowance(
        re.compile(r"^(GRANT|REVOKE) ASSUMEROLE ON ('[^']*'|ALL|DEFAULT)( FROM| TO) ", re.I),
        "GRANT/REVOKE ASSUMEROLE (docs.aws.amazon.com/redshift/latest/dg/r_GRANT.html): "
        "sqlfluff 4.5's redshift dialect has no ASSUMEROLE privilege",
    ),
)

_STRING = re.compile(r"'(?:[^']|'')*'")
_NUMBER = re.compile(r"\b\d+(\.\d+)?\b")


class RedshiftWouldRefuse(WarehouseStatementFailed):
    """A statement Redshift's grammar or reserved words refuse (raised before it is run)."""


@dataclass
class GrammarCheck:
    """Every statement checked, by shape; what the test session and ``make run`` report."""

    shapes: set[str]
    statements: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    def check(self, statements: Iterable[str], what: str) -> None:
        """Raise :class:`RedshiftWouldRefuse` for the first statement Redshift refuses."""
        for number, statement in enumerate(statements, 1):
            shape = statement_shape(statement)
            with self._lock:
                self.statements += 1
                self.shapes.add(shape)
            if problem_of(shape):
                # Said of the statement itself: its literals, lines and positions.
                problem = problem_of(statement.strip()) or problem_of(shape)
                excerpt = " ".join(statement.split())[:300]
                raise RedshiftWouldRefuse(
                    f"Redshift would refuse statement {number} of {what}: {problem}. "
                    f"Statement: {excerpt}"
                )


CHECKED = GrammarCheck(shapes=set())


def statement_shape(statement: str) -> str:
    """The statement with its literals blanked: what decides whether it parses."""
    return _NUMBER.sub("0", _STRING.sub("'s'", statement.strip()))


@cache
def problem_of(shape: str) -> str | None:
    """Why Redshift refuses a statement of this shape, or None."""
    if any(allowance.pattern.match(shape) for allowance in ALLOWED):
        return None
    with _parse_lock:  # Map iterations run in threads; one parse at a time
        parsed = _linter().parse_string(shape + ";\n")
    if parsed.violations:
        return str(parsed.violations[0].desc())
    tree = parsed.tree
    if tree is None:
        return "nothing to parse"
    for segment in tree.recursive_crawl("naked_identifier"):
        if segment.raw.upper() in RESERVED_WORDS:
            line, position = segment.pos_marker.line_no, segment.pos_marker.line_pos
            return (
                f"Line {line}, Position {position}: '{segment.raw}' is a reserved word in "
                'Redshift (rename it, or delimit it: "name")'
            )
    return None


_parse_lock = threading.Lock()


@cache
def _linter() -> Any:
    from sqlfluff.core import FluffConfig, Linter

    return Linter(config=FluffConfig(overrides={"dialect": "redshift"}))


@contextlib.contextmanager
def redshift_grammar_enforced(check: GrammarCheck = CHECKED) -> Iterator[GrammarCheck]:
    """Within the block, the local warehouse refuses what Redshift's grammar refuses."""
    from kpi_pipeline.warehouse.postgres import REDSHIFT_CHECKS

    if check.check in REDSHIFT_CHECKS:  # already enforced (the tests enforce it throughout)
        yield check
        return
    REDSHIFT_CHECKS.append(check.check)
    try:
        yield check
    finally:
        REDSHIFT_CHECKS.remove(check.check)
