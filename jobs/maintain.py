"""spark-submit entry point: ./spark-submit.sh maintain --env local [--dataset D]"""
import sys

from strata.jobs import maintain
from strata.runner import run

if __name__ == "__main__":
    sys.exit(run("maintain", maintain.run, sys.argv[1:], maintain.add_arguments))
