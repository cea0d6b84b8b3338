"""The AWS CDK app of the music KPI pipeline (one stack per environment)."""
