"""The fault-injecting S3 proxy (tests/faults.py): it forwards what it does not fault unchanged,
and each fault kind reaches boto3 and deltalake as a real failure would. Against the local S3
endpoint; no Spark."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import boto3
import pyarrow as pa
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, ConnectionClosedError
from deltalake import DeltaTable, write_deltalake

from faults import Fault, FaultProxy


@pytest.fixture(scope="module")
def running(s3_endpoint):
    with FaultProxy(s3_endpoint) as proxy:
        yield proxy


@pytest.fixture
def proxy(running):
    running.clear()
    running.reset_log()
    yield running
    running.clear()


def client(endpoint: str, attempts: int = 1):
    """attempts counts the first try too (botocore's total_max_attempts; its max_attempts counts
    retries only)."""
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                        config=Config(retries={"mode": "standard", "total_max_attempts": attempts},
                                      connect_timeout=5, read_timeout=30))


def direct(s3_endpoint):
    return client(s3_endpoint)


def delta_options(endpoint: str) -> dict[str, str]:
    return {"AWS_ENDPOINT_URL": endpoint, "AWS_ALLOW_HTTP": "true", "AWS_REGION": "us-east-1"}


def test_requests_pass_through_unchanged(proxy, s3_bucket):
    s3 = client(proxy.endpoint_url)
    big = os.urandom(5 << 20)  # several copy chunks; boto3 sends it with Expect: 100-continue
    s3.put_object(Bucket=s3_bucket, Key="raw/big.bin", Body=big)
    s3.put_object(Bucket=s3_bucket, Key="raw/small name+odd.csv", Body=b"a,b\n1,2\n")
    assert s3.get_object(Bucket=s3_bucket, Key="raw/big.bin")["Body"].read() == big
    assert s3.get_object(Bucket=s3_bucket, Key="raw/small name+odd.csv", Range="bytes=4-6")["Body"].read() == b"1,2"
    assert s3.head_object(Bucket=s3_bucket, Key="raw/big.bin")["ContentLength"] == len(big)
    listed = s3.list_objects_v2(Bucket=s3_bucket, Prefix="raw/")
    assert sorted(o["Key"] for o in listed["Contents"]) == ["raw/big.bin", "raw/small name+odd.csv"]

    log = proxy.log()
    assert [(e.method, e.status) for e in log] == [("PUT", 200), ("PUT", 200), ("GET", 200), ("GET", 206),
                                                    ("HEAD", 200), ("GET", 200)]
    assert log[1].path == f"/{s3_bucket}/raw/small name+odd.csv"  # decoded, for readable rules
    assert log[-1].path == f"/{s3_bucket}" and "list-type=2" in log[-1].query
    assert all(e.fault is None and e.upstream_status == e.status for e in log)
    # the client signed for the proxy's host:port, and that is what moto was sent
    assert {e.headers["host"] for e in log} == {f"127.0.0.1:{proxy.port}"}
    assert all(e.headers["authorization"].startswith("AWS4-HMAC-SHA256") for e in log)


def test_status_fault_fails_the_request_without_forwarding_it(proxy, s3_bucket, s3_endpoint):
    direct(s3_endpoint).put_object(Bucket=s3_bucket, Key="trips/a.csv", Body=b"x")
    unavailable = proxy.add(Fault("GET", rf"/{s3_bucket}/trips/.*a\.csv$", kind="status", status=503, times=None))
    with pytest.raises(ClientError) as raised:
        client(proxy.endpoint_url, attempts=1).get_object(Bucket=s3_bucket, Key="trips/a.csv")
    assert raised.value.response["Error"]["Code"] == "ServiceUnavailable"
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    assert proxy.hits(unavailable) == 1
    [entry] = proxy.log()
    assert (entry.method, entry.status, entry.upstream_status, entry.fault) == ("GET", 503, None, unavailable)
    # other methods and other keys are not matched
    client(proxy.endpoint_url).put_object(Bucket=s3_bucket, Key="trips/b.csv", Body=b"y")
    assert client(proxy.endpoint_url).get_object(Bucket=s3_bucket, Key="trips/b.csv")["Body"].read() == b"y"
    assert proxy.hits(unavailable) == 1


def test_transient_status_is_retried_through(proxy, s3_bucket, s3_endpoint):
    direct(s3_endpoint).put_object(Bucket=s3_bucket, Key="trips/a.csv", Body=b"x")
    slow = proxy.add(Fault("GET", r"/trips/a\.csv$", status=503, code="SlowDown", times=2))
    assert client(proxy.endpoint_url, attempts=3).get_object(Bucket=s3_bucket, Key="trips/a.csv")["Body"].read() == b"x"
    assert proxy.hits(slow) == 2
    assert [e.status for e in proxy.log()] == [503, 503, 200]
    assert proxy.rules() == [slow]  # spent, still listed until removed


def test_reset_is_a_connection_error_and_upstream_never_sees_the_request(proxy, s3_bucket, s3_endpoint):
    reset = proxy.add(Fault("PUT", r"/trips/a\.csv$", kind="reset", times=None))
    with pytest.raises(ConnectionClosedError):
        client(proxy.endpoint_url, attempts=2).put_object(Bucket=s3_bucket, Key="trips/a.csv", Body=b"x")
    assert proxy.hits(reset) == 2
    assert [(e.status, e.upstream_status) for e in proxy.log()] == [(None, None), (None, None)]
    assert "Contents" not in direct(s3_endpoint).list_objects_v2(Bucket=s3_bucket)
    proxy.remove(reset)
    client(proxy.endpoint_url).put_object(Bucket=s3_bucket, Key="trips/a.csv", Body=b"x")  # the connection pool recovers


@pytest.mark.parametrize("code", ["AccessDenied", "InvalidAccessKeyId"])
def test_deny_is_403_and_not_retried(proxy, s3_bucket, s3_endpoint, code):
    direct(s3_endpoint).put_object(Bucket=s3_bucket, Key="trips/a.csv", Body=b"x")
    denied = proxy.add(Fault(None, rf"^/{s3_bucket}", kind="deny", code=code, times=None))
    with pytest.raises(ClientError) as raised:
        client(proxy.endpoint_url, attempts=3).get_object(Bucket=s3_bucket, Key="trips/a.csv")
    assert raised.value.response["Error"]["Code"] == code
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    with pytest.raises(ClientError) as raised:  # a HEAD error has no body: botocore names it by status
        client(proxy.endpoint_url, attempts=3).head_object(Bucket=s3_bucket, Key="trips/a.csv")
    assert raised.value.response["Error"]["Code"] == "403"
    assert proxy.hits(denied) == 2


def test_drop_response_raises_on_the_client_yet_the_write_landed(proxy, s3_bucket, s3_endpoint):
    dropped = proxy.add(Fault("PUT", r"/trips/a\.csv$", kind="drop_response"))
    with pytest.raises(ConnectionClosedError):
        client(proxy.endpoint_url, attempts=1).put_object(Bucket=s3_bucket, Key="trips/a.csv", Body=b"landed")
    assert direct(s3_endpoint).get_object(Bucket=s3_bucket, Key="trips/a.csv")["Body"].read() == b"landed"
    [entry] = proxy.log()
    assert (entry.status, entry.upstream_status, entry.fault) == (None, 200, dropped)


def test_status_after_forwarding_fails_a_write_that_landed(proxy, s3_bucket, s3_endpoint):
    proxy.add(Fault("PUT", r"/trips/a\.csv$", kind="status_after", status=500))
    with pytest.raises(ClientError) as raised:
        client(proxy.endpoint_url, attempts=1).put_object(Bucket=s3_bucket, Key="trips/a.csv", Body=b"landed")
    assert raised.value.response["Error"]["Code"] == "InternalError"
    assert direct(s3_endpoint).get_object(Bucket=s3_bucket, Key="trips/a.csv")["Body"].read() == b"landed"
    assert [(e.status, e.upstream_status) for e in proxy.log()] == [(500, 200)]


def test_rules_match_in_order_after_and_query_and_can_be_scoped(proxy, s3_bucket, s3_endpoint):
    s3 = client(proxy.endpoint_url, attempts=1)
    direct(s3_endpoint).put_object(Bucket=s3_bucket, Key="trips/a.csv", Body=b"x")
    second = proxy.add(Fault("GET", r"/trips/a\.csv$", status=500, after=1))  # lets the first GET through
    listing = proxy.add(Fault("GET", rf"^/{s3_bucket}$", query=r"list-type=2", status=503))
    s3.get_object(Bucket=s3_bucket, Key="trips/a.csv")
    with pytest.raises(ClientError, match="InternalError"):
        s3.get_object(Bucket=s3_bucket, Key="trips/a.csv")
    s3.get_object(Bucket=s3_bucket, Key="trips/a.csv")  # times=1: spent
    with pytest.raises(ClientError, match="ServiceUnavailable"):
        s3.list_objects_v2(Bucket=s3_bucket)
    assert (proxy.hits(second), proxy.hits(listing)) == (1, 1)

    first = proxy.add(Fault("get", r"a\.csv", kind="deny", times=None))
    later = proxy.add(Fault("GET", r"a\.csv", status=503, times=None))
    with pytest.raises(ClientError, match="AccessDenied"):
        s3.get_object(Bucket=s3_bucket, Key="trips/a.csv")
    assert (proxy.hits(first), proxy.hits(later)) == (1, 0)
    proxy.clear()
    assert proxy.rules() == []
    with proxy.injected(Fault("GET", r"a\.csv", kind="delay", delay=0.3, times=None)) as delayed:
        started = time.monotonic()
        s3.get_object(Bucket=s3_bucket, Key="trips/a.csv")
        assert time.monotonic() - started >= 0.3
    assert proxy.rules() == [] and proxy.hits(delayed) == 1
    with pytest.raises(ValueError):
        Fault("GET", "x", kind="explode")


def test_a_released_delay_lets_the_held_requests_go_on_at_once(proxy, s3_bucket, s3_endpoint):
    direct(s3_endpoint).put_object(Bucket=s3_bucket, Key="trips/a.csv", Body=b"x")
    held = proxy.add(Fault("GET", r"/trips/a\.csv$", kind="delay", delay=25, times=None))
    s3 = client(proxy.endpoint_url)
    done = []
    started = time.monotonic()
    reader = threading.Thread(target=lambda: done.append(s3.get_object(Bucket=s3_bucket, Key="trips/a.csv")))
    reader.start()
    while proxy.hits(held) == 0 and time.monotonic() - started < 20:
        time.sleep(0.05)
    time.sleep(0.5)
    assert proxy.hits(held) == 1 and not done  # the request is held at the proxy
    released = time.monotonic()
    proxy.release(held)
    reader.join(20)
    assert done and done[0]["Body"].read() == b"x"
    assert time.monotonic() - released < 5 and proxy.log("GET")[-1].at >= released  # went on when released
    before = time.monotonic()
    s3.get_object(Bucket=s3_bucket, Key="trips/a.csv")
    assert time.monotonic() - before < 5 and proxy.hits(held) == 2  # no longer delayed, still counted


def test_another_process_goes_through_the_proxy(proxy, s3_bucket, s3_endpoint):
    direct(s3_endpoint).put_object(Bucket=s3_bucket, Key="trips/a.csv", Body=b"x")
    slow = proxy.add(Fault("GET", r"/trips/a\.csv$", status=503, times=1))
    script = ("import boto3, sys; from botocore.config import Config\n"
              "s3 = boto3.client('s3', endpoint_url=sys.argv[1], region_name='us-east-1',"
              " config=Config(retries={'mode': 'standard', 'total_max_attempts': 2}))\n"
              "print(s3.get_object(Bucket=sys.argv[2], Key='trips/a.csv')['Body'].read().decode())\n")
    out = subprocess.run([sys.executable, "-c", script, proxy.endpoint_url, s3_bucket],
                         capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "x"
    assert proxy.hits(slow) == 1


def test_deltalake_writes_and_reads_through_the_proxy(proxy, s3_bucket):
    options = delta_options(proxy.endpoint_url)
    uri = f"s3://{s3_bucket}/t"
    write_deltalake(uri, pa.table({"a": [1, 2]}), storage_options=options)
    write_deltalake(uri, pa.table({"a": [3]}), storage_options=options, mode="append")
    # is_deltatable holds the GIL while it waits on S3: a proxy thread in this process would hang here
    assert DeltaTable.is_deltatable(uri, storage_options=options)
    assert sorted(DeltaTable(uri, storage_options=options).to_pyarrow_table().column("a").to_pylist()) == [1, 2, 3]
    commits = proxy.log("PUT", r"/_delta_log/\d{20}\.json$")
    assert len(commits) == 2
    assert all(c.headers.get("if-none-match") == "*" for c in commits)  # delta-rs commits with a conditional PUT


def test_deltalake_transient_faults_are_retried(proxy, s3_bucket):
    options = delta_options(proxy.endpoint_url)
    uri = f"s3://{s3_bucket}/t"
    write_deltalake(uri, pa.table({"a": [1]}), storage_options=options)
    reads = proxy.add(Fault("GET", r"/t/_delta_log/0{20}\.json$", status=503, times=2))
    resets = proxy.add(Fault("PUT", r"/t/part-.*\.parquet$", kind="reset", times=1))
    commit = proxy.add(Fault("PUT", r"/t/_delta_log/0{19}1\.json$", status=503, times=1))
    write_deltalake(uri, pa.table({"a": [2]}), storage_options=options, mode="append")
    assert DeltaTable(uri, storage_options=options).version() == 1
    assert [proxy.hits(r) for r in (reads, resets, commit)] == [2, 1, 1]


def test_deltalake_commit_whose_response_is_lost_raises_yet_landed(proxy, s3_bucket, s3_endpoint):
    options = delta_options(proxy.endpoint_url)
    uri = f"s3://{s3_bucket}/t"
    write_deltalake(uri, pa.table({"a": [1]}), storage_options=options)
    lost = proxy.add(Fault("PUT", r"/t/_delta_log/0{19}1\.json$", kind="drop_response"))
    with pytest.raises(OSError, match="Connection reset by peer"):  # not retried: a conditional PUT
        write_deltalake(uri, pa.table({"a": [2]}), storage_options=options, mode="append")
    assert proxy.hits(lost) == 1
    landed = DeltaTable(uri, storage_options=delta_options(s3_endpoint))
    assert landed.version() == 1 and sorted(landed.to_pyarrow_table().column("a").to_pylist()) == [1, 2]
