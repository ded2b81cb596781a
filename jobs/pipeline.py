"""spark-submit entry point: ./spark-submit.sh pipeline --env local [--run-date D] [--dataset NAME]"""
import sys

from strata.jobs import pipeline
from strata.runner import run

if __name__ == "__main__":
    sys.exit(run("pipeline", pipeline.run, sys.argv[1:], pipeline.add_arguments))
