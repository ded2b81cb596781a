"""spark-submit entry point: ./spark-submit.sh lake_smoke --env local [--run-date D] [--rows N]"""
import sys

from strata.jobs import lake_smoke
from strata.runner import run

if __name__ == "__main__":
    sys.exit(run("lake_smoke", lake_smoke.run, sys.argv[1:], lake_smoke.add_arguments))
