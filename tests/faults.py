"""A fault-injecting S3 proxy on 127.0.0.1, for tests that need real failures on the wire.

    with FaultProxy(s3_endpoint) as proxy:
        client = boto3.client("s3", endpoint_url=proxy.endpoint_url, ...)
        slow = proxy.add(Fault("GET", r"/bucket/trips/.*a\\.csv$", kind="status", status=503, times=2))
        ...
        assert proxy.hits(slow) == 2

Every request is forwarded to the upstream endpoint (the moto server of LocalS3) as it came:
method, path, query, headers (Host and the SigV4 signature headers unchanged: the client signs for
the proxy's host:port, and moto does not verify signatures) and body; the upstream response goes
back unchanged. A request that matches a rule (method, path regex, optional query regex) gets the
rule's fault instead:

    kind="status"         answer `status` with an S3 XML error body (`code`); upstream never sees it
    kind="deny"           answer 403 AccessDenied (or code="InvalidAccessKeyId"); upstream never sees it
    kind="reset"          reset the connection (RST); upstream never sees the request
    kind="drop_response"  forward (upstream does the write), then reset instead of answering
    kind="status_after"   forward (upstream does the write), then answer `status` with an error body
    kind="delay"          forward after `delay` seconds (any kind can carry a delay before it acts)

`release(rule)` ends the delay of the rule's requests waiting now and of those still to come (they
still count as hits): a delay long enough to hold requests while the test does something else,
ended by the test as soon as it is done instead of a fixed sleep.

A rule faults at most `times` requests (None: every one), after letting the first `after`
matching requests through. The first rule, in the order added, that matches and has faults left
decides. Rules can be added, removed and cleared while requests flow. `hits(rule)` is how many
requests it faulted; `log()` is every request seen: method, path, query, headers, the status the
client got (None for a reset), what upstream answered, and the rule that fired.

The server runs in a child process (python tests/faults.py), controlled through its stdin and
stdout, one JSON line per command: deltalake holds the GIL while it waits on S3 in some calls
(DeltaTable.is_deltatable), so a server thread in the test process would never answer it.
Clients in any process (boto3, deltalake, Spark executors, a spark-submit'ed job given
proxy.endpoint_url) reach it over TCP. Stdlib only.
"""
from __future__ import annotations

import argparse
import http.client
import http.server
import json
import re
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import unquote, urlsplit
from xml.sax.saxutils import escape

KINDS = ("status", "deny", "reset", "drop_response", "status_after", "delay")
DEFAULT_CODES = {400: "BadRequest", 403: "AccessDenied", 404: "NoSuchKey", 409: "OperationAborted",
                 412: "PreconditionFailed", 429: "SlowDown", 500: "InternalError", 501: "NotImplemented",
                 503: "ServiceUnavailable"}
MESSAGES = {"SlowDown": "Please reduce your request rate.",
            "ServiceUnavailable": "Service is unable to handle request.",
            "InternalError": "We encountered an internal error. Please try again.",
            "AccessDenied": "Access Denied",
            "InvalidAccessKeyId": "The AWS Access Key Id you provided does not exist in our records."}
# Per connection, never forwarded (RFC 9110 7.6.1); Expect is answered here (100 Continue).
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization",
              "te", "trailer", "trailers", "transfer-encoding", "upgrade", "expect"}
COPY_CHUNK = 1 << 16
FAULT_FIELDS = ("method", "path", "kind", "status", "code", "times", "after", "delay", "query", "name", "id")


@dataclass(eq=False)
class Fault:
    """One rule. method: "GET", "PUT", ... or None/"*" for any (case-insensitive). path: a regex
    searched (re.search) in the URL-decoded request path, e.g. r"/t/_delta_log/\\d{20}\\.json$"; a
    bucket-level request (ListObjectsV2) has path "/bucket" and query "list-type=2&prefix=...".
    query: an optional regex searched in the raw query string. A rule equals itself only (its
    id), so two rules with the same fields count their hits apart."""
    method: str | None = None
    path: str = ""
    kind: str = "status"
    status: int | None = None  # default: 503 (status, status_after), 403 (deny)
    code: str | None = None    # the S3 error code; default by status: 503 ServiceUnavailable, 403 AccessDenied...
    times: int | None = 1      # faulted requests at most; None: every matching request
    after: int = 0             # let this many matching requests through first
    delay: float = 0.0         # seconds to wait before acting (before forwarding, for the forwarding kinds)
    query: str | None = None
    name: str | None = None
    id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; one of {KINDS}")
        if self.status is None:
            self.status = 403 if self.kind == "deny" else 503
        if self.code is None:
            self.code = "AccessDenied" if self.kind == "deny" else DEFAULT_CODES.get(self.status, "InternalError")
        self._path = re.compile(self.path)
        self._query = re.compile(self.query) if self.query is not None else None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Fault) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def matches(self, method: str, path: str, query: str) -> bool:
        return ((self.method in (None, "*") or self.method.upper() == method.upper())
                and self._path.search(path) is not None
                and (self._query is None or self._query.search(query) is not None))

    def to_json(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in FAULT_FIELDS}

    def __repr__(self) -> str:
        label = self.name or f"{self.method or '*'} {self.path}"
        detail = {"status": f"{self.status} {self.code}", "deny": f"{self.status} {self.code}",
                  "status_after": f"status_after {self.status} {self.code}"}.get(self.kind, self.kind)
        return f"Fault({label}: {detail}, times={self.times})"


