"""Shared code of the music KPI pipeline's Lambda steps.

Handlers under ``lambdas/<step>/handler.py`` stay thin: they parse the state input into a
model from :mod:`kpi_pipeline.contracts`, call one logic function from this package and
return the output model. Everything that touches AWS or a database sits behind a small
adapter here, so the same logic runs in Lambda and on a laptop.
"""
