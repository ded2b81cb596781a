"""Entry point: ./spark-submit.sh upload --env local --dataset D FILE... (runs without spark-submit)"""
import sys

from strata.jobs import upload
from strata.runner import run

if __name__ == "__main__":
    sys.exit(run("upload", upload.run, sys.argv[1:], upload.add_arguments))
