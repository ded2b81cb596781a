"""What each job does; jobs/<name>.py at the repo root are the thin spark-submit entry points."""
