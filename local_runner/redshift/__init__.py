"""What Amazon Redshift enforces that the local PostgreSQL warehouse does not: its grammar
and reserved words (:mod:`grammar`), the rules of COPY from Parquet
(:mod:`kpi_pipeline.warehouse.copy_parquet`) and its database identities (:mod:`identities`)."""
