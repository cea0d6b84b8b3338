"""The warehouse setup (infra/warehouse_setup.sql) and the identities it grants.

On Redshift Serverless with IAM authentication each function is its own database user,
``IAMR:<role name>``, and a table belongs to whoever created it. Locally each step's
statements run as that user, with only what the setup grants: a missing grant fails the
local run as it would fail in AWS.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from infra.config import load_config
from infra.steps import LOAD, TRANSFORM_IN_WAREHOUSE, role_name
from infra.warehouse_setup import REPO, main, render, statements, warehouse_users
from local_runner.redshift.grammar import GrammarCheck
from tests.harness import running_harness

CONTEXT = json.loads((REPO / "cdk.json").read_text())["context"]
LOAD_GRANT = 'GRANT SELECT, INSERT, DELETE ON music_kpi_metrics TO "IAMR:music-kpi-local-load"'


@pytest.mark.parametrize("env_name", ["local", "dev", "prod"])
def test_the_setup_of_every_environment_is_sql_redshift_parses(env_name: str) -> None:
    setup = render(load_config(CONTEXT, env_name))

    GrammarCheck(shapes=set()).check(statements(setup), f"the {env_name} setup")
    assert not [s for s in statements(setup) if s.upper().startswith(("DROP", "DELETE"))]


def test_serverless_users_are_the_functions_iam_roles_as_redshift_names_them(
    pipeline: Any,
) -> None:
    """The setup grants exactly the users the synthesized roles sign in as."""
    roles = {f.handler: f.role_name for f in pipeline.functions}
    users = warehouse_users(load_config(CONTEXT, "local"))

    assert users.load == f"IAMR:{roles[LOAD.handler]}" == "IAMR:music-kpi-local-load"
    assert users.transform == f"IAMR:{roles[TRANSFORM_IN_WAREHOUSE.handler]}"
    dev = warehouse_users(load_config(CONTEXT, "dev"))  # a workgroup, no secret
    assert dev.load == f"IAMR:{role_name('dev', LOAD)}"
    prod = warehouse_users(load_config(CONTEXT, "prod"))  # a cluster with a db_user
    assert prod.load == prod.transform == "kpi_loader"


def test_make_warehouse_sql_prints_the_environments_setup(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["prod"]) == 0
    printed = capsys.readouterr().out
    assert 'CREATE USER "kpi_loader" PASSWORD DISABLE;' in printed
    assert 'GRANT SELECT, INSERT, DELETE ON music_kpi_metrics TO "kpi_loader";' in printed
    assert main(["nowhere"]) == 2


@pytest.mark.e2e
def test_load_fails_with_permission_denied_without_its_grant(
    pipeline: Any, new_database: Any, tmp_path: Path, retry_sleeps: Any, sample: Any
) -> None:
    """Issue 18, item 2: the local warehouse runs Load as IAMR:music-kpi-local-load; with
    the setup's grant of DELETE on the table removed, the load is refused."""

    def without_delete(setup: str) -> str:
        assert LOAD_GRANT in setup
        return setup.replace(LOAD_GRANT, LOAD_GRANT.replace(", DELETE", ""))

    with running_harness(pipeline, new_database, tmp_path, edit_setup=without_delete) as h:
        h.load_source(sample.users_csv, sample.songs_csv)
        h.put_streams(*sample.stream_files[:1])
        execution = h.run("no-delete-grant")

    assert execution.status == "FAILED"
    assert execution.failed_state == "Load"
    assert "permission denied for table music_kpi_metrics" in str(execution.cause)


@pytest.mark.e2e
def test_no_step_owns_a_table_and_each_may_write_only_its_own(harness: Any, sample: Any) -> None:
    """After a run, the tables are still the setup administrator's (no step created one),
    and TransformInWarehouse still may not write the KPI table."""
    harness.load_source(sample.users_csv, sample.songs_csv)
    harness.put_streams(*sample.stream_files[:1])
    assert harness.run("own-users").output["status"] == "loaded"

    conn = psycopg2.connect(harness.warehouse_dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT tableowner FROM pg_tables WHERE tablename LIKE 'music_kpi_metrics%'"
            )
            owners = {row[0] for row in cur.fetchall()}
            cur.execute(
                "SELECT has_table_privilege('IAMR:music-kpi-local-transform-in-warehouse', "
                "'music_kpi_metrics', 'INSERT')"
            )
            (transform_may_write,) = cur.fetchone()
    finally:
        conn.close()
    assert owners == {"postgres"}
    assert transform_may_write is False
