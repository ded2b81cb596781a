"""spark-submit entry point: ./spark-submit.sh monitor --env local --model tips [--run-date D]"""
import sys

from strata.jobs import monitor
from strata.runner import run

if __name__ == "__main__":
    sys.exit(run("monitor", monitor.run, sys.argv[1:], monitor.add_arguments))
