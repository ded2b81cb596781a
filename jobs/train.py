"""spark-submit entry point: ./spark-submit.sh train --env local --model tips [--table-version N] [--no-promote]"""
import sys

from strata.jobs import train
from strata.runner import run

if __name__ == "__main__":
    sys.exit(run("train", train.run, sys.argv[1:], train.add_arguments))