@dataclass(frozen=True)
class Request:
    """One request the proxy saw. status: what the client got (None: the connection was reset);
    upstream_status: what upstream answered (None: not forwarded); fault: the rule that fired;
    headers: the request's headers (names lowercased), e.g. entry.headers.get("if-none-match")."""
    method: str
    path: str
    query: str
    status: int | None
    upstream_status: int | None = None
    fault: Fault | None = None
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    at: float = field(default=0.0, repr=False)  # time.monotonic() (a system-wide clock) when it was decided


class FaultProxy:
    """The test process's handle on the proxy process."""

    def __init__(self, upstream_url: str, start_timeout: float = 30.0):
        parts = urlsplit(upstream_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"upstream must be an http://host:port URL, not {upstream_url!r}")
        self.upstream_url = upstream_url
        self.start_timeout = start_timeout
        self.port: int | None = None
        self._process: subprocess.Popen | None = None
        self._lock = threading.Lock()
        self._faults: dict[str, Fault] = {}  # every rule ever added, by id: log entries name them

    @property
    def endpoint_url(self) -> str:
        if self.port is None:
            raise RuntimeError("the fault proxy is not running")
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "FaultProxy":
        if self._process is not None:
            return self
        self._process = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--upstream", self.upstream_url],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        first: list[str] = []
        reader = threading.Thread(target=lambda: first.append(self._process.stdout.readline()), daemon=True)
        reader.start()
        reader.join(self.start_timeout)
        if not first or not first[0]:
            self.stop()
            raise RuntimeError("the fault proxy did not start")
        self.port = json.loads(first[0])["port"]
        return self

    def stop(self) -> None:
        process, self._process = self._process, None
        self.port = None
        if process is None:
            return
        try:
            process.stdin.close()  # the end of the commands: the proxy process exits
            process.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            process.kill()
            process.wait()
        process.stdout.close()

    def __enter__(self) -> "FaultProxy":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---- rules -------------------------------------------------------------------------------
    def add(self, fault: Fault) -> Fault:
        """Activates the rule (after those already active) and returns it."""
        self._faults[fault.id] = fault
        self._call("add", fault=fault.to_json())
        return fault

    def remove(self, fault: Fault) -> None:
        self._call("remove", id=fault.id)

    def clear(self) -> None:
        """Removes every rule (their hits and the log stay)."""
        self._call("clear")

    def release(self, fault: Fault) -> None:
        """Ends the rule's delay: the requests it holds now go on at once, later ones are not delayed."""
        self._call("release", id=fault.id)

    def injected(self, fault: Fault) -> "_Injected":
        """`with proxy.injected(Fault(...)) as rule:` the rule is active inside the block only."""
        return _Injected(self, fault)

    def hits(self, fault: Fault) -> int:
        """How many requests this rule faulted (also after it was removed)."""
        return self._call("hits", id=fault.id)

    def rules(self) -> list[Fault]:
        """The active rules, in matching order."""
        return [self._faults[i] for i in self._call("rules")]

    def log(self, method: str | None = None, path: str | None = None) -> list[Request]:
        """The requests seen so far, oldest first; optionally only those of a method and those
        whose path matches a regex (re.search)."""
        entries = [Request(e["method"], e["path"], e["query"], e["status"], e["upstream_status"],
                           self._faults.get(e["fault"]) if e["fault"] else None, e["headers"], e["at"])
                   for e in self._call("log")]
        return [e for e in entries
                if (method is None or e.method == method.upper()) and (path is None or re.search(path, e.path))]

    def reset_log(self) -> None:
        self._call("reset_log")

    def _call(self, op: str, **args: Any) -> Any:
        with self._lock:
            if self._process is None:
                raise RuntimeError("the fault proxy is not running")
            try:
                self._process.stdin.write(json.dumps({"op": op, **args}) + "\n")
                self._process.stdin.flush()
                line = self._process.stdout.readline()
            except OSError as exc:
                raise RuntimeError(f"the fault proxy process is gone: {exc}") from None
        if not line:
            raise RuntimeError("the fault proxy process is gone")
        answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"fault proxy: {answer['error']}")
        return answer["result"]


