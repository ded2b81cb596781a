"""A local S3 endpoint (moto server mode) on 127.0.0.1 with a free port, for the demo and tests.

    with LocalS3() as s3: ... s3.endpoint_url ...

The server runs in a child process (python -m strata_dev.local_s3): deltalake holds the GIL while it
waits on S3, so a server thread in the same interpreter would never answer it.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

# moto accepts any credentials; clients still need some. Placeholders, never real keys.
LOCAL_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "strata-local", "AWS_SECRET_ACCESS_KEY": "strata-local"}


def use_local_credentials() -> None:
    """Placeholder credentials for a local endpoint, unless the environment has some."""
    for name, value in LOCAL_CREDENTIALS.items():
        os.environ.setdefault(name, value)
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")


class LocalS3:
    def __init__(self, port: int = 0, start_timeout: float = 30.0):
        self.port = port
        self.start_timeout = start_timeout
        self._process: subprocess.Popen | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "LocalS3":
        use_local_credentials()
        with tempfile.TemporaryDirectory() as tmp:
            port_file = Path(tmp) / "port"
            self._process = subprocess.Popen(
                [sys.executable, "-m", "strata_dev.local_s3", "--port", str(self.port), "--port-file", str(port_file)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            deadline = time.monotonic() + self.start_timeout
            while not port_file.exists() or not port_file.read_text():
                if self._process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("the local S3 endpoint (moto server) did not start")
                time.sleep(0.05)
            self.port = int(port_file.read_text())
        return self

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
            self._process = None

    def __enter__(self) -> "LocalS3":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve a local S3 endpoint on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--port-file", type=Path, help="write the chosen port here once serving")
    args = parser.parse_args(argv)
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=args.port, verbose=False)
    server.start()
    port = server.get_host_and_port()[1]
    if args.port_file:
        tmp = args.port_file.with_suffix(".tmp")
        tmp.write_text(str(port))
        tmp.replace(args.port_file)  # atomic: readers never see a partial number
    if args.port_file is None:  # `make s3`: a person reads this
        endpoint = f"http://127.0.0.1:{port}"
        lines = [f"export STRATA_S3__ENDPOINT_URL={endpoint}"]
        lines += [f"export {name}={value}" for name, value in LOCAL_CREDENTIALS.items()]
        print(f"# local S3 endpoint (moto, in memory: its data goes when it stops) at {endpoint}; Ctrl-C stops it.\n"
              "# In the shell that runs jobs (--env local):\n" + "\n".join(lines), flush=True)
    else:
        print(f"local S3 endpoint: http://127.0.0.1:{port}", flush=True)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    try:
        stopped.wait()
    except KeyboardInterrupt:
        pass
    server.stop()


if __name__ == "__main__":
    main()
