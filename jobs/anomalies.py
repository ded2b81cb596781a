"""spark-submit entry point: ./spark-submit.sh anomalies --env local --dataset trips [--run-date D] [--manifest URI_OR_PATH]"""
import sys

from strata.jobs import anomalies
from strata.runner import run

if __name__ == "__main__":
    sys.exit(run("anomalies", anomalies.run, sys.argv[1:], anomalies.add_arguments))
