"""A real Spark standalone cluster on loopback (master + one worker from the pip install), and a
job submitted to it through spark-submit.sh: executors are separate JVMs and Python workers."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path

import pyspark
import pytest
from deltalake import DeltaTable

from conftest import REPO

pytestmark = [pytest.mark.slow, pytest.mark.cluster]
SPARK_HOME = Path(pyspark.__file__).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.3)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port}")


@pytest.fixture(scope="module")
def standalone_cluster(tmp_path_factory):
    logs = tmp_path_factory.mktemp("cluster")
    env = {**os.environ, "SPARK_HOME": str(SPARK_HOME), "SPARK_LOCAL_IP": "127.0.0.1",
           "SPARK_WORKER_DIR": str(logs / "work")}
    port, ui = free_port(), free_port()
    spark_class = str(SPARK_HOME / "bin" / "spark-class")
    master = subprocess.Popen([spark_class, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                               "--port", str(port), "--webui-port", str(ui)], env=env,
                              stdout=open(logs / "master.log", "w"), stderr=subprocess.STDOUT)
    worker = None
    try:
        wait_for_port(port)
        url = f"spark://127.0.0.1:{port}"
        worker = subprocess.Popen([spark_class, "org.apache.spark.deploy.worker.Worker", url, "--host", "127.0.0.1",
                                   "--cores", "1", "--memory", "1g", "--webui-port", str(free_port())], env=env,
                                  stdout=open(logs / "worker.log", "w"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while "Successfully registered with master" not in (logs / "worker.log").read_text():
            assert time.monotonic() < deadline, (logs / "worker.log").read_text()[-2000:]
            time.sleep(0.3)
        yield url
    finally:
        for proc in (worker, master):
            if proc is not None:
                proc.terminate()
                proc.wait(timeout=30)


def test_job_runs_on_standalone_cluster(standalone_cluster, tmp_path):
    env = {**os.environ, "STRATA_LAKE__ROOT": str(tmp_path / "lake")}
    result = subprocess.run([str(REPO / "spark-submit.sh"), "lake_smoke", "--env", "local", "--master", standalone_cluster,
                             "--run-date", "2024-04-01", "--rows", "2000"],
                            capture_output=True, text=True, env=env, timeout=600, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["status"] == "ok" and summary["rows_read"] == 2001
    assert summary["master"] == standalone_cluster
    assert DeltaTable(summary["tables"]["smoke.events"]["path"]).to_pyarrow_table().num_rows == 2001
