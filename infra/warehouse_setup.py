"""The warehouse's tables, users and grants for one environment: ``make warehouse-sql``.

The SQL is one file, ``infra/warehouse_setup.sql``, filled in from the environment's
configuration: who each step is in the database, and what it may do. On Redshift Serverless
with IAM authentication each function is its own database user, named from its IAM role
(``IAMR:music-kpi-dev-load``); on a provisioned cluster the functions share
``warehouse.db_user``; with ``warehouse.secret_arn`` they share the secret's user.

The local run applies the same file to its PostgreSQL warehouse (:func:`postgres_statements`
says how each statement is carried over) and runs every step as its own role, so a missing
grant fails locally as it would in Redshift.
"""

from __future__ import annotations

import re
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

from infra.config import ConfigError, PipelineConfig, load_config
from infra.steps import LOAD, TRANSFORM_IN_WAREHOUSE, role_name
from kpi_pipeline.warehouse.schema import (
    BI_VIEWS,
    create_fence_sql,
    create_stage_table_sql,
    create_table_sql,
    create_view_sql,
    fence_table,
    stage_table,
)

REPO = Path(__file__).resolve().parent.parent
TEMPLATE = Path(__file__).with_name("warehouse_setup.sql")
READERS = "music_kpi_readers"
BI_GROUP = "music_kpi_bi"  # BI tools' users: the views only (docs/bi.md)
SECRET_USER = "<the user in warehouse.secret_arn>"  # noqa: S105 - a placeholder, no secret


@dataclass(frozen=True)
class WarehouseUsers:
    """The database users the two warehouse steps run as."""

    transform: str  # TransformInWarehouse
    load: str  # Load
    note: str  # how they were derived

    @property
    def distinct(self) -> list[str]:
        return list(dict.fromkeys((self.transform, self.load)))


def warehouse_users(config: PipelineConfig) -> WarehouseUsers:
    """Who TransformInWarehouse and Load are in the warehouse, as Redshift names them."""
    w = config.warehouse
    if w.kind == "postgres" or (w.workgroup and not w.secret_arn):
        return WarehouseUsers(
            transform=f"IAMR:{role_name(config.name, TRANSFORM_IN_WAREHOUSE)}",
            load=f"IAMR:{role_name(config.name, LOAD)}",
            note="On Redshift Serverless the Data API signs in as the function's IAM role: "
            "the database user is IAMR:<role name>, one per function (created here so that "
            "it can be granted before its first sign-in).",
        )
    if w.db_user:
        return WarehouseUsers(
            w.db_user, w.db_user, "Both functions sign in as warehouse.db_user (the cluster)."
        )
    return WarehouseUsers(
        SECRET_USER,
        SECRET_USER,
        "Both functions sign in as the user of warehouse.secret_arn: put its name below.",
    )


def copy_role_arn(config: PipelineConfig) -> str:
    """The configured COPY role, or the one the stack creates (infra/functions.py)."""
    if config.warehouse.copy_role_arn:
        return config.warehouse.copy_role_arn
    account = config.account or "123456789012"
    return f"arn:aws:iam::{account}:role/music-kpi-{config.name}-redshift-copy"


def render(config: PipelineConfig, database: str | None = None) -> str:
    """The setup SQL of ``config``'s environment (Redshift's dialect); ``database`` names
    the database when it is not the configuration's (a local one)."""
    w = config.warehouse
    users = warehouse_users(config)
    table = w.table
    schema = table.split(".", 1)[0] if "." in table else "public"
    kind = "workgroup's namespace" if w.workgroup else "cluster"
    values = {
        "env": config.name,
        "database": database or w.database or "music_warehouse",
        "identity_note": "\n-- ".join(textwrap.wrap(users.note, 88)),
        "create_users": "\n".join(
            f"CREATE USER {_quoted(user)} PASSWORD DISABLE;"
            if user != SECRET_USER
            else "-- (the secret's user exists already: it signs in with its password)"
            for user in users.distinct
        ),
        "readers": READERS,
        "bi_group": BI_GROUP,
        "create_views": "\n\n".join(
            "\n".join(f"{sql};" for sql in create_view_sql(table, view)) for view in BI_VIEWS
        ),
        "views": ", ".join(view.name(table) for view in BI_VIEWS),
        "create_table": create_table_sql(table),
        "create_stage": create_stage_table_sql(stage_table(table)),
        "create_fence": "\n".join(f"{sql};" for sql in create_fence_sql(fence_table(table))),
        "fence": fence_table(table),
        "grant_temp_and_usage": "\n".join(
            line
            for user in users.distinct
            for line in (
                f"GRANT TEMP ON DATABASE {database or w.database or 'music_warehouse'} "
                f"TO {_quoted(user)};",
                f"GRANT USAGE ON SCHEMA {schema} TO {_quoted(user)};",
            )
        ),
        "grant_assumerole": "\n".join(
            f"GRANT ASSUMEROLE ON '{copy_role_arn(config)}' TO {_quoted(user)} FOR COPY;"
            for user in users.distinct
        ),
        "transform_user": _quoted(users.transform),
        "load_user": _quoted(users.load),
        "schema": schema,
        "table": table,
        "stage": stage_table(table),
        "copy_role_arn": copy_role_arn(config),
        "warehouse_kind": kind,
    }
    return TEMPLATE.read_text().format(**values)


def statements(sql: str) -> list[str]:
    """The statements of a setup SQL text, comments dropped, without their semicolons."""
    code = "\n".join(line for line in sql.splitlines() if not line.lstrip().startswith("--"))
    return [part.strip() for part in code.split(";") if part.strip()]


_REDSHIFT_ONLY = re.compile(r"^(GRANT|REVOKE) ASSUMEROLE\b", re.I)
_TABLE_TAIL = re.compile(r"\)\s*DISTSTYLE\s+\w+(\s+SORTKEY\s*\([^)]*\))?\s*$", re.I)


def postgres_statements(sql: str) -> list[tuple[str, str | None]]:
    """The setup as the local PostgreSQL warehouse runs it: (statement, role) pairs, where
    ``role`` names a role the statement creates (run only if it does not exist yet).

    Carried over as they are, but for three things PostgreSQL lacks: ``PASSWORD DISABLE``
    (local roles sign in without a password), a table's ``DISTSTYLE``/``SORTKEY``, and the
    ASSUMEROLE privilege (the local IAM check holds the COPY role to its S3 grants instead).
    """
    carried: list[tuple[str, str | None]] = []
    for statement in statements(sql):
        if _REDSHIFT_ONLY.match(statement):
            continue
        creates = re.match(r'^CREATE (USER|GROUP) ("[^"]+"|\w+)', statement, re.I)
        statement = re.sub(r"\s+PASSWORD DISABLE$", "", statement, flags=re.I)
        statement = _TABLE_TAIL.sub(")", statement)
        carried.append((statement, creates.group(2).strip('"') if creates else None))
    return carried


def _quoted(user: str) -> str:
    return '"' + user.replace('"', '""') + '"'


def main(argv: list[str]) -> int:
    import json

    env_name = argv[0] if argv else "dev"
    context = json.loads((REPO / "cdk.json").read_text())["context"]
    try:
        config = load_config(context, env_name)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(render(config), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
