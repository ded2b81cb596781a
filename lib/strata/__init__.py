"""Strata: Spark jobs from raw S3 to bronze, silver and gold Delta tables, gated by Great
Expectations, with MLlib training tracked in MLflow."""
