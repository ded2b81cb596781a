"""spark-submit entry point: ./spark-submit.sh silver --env local --dataset trips [--run-date D]"""
import sys

from strata.jobs import silver
from strata.runner import run

if __name__ == "__main__":
    sys.exit(run("silver", silver.run, sys.argv[1:], silver.add_arguments))
