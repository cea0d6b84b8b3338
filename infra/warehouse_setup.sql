-- The warehouse objects and privileges of the music KPI pipeline, environment {env}.
--
-- Run by a superuser of database {database} once, before the first run, and again after an
-- upgrade that changes this file: every statement may run again, except CREATE USER and
-- CREATE GROUP of one that exists (skip those). `make warehouse-sql ENV={env}` prints it.
-- The pipeline itself creates, alters and drops no table: its steps only read and write
-- rows, with exactly the privileges below. `make preflight ENV={env}` checks them.

-- 1. Who runs the pipeline's SQL.
-- {identity_note}
{create_users}
CREATE GROUP {readers};
CREATE GROUP {bi_group};

-- 2. The KPI table analysts read, and the stage table where the warehouse engine leaves a
-- date's rows until Load moves them (every attempt's batch stamped with its own id).
{create_table};

{create_stage};

-- The fence: the newest lock token that loaded the table. A load takes it in its own
-- transaction and is refused if a run with a newer token loaded since (a stopped run's
-- load, still running in the warehouse after another run took the pipeline's lock over).
{create_fence}

-- The views BI tools read (QuickSight, Tableau, Power BI: docs/bi.md), with plain column
-- names and comments: genre KPIs per day, hourly KPIs per date and hour, plays per day.
{create_views}

-- 3. What each step may do, and nothing more. Both use temporary tables (Load stages the
-- Lambda-computed parts, TransformInWarehouse its inputs and intermediate results).
{grant_temp_and_usage}
GRANT USAGE ON SCHEMA {schema} TO GROUP {readers};
GRANT INSERT ON {stage} TO {transform_user};
GRANT SELECT, DELETE ON {stage} TO {load_user};
GRANT SELECT, INSERT, DELETE ON {table} TO {load_user};
GRANT SELECT, UPDATE ON {fence} TO {load_user};
GRANT SELECT ON {table} TO GROUP {readers};
GRANT SELECT ON {views} TO GROUP {readers};
-- A BI tool's user reads the views, and nothing else: not the table, not the stage.
GRANT USAGE ON SCHEMA {schema} TO GROUP {bi_group};
GRANT SELECT ON {views} TO GROUP {bi_group};

-- 4. COPY reads S3 with the role {copy_role_arn},
-- which must be attached to the {warehouse_kind}. Until ASSUMEROLE is revoked from PUBLIC, Redshift lets every database user
-- use every attached role: revoke it (a change for the whole warehouse: first grant it to
-- any other workload that COPYs, UNLOADs or calls external functions), then grant it to
-- the pipeline's users for COPY only.
-- REVOKE ASSUMEROLE ON ALL FROM PUBLIC FOR ALL;
{grant_assumerole}

-- 5. Analysts and `make report` read the table and the views as members of {readers}; a BI
-- tool's user reads the views only, as a member of {bi_group}:
-- ALTER GROUP {readers} ADD USER "IAMR:analyst-role";
-- CREATE USER quicksight PASSWORD '<a password>'; ALTER GROUP {bi_group} ADD USER quicksight;
