"""Development-only code: the demo runner, the demo data generator and the local S3 endpoint.

Never imported by a job: spark-submit.sh ships only lib/strata to executors (--py-files)."""
