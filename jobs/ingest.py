"""spark-submit entry point: ./spark-submit.sh ingest --env local --dataset trips [--run-date D]"""
import sys

from strata.jobs import ingest
from strata.runner import run

if __name__ == "__main__":
    sys.exit(run("ingest", ingest.run, sys.argv[1:], ingest.add_arguments))
