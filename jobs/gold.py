"""spark-submit entry point: ./spark-submit.sh gold --env local --dataset trips [--run-date D]"""
import sys

from strata.jobs import gold
from strata.runner import run

if __name__ == "__main__":
    sys.exit(run("gold", gold.run, sys.argv[1:], gold.add_arguments))
