"""Entry point: ./spark-submit.sh check --env local --dataset trips (runs without spark-submit)"""
import sys

from strata.jobs import check

if __name__ == "__main__":
    sys.exit(check.main(sys.argv[1:]))