class _Injected:
    def __init__(self, proxy: FaultProxy, fault: Fault):
        self.proxy, self.fault = proxy, fault

    def __enter__(self) -> Fault:
        return self.proxy.add(self.fault)

    def __exit__(self, *exc) -> None:
        self.proxy.remove(self.fault)


def serve(upstream_url: str) -> Iterator[FaultProxy]:
    """A pytest fixture's body: `yield from serve(s3_endpoint)`."""
    with FaultProxy(upstream_url) as proxy:
        yield proxy


# ---- the proxy process ---------------------------------------------------------------------------
class _Rules:
    """The rules, their hits and the request log, shared by the handler threads (one lock)."""

    def __init__(self, upstream_url: str, upstream_timeout: float = 60.0):
        parts = urlsplit(upstream_url)
        self.upstream = (parts.hostname, parts.port or 80)
        self.upstream_timeout = upstream_timeout
        self._lock = threading.Lock()
        self._rules: list[Fault] = []
        self._seen: dict[str, int] = {}
        self._hits: dict[str, int] = {}  # kept after a rule is removed
        self._released: dict[str, threading.Event] = {}  # set: the rule's delay is over
        self._log: list[dict[str, Any]] = []

    def command(self, op: str, args: dict[str, Any]) -> Any:
        with self._lock:
            if op == "add":
                fault = Fault(**args["fault"])
                self._rules.append(fault)
                self._seen.setdefault(fault.id, 0)
                self._hits.setdefault(fault.id, 0)
                self._released.setdefault(fault.id, threading.Event())
            elif op == "remove":
                self._rules = [r for r in self._rules if r.id != args["id"]]
            elif op == "clear":
                self._rules = []
            elif op == "release":
                self._released.setdefault(args["id"], threading.Event()).set()
            elif op == "hits":
                return self._hits.get(args["id"], 0)
            elif op == "rules":
                return [r.id for r in self._rules]
            elif op == "log":
                return list(self._log)
            elif op == "reset_log":
                self._log = []
            else:
                raise ValueError(f"unknown command {op!r}")
        return None

    def match(self, method: str, path: str, query: str) -> Fault | None:
        with self._lock:
            for rule in self._rules:
                if not rule.matches(method, path, query):
                    continue
                self._seen[rule.id] += 1
                if self._seen[rule.id] <= rule.after:
                    continue
                if rule.times is not None and self._hits[rule.id] >= rule.times:
                    continue
                self._hits[rule.id] += 1
                return rule
        return None

    def delay(self, fault: Fault) -> None:
        """Waits out the rule's delay, or until the rule is released (outside the lock)."""
        with self._lock:
            released = self._released.setdefault(fault.id, threading.Event())
        released.wait(fault.delay)

    def record(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self._log.append(entry)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 128

    def __init__(self, address, handler, rules: _Rules):
        self.rules = rules
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, handler)

    def process_request_thread(self, request, client_address):
        with self._connections_lock:
            self._connections.add(request)
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._connections_lock:
                self._connections.discard(request)

    def close_connections(self) -> None:
        """Closes the keep-alive connections still open, so no handler thread outlives the server."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request, client_address) -> None:
        pass  # a client that went away mid-request is not the test's business


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as S3 clients expect
    timeout = 120                  # an idle keep-alive connection is closed after this long
    server: _Server

    def log_message(self, format, *args) -> None:  # noqa: A002 - the base class's signature
        pass

    def handle_one_request(self) -> None:
        """The base class's, but every method is proxied (no do_<METHOD> per verb)."""
        try:
            self.raw_requestline = self.rfile.readline(65537)
            if len(self.raw_requestline) > 65536:
                self.send_error(414)
                return
            if not self.raw_requestline:
                self.close_connection = True
                return
            if not self.parse_request():  # answers Expect: 100-continue
                return
            self._handle()
            self.wfile.flush()
        except OSError:  # the client went away (or was reset by a fault)
            self.close_connection = True

    def _handle(self) -> None:
        target = urlsplit(self.path)
        self._method, self._path, self._query = self.command.upper(), unquote(target.path), target.query
        body = self._read_body()
        fault = self.server.rules.match(self._method, self._path, self._query)
        if fault is not None and fault.delay:
            self.server.rules.delay(fault)
        kind = fault.kind if fault is not None else None
        # Recorded before the client hears anything: a test that saw the fault finds it in the log.
        if kind in ("status", "deny"):
            self._record(fault.status, None, fault)
            self._send_error(fault.status, fault.code)
        elif kind == "reset":
            self._record(None, None, fault)
            self._reset()
        else:
            self._forward(body, fault)

    def _record(self, status: int | None, upstream_status: int | None, fault: Fault | None) -> None:
        self.server.rules.record({
            "method": self._method, "path": self._path, "query": self._query, "status": status,
            "upstream_status": upstream_status, "fault": fault.id if fault is not None else None,
            "headers": {name.lower(): value for name, value in self.headers.items()}, "at": time.monotonic()})

    def _read_body(self) -> bytes | None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    break
                parts.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(parts)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else None

    def _forward(self, body: bytes | None, fault: Fault | None) -> None:
        rules = self.server.rules
        upstream = http.client.HTTPConnection(*rules.upstream, timeout=rules.upstream_timeout)
        try:
            try:
                upstream.putrequest(self._method, self.path, skip_host=True, skip_accept_encoding=True)
                chunked = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
                for name, value in self.headers.items():
                    if name.lower() not in HOP_BY_HOP and not (chunked and name.lower() == "content-length"):
                        upstream.putheader(name, value)  # Host as the client sent it: it is signed
                if chunked:  # the body was de-chunked above
                    upstream.putheader("Content-Length", str(len(body or b"")))
                upstream.endheaders(body)
                response = upstream.getresponse()
            except (OSError, http.client.HTTPException) as exc:
                self._record(502, None, fault)
                self._send_error(502, "InternalError", f"fault proxy: upstream: {exc}")
                return
            if fault is not None and fault.kind == "drop_response":
                response.read()  # done upstream; the client never hears of it
                self._record(None, response.status, fault)
                self._reset()
            elif fault is not None and fault.kind == "status_after":
                response.read()  # done upstream, yet the client is told it failed
                self._record(fault.status, response.status, fault)
                self._send_error(fault.status, fault.code)
            else:
                self._record(response.status, response.status, fault)
                self._relay(response)
        finally:
            upstream.close()

    def _relay(self, response: http.client.HTTPResponse) -> None:
        """The upstream response as it came, its body streamed (sized here if upstream did not)."""
        headers = [(k, v) for k, v in response.getheaders() if k.lower() not in HOP_BY_HOP]
        no_body = self._method == "HEAD" or response.status in (204, 304) or 100 <= response.status < 200
        length = response.getheader("Content-Length")
        buffered = None
        if not no_body and length is None:  # chunked or close-delimited upstream
            buffered = response.read()
            headers.append(("Content-Length", str(len(buffered))))
        self.send_response_only(response.status, response.reason)
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        if no_body:
            return
        if buffered is not None:
            self.wfile.write(buffered)
            return
        remaining = int(length)
        while remaining > 0:
            chunk = response.read(min(COPY_CHUNK, remaining))
            if not chunk:
                self.close_connection = True  # upstream cut it short: so is the client's copy
                return
            self.wfile.write(chunk)
            remaining -= len(chunk)

    def _send_error(self, status: int, code: str, message: str | None = None) -> None:
        request_id = uuid.uuid4().hex[:16].upper()
        body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{escape(code)}</Code>'
                f"<Message>{escape(message or MESSAGES.get(code, code))}</Message>"
                f"<Resource>{escape(self._path)}</Resource><RequestId>{request_id}</RequestId></Error>").encode()
        head = self._method == "HEAD"  # S3 answers HEAD errors without a body
        self.send_response_only(status, http.client.responses.get(status, "Error"))
        self.send_header("x-amz-request-id", request_id)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", "0" if head else str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _reset(self) -> None:
        """Closes the connection with an RST (SO_LINGER 0): the client sees a connection reset."""
        self.close_connection = True
        sock = self.connection
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.rfile.close()  # the socket's other reference: close() below is the real one
            sock.close()
        except OSError:
            pass


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A fault-injecting S3 proxy on 127.0.0.1 (see FaultProxy).")
    parser.add_argument("--upstream", required=True, help="the S3 endpoint to forward to, http://host:port")
    args = parser.parse_args(argv)
    rules = _Rules(args.upstream)
    server = _Server(("127.0.0.1", 0), _Handler, rules)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    print(json.dumps({"port": server.server_address[1]}), flush=True)
    for line in sys.stdin:  # one command a line, until the test process closes stdin (or dies)
        try:
            command = json.loads(line)
            answer = {"result": rules.command(command.pop("op"), command)}
        except Exception as exc:  # noqa: BLE001 - reported to the caller; the proxy goes on
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(answer), flush=True)
    server.shutdown()
    server.server_close()
    server.close_connections()


if __name__ == "__main__":
    main()
