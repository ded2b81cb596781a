"""spark-submit entry point: ./spark-submit.sh predict --env local --model tips [--run-date D]"""
import sys

from strata.jobs import predict
from strata.runner import run

if __name__ == "__main__":
    sys.exit(run("predict", predict.run, sys.argv[1:], predict.add_arguments))
