"""Self-test of scripts/faultproxy.py: python3 -m pytest -q scripts/test_faultproxy.py

A small keep-alive HTTP/1.1 upstream runs in a thread (GET with Range on a
random 16 MiB body, HEAD, PUT that answers the body's length and digest,
chunked and close-delimited responses); the proxy runs as a subprocess on port
0. Standard library and pytest only.
"""

import hashlib
import http.client
import json
import os
import random
import re
import select
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

PROXY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "faultproxy.py")
MiB = 1 << 20
BODY = random.Random(20240601).randbytes(16 * MiB)
CHUNKED_PIECES = [random.Random(7).randbytes(n) for n in (1, 1000, 70000, 3, 250000)]
CLOSE_BODY = random.Random(8).randbytes(300000)
ERROR_RE = re.compile(
    rb"<Error><Code>(SlowDown|InternalError)</Code><Message>[^<]+</Message>"
    rb"<RequestId>faultproxy</RequestId></Error>")


# ---------------------------------------------------------------- upstream

class UpstreamHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def setup(self):
        super().setup()
        self.server.conns.add(self.connection)
        self.server.accepted += 1

    def finish(self):
        self.server.conns.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass

    def _record(self):
        self.server.seen.append((self.command, self.path, self.headers.get("Host")))

    def _range(self):
        m = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", ""))
        if not m:
            return None
        a, b = m.groups()
        if a == "":
            n = int(b)
            return len(BODY) - n, len(BODY) - 1
        a = int(a)
        b = min(int(b), len(BODY) - 1) if b else len(BODY) - 1
        return a, b

    def _object_head(self):
        r = self._range()
        if r:
            a, b = r
            self.send_response(206)
            self.send_header("Content-Range", "bytes %d-%d/%d" % (a, b, len(BODY)))
        else:
            a, b = 0, len(BODY) - 1
            self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(b - a + 1))
        self.end_headers()
        return a, b

    def do_HEAD(self):
        self._record()
        if self.path == "/obj":
            self._object_head()
        else:
            self.send_response(404)
            self.send_header("Content-Length", "9")
            self.end_headers()

    def do_GET(self):
        self._record()
        if self.path == "/obj":
            a, b = self._object_head()
            self.wfile.write(memoryview(BODY)[a:b + 1])
        elif self.path == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for piece in CHUNKED_PIECES:
                self.wfile.write(b"%x;ext=1\r\n" % len(piece) + piece + b"\r\n")
            self.wfile.write(b"0\r\nX-Trailer: yes\r\n\r\n")
        elif self.path == "/close":
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(CLOSE_BODY)
            self.close_connection = True
        else:
            body = b"not found"
            self.send_response(404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    def do_PUT(self):
        self._record()
        h = hashlib.sha256()
        n = 0
        if "chunked" in self.headers.get("Transfer-Encoding", ""):
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                data = self.rfile.read(size)
                self.rfile.readline()
                h.update(data)
                n += len(data)
        else:
            left = int(self.headers.get("Content-Length", "0"))
            while left:
                data = self.rfile.read(min(left, MiB))
                h.update(data)
                n += len(data)
                left -= len(data)
        body = json.dumps({"length": n, "sha256": h.hexdigest()}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class Upstream:
    def __init__(self, port=0):
        self.server = ThreadingHTTPServer(("127.0.0.1", port), UpstreamHandler)
        self.server.daemon_threads = True
        self.server.conns = set()
        self.server.seen = []
        self.server.accepted = 0
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def seen(self):
        return self.server.seen

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
        for c in list(self.server.conns):
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


@pytest.fixture
def upstream():
    u = Upstream()
    yield u
    u.stop()


# ---------------------------------------------------------------- the proxy

class ProxyProc:
    def __init__(self, tmp_path, upstream_port, args, n):
        self.stats_path = tmp_path / ("stats%d.json" % n)
        self.err_path = tmp_path / ("proxy%d.err" % n)
        self.err = open(self.err_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, PROXY, "--listen", "127.0.0.1:0",
             "--upstream", "127.0.0.1:%d" % upstream_port, "--stats", str(self.stats_path), *args],
            stdout=subprocess.PIPE, stderr=self.err, text=True)
        r, _, _ = select.select([self.proc.stdout], [], [], 15)
        line = self.proc.stdout.readline() if r else ""
        m = re.fullmatch(r"faultproxy listening on 127\.0\.0\.1:(\d+)\n", line)
        if not m:
            self.proc.kill()
            raise AssertionError("no ready line, got %r; stderr: %s" % (line, self.stderr()))
        self.port = int(m.group(1))

    def stderr(self):
        if not self.err.closed:
            self.err.flush()
        return self.err_path.read_text()

    def stats(self):
        return json.loads(self.stats_path.read_text())

    def conn(self, timeout=30):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError("proxy did not exit on SIGTERM")
        self.err.close()
        return rc


@pytest.fixture
def start_proxy(tmp_path):
    procs = []

    def start(upstream_port, *args):
        p = ProxyProc(tmp_path, upstream_port, [str(a) for a in args], len(procs))
        procs.append(p)
        return p
    yield start
    for p in procs:
        rc = p.stop()
        err = p.stderr()
        assert rc == 0, err
        assert "Traceback" not in err, err


def get(conn, path="/obj", rng=None):
    headers = {}
    if rng is not None:
        headers["Range"] = "bytes=%d-%d" % rng
    conn.request("GET", path, headers=headers)
    return conn.getresponse()


def wait_for(pred, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    return pred()


def write_rates(path, doc):
    tmp = str(path) + ".tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f)
    os.replace(tmp, path)


# ---------------------------------------------------------------- tests

def test_passthrough_keepalive_identical_and_host_unchanged(upstream, start_proxy):
    p = start_proxy(upstream.port)
    conn = p.conn()
    rnd = random.Random(1)
    for i in range(50):
        a = rnd.randrange(len(BODY))
        b = min(len(BODY) - 1, a + rnd.choice((0, 1, 1000, 65536, MiB, 3 * MiB)))
        resp = get(conn, rng=(a, b))
        assert resp.status == 206
        assert resp.read() == BODY[a:b + 1], i
    resp = get(conn)
    assert resp.status == 200 and resp.read() == BODY
    hosts = {h for (_, _, h) in upstream.seen}
    assert hosts == {"127.0.0.1:%d" % p.port}
    st = p.stats()
    assert st["connections"] == 1  # all on one keep-alive connection,
    assert upstream.server.accepted == 1  # and one to the upstream
    assert st["requests"] == st["forwarded"] == 51
    assert sum(st["faults"].values()) == 0
    assert st["bytes_to_client"] > len(BODY)


def test_other_methods_and_framings(upstream, start_proxy):
    p = start_proxy(upstream.port)
    conn = p.conn()
    conn.request("HEAD", "/obj")
    r = conn.getresponse()
    assert r.status == 200 and r.getheader("Content-Length") == str(len(BODY)) and r.read() == b""
    data = BODY[:5 * MiB + 17]
    conn.request("PUT", "/up", body=data)
    r = conn.getresponse()
    assert r.status == 200
    assert json.loads(r.read()) == {"length": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    # chunked request body
    pieces = [BODY[:100], BODY[100:70000], BODY[70000:70001]]
    conn.request("PUT", "/up", body=iter(pieces), encode_chunked=True)
    r = conn.getresponse()
    joined = b"".join(pieces)
    assert json.loads(r.read()) == {"length": len(joined), "sha256": hashlib.sha256(joined).hexdigest()}
    # chunked response, then 404, on the same connection
    r = get(conn, "/chunked")
    assert r.status == 200 and r.read() == b"".join(CHUNKED_PIECES)
    r = get(conn, "/missing")
    assert r.status == 404 and r.read() == b"not found"
    # Expect: 100-continue, as libcurl sends for large PUTs
    s = socket.create_connection(("127.0.0.1", p.port), timeout=10)
    body = BODY[:2 * MiB]
    s.sendall(b"PUT /up HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\nExpect: 100-continue\r\n\r\n" % len(body))
    assert s.recv(100).startswith(b"HTTP/1.1 100")
    s.sendall(body)
    f = s.makefile("rb")
    assert f.readline().startswith(b"HTTP/1.1 200")
    length = None
    while (line := f.readline()) not in (b"\r\n", b""):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    assert json.loads(f.read(length))["length"] == len(body)
    s.close()
    # a close-delimited response ends the client connection too
    r = get(conn, "/close")
    assert r.status == 200 and r.read() == CLOSE_BODY
    conn.close()


def test_headers_forwarded_byte_for_byte(start_proxy):
    got = []
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(4)

    def serve():
        c, _ = ls.accept()
        f = c.makefile("rb")
        for _ in range(2):
            head = b""
            while not head.endswith(b"\r\n\r\n"):
                line = f.readline()
                if not line:
                    return
                head += line
            body = f.read(5) if b"Content-Length: 5" in head else b""
            got.append(head + body)
            c.sendall(b"HTTP/1.1 200 OK\r\nX-Odd-Case:  kept  \r\nContent-Length: 2\r\n\r\nok")
        c.close()
    t = threading.Thread(target=serve, daemon=True)
    t.start()
    p = start_proxy(ls.getsockname()[1])
    reqs = [
        b"GET /b/k?x-id=GetObject&A=%%2F HTTP/1.1\r\nHOST: 127.0.0.1:%d\r\n"
        b"x-amz-date: 20240101T000000Z\r\nAuthorization: AWS4-HMAC-SHA256 Credential=a/b, "
        b"SignedHeaders=host;x-amz-date, Signature=00\r\nX-Weird:   spaced value\t \r\n"
        b"x-amz-content-sha256: UNSIGNED-PAYLOAD\r\nx-dup: 1\r\nX-Dup: 2\r\n\r\n" % p.port,
        b"PUT /b/k HTTP/1.1\r\nHost: example.invalid\r\nContent-Length: 5\r\n\r\nhello",
    ]
    s = socket.create_connection(("127.0.0.1", p.port), timeout=10)
    f = s.makefile("rb")
    for req in reqs:
        s.sendall(req)
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            head += f.readline()
        assert b"X-Odd-Case:  kept  \r\n" in head
        assert f.read(2) == b"ok"
    s.close()
    t.join(5)
    ls.close()
    assert got == reqs


def test_error_rate_one(upstream, start_proxy):
    p = start_proxy(upstream.port, "--error-rate", 1)
    conn = p.conn()
    codes = set()
    for _ in range(20):
        r = get(conn, rng=(0, 99))
        body = r.read()
        assert r.status in (500, 503)
        assert r.getheader("Content-Type") == "application/xml"
        assert int(r.getheader("Content-Length")) == len(body)
        m = ERROR_RE.search(body)
        assert m, body
        assert m.group(1) == {503: b"SlowDown", 500: b"InternalError"}[r.status]
        codes.add(r.status)
    assert codes == {500, 503}
    conn.request("HEAD", "/obj")
    r = conn.getresponse()
    assert r.status in (500, 503) and r.read() == b""
    conn.request("PUT", "/up", body=b"abc")  # PUT is not in --error-methods
    r = conn.getresponse()
    assert r.status == 200 and json.loads(r.read())["length"] == 3
    assert [m for (m, _, _) in upstream.seen] == ["PUT"]
    st = p.stats()
    assert st["faults"]["error"] == 21 and st["forwarded"] == 1 and st["requests"] == 22


def test_error_methods_put(upstream, start_proxy):
    p = start_proxy(upstream.port, "--error-rate", 1, "--error-methods", "PUT")
    conn = p.conn()
    conn.request("PUT", "/up", body=BODY[:MiB])
    r = conn.getresponse()
    assert r.status in (500, 503) and ERROR_RE.search(r.read())
    r = get(conn, rng=(0, 9))  # same connection still in step
    assert r.status == 206 and r.read() == BODY[:10]


def test_flip_rate_one(upstream, start_proxy):
    p = start_proxy(upstream.port, "--flip-rate", 1, "--seed", 3)
    conn = p.conn()
    positions = set()
    for i in range(20):
        a = 1000 * i
        b = a + 2 * MiB - 1
        r = get(conn, rng=(a, b))
        got = r.read()
        want = BODY[a:b + 1]
        assert r.status == 206 and len(got) == len(want)
        diff = [j for j in range(0, len(got), 4096)
                if got[j:j + 4096] != want[j:j + 4096]]
        assert len(diff) == 1
        j0 = diff[0]
        bytes_diff = [j for j in range(j0, min(j0 + 4096, len(got))) if got[j] != want[j]]
        assert len(bytes_diff) == 1
        positions.add(bytes_diff[0])
    assert len(positions) > 10
    r = get(conn, "/chunked")
    got, want = r.read(), b"".join(CHUNKED_PIECES)
    assert len(got) == len(want) and sum(x != y for x, y in zip(got, want)) == 1
    r = get(conn, "/missing")  # not 2xx: left alone
    assert r.status == 404 and r.read() == b"not found"
    conn.request("HEAD", "/obj")
    assert conn.getresponse().read() == b""
    st = p.stats()
    assert st["faults"]["flip"] == 21 and st["flip_skipped"] == 1


def test_truncate_rate_one(upstream, start_proxy):
    p = start_proxy(upstream.port, "--truncate-rate", 1)
    for i in range(10):
        conn = p.conn()
        r = get(conn, rng=(0, MiB - 1))
        assert r.status == 206 and r.getheader("Content-Length") == str(MiB)
        with pytest.raises(http.client.IncompleteRead) as e:
            r.read()
        assert len(e.value.partial) < MiB
        assert BODY.startswith(e.value.partial)
        conn.close()
    conn = p.conn()
    conn.request("HEAD", "/obj")  # not eligible
    assert conn.getresponse().status == 200
    assert p.stats()["faults"]["truncate"] == 10


def test_reset_rate_one(upstream, start_proxy):
    p = start_proxy(upstream.port, "--reset-rate", 1)
    outcomes = set()
    for i in range(15):
        conn = p.conn()
        try:
            r = get(conn, rng=(0, 4 * MiB - 1))
            r.read()
            raise AssertionError("a whole response came through")
        except http.client.IncompleteRead:
            outcomes.add("incomplete")
        except ConnectionError as e:  # ConnectionResetError, RemoteDisconnected
            outcomes.add(type(e).__name__)
        conn.close()
    assert outcomes
    assert p.stats()["faults"]["reset"] == 15


def test_stall_rate_one(upstream, start_proxy):
    p = start_proxy(upstream.port, "--stall-rate", 1, "--stall-seconds", 2)
    conn = p.conn(timeout=1)
    t0 = time.monotonic()
    r = get(conn, rng=(0, 8 * MiB - 1))
    assert r.status == 206
    with pytest.raises((TimeoutError, socket.timeout)):
        r.read()
    assert time.monotonic() - t0 < 2.5
    # the proxy answers others meanwhile (HEAD is not eligible)
    other = p.conn()
    other.request("HEAD", "/obj")
    assert other.getresponse().status == 200
    assert p.stats()["faults"]["stall"] == 1
    # after --stall-seconds the proxy closes the stalled connection
    raw = socket.create_connection(("127.0.0.1", p.port), timeout=5)
    raw.sendall(b"GET /obj HTTP/1.1\r\nHost: x\r\nRange: bytes=0-99999\r\n\r\n")
    t0 = time.monotonic()
    n = 0
    while (k := len(raw.recv(65536))):
        n += k
    assert 1.5 < time.monotonic() - t0 < 4.5
    assert n < 100000 + 1000
    raw.close()


def test_rates_file_reloads(upstream, start_proxy, tmp_path):
    rates = tmp_path / "rates.json"
    write_rates(rates, {"error": 0})
    p = start_proxy(upstream.port, "--rates-file", rates, "--flip-rate", 0)
    conn = p.conn()
    assert get(conn, rng=(0, 9)).read() == BODY[:10]
    write_rates(rates, {"error": 1.0})
    r = get(conn, rng=(0, 9))
    assert r.status in (500, 503) and ERROR_RE.search(r.read())
    write_rates(rates, {"error_rate": 0, "flip": 1})
    r = get(conn, rng=(0, 9))
    got = r.read()
    assert r.status == 206 and got != BODY[:10] and len(got) == 10
    os.remove(rates)  # back to the command line's rates
    assert get(conn, rng=(0, 9)).read() == BODY[:10]
    assert p.stats()["rates"]["flip"] == 0


def test_stats_counts(upstream, start_proxy):
    p = start_proxy(upstream.port, "--error-rate", 0.5, "--seed", 11)
    conn = p.conn()
    errors = ok = 0
    got_bytes = 0
    for _ in range(40):
        r = get(conn, rng=(0, 9999))
        body = r.read()
        if r.status == 206:
            ok += 1
            got_bytes += len(body)
        else:
            errors += 1
    assert errors and ok
    st = p.stats()
    assert st["requests"] == 40
    assert st["faults"] == {"error": errors, "reset": 0, "stall": 0, "truncate": 0, "flip": 0}
    assert st["forwarded"] == ok == len(upstream.seen)
    assert got_bytes < st["bytes_to_client"] < got_bytes + 40 * 400
    assert st["bytes"] == st["bytes_to_client"] + st["bytes_to_upstream"]


def test_upstream_down_gives_502_and_recovers(start_proxy):
    u = Upstream()
    port = u.port
    p = start_proxy(port)
    conn = p.conn()
    assert get(conn, rng=(0, 9)).read() == BODY[:10]
    u.stop()
    for _ in range(3):
        r = get(conn, rng=(0, 9))
        body = r.read()
        assert r.status == 502
        assert b"<Code>BadGateway</Code>" in body and r.getheader("Content-Type") == "application/xml"
    conn.request("PUT", "/up", body=b"x" * 1000)  # the body is read and dropped
    r = conn.getresponse()
    assert r.status == 502 and r.read()
    u2 = Upstream(port)  # the server is back on the same port
    try:
        r = get(conn, rng=(5, 9))
        assert r.status == 206 and r.read() == BODY[5:10]
    finally:
        u2.stop()
    assert p.stats()["upstream_errors"] == 4


def test_client_disconnects_do_not_hurt(upstream, start_proxy):
    p = start_proxy(upstream.port)
    for _ in range(5):
        s = socket.create_connection(("127.0.0.1", p.port))
        s.sendall(b"GET /obj HTTP/1.1\r\nHost: x\r\n\r\n")
        s.recv(1000)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
        s.close()  # RST mid-response
        s = socket.create_connection(("127.0.0.1", p.port))
        s.sendall(b"GET /obj HTTP/1.1\r\nHost: x\r\n")  # half a head
        s.close()
        s = socket.create_connection(("127.0.0.1", p.port))
        s.sendall(b"PUT /up HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nabc")  # half a body
        s.close()
    assert wait_for(lambda: p.stats()["active_connections"] == 0)
    conn = p.conn()
    assert get(conn, rng=(0, 99)).read() == BODY[:100]


def test_many_parallel_connections(upstream, start_proxy):
    p = start_proxy(upstream.port)
    failures = []

    def worker(seed):
        rnd = random.Random(seed)
        conn = p.conn()
        try:
            for _ in range(10):
                a = rnd.randrange(len(BODY) - MiB)
                b = a + rnd.randrange(MiB)
                if get(conn, rng=(a, b)).read() != BODY[a:b + 1]:
                    failures.append(seed)
        except Exception as e:
            failures.append(repr(e))
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not failures
    assert p.stats()["connections"] == 16


def _throughput(port, total=256 * MiB, size=8 * MiB, parallel=4):
    per = total // size // parallel
    errors = []

    def worker(i):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        buf = memoryview(bytearray(size))
        try:
            for k in range(per):
                a = ((i * per + k) * size) % (len(BODY) - size + 1)
                r = get(conn, rng=(a, a + size - 1))
                n = 0
                while n < size:
                    m = r.readinto(buf[n:])
                    if not m:
                        break
                    n += m
                r.read()
                if n != size:
                    errors.append(n)
        except Exception as e:
            errors.append(repr(e))
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(parallel)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    dt = time.monotonic() - t0
    assert not errors, errors
    return total / MiB / dt


def test_throughput(upstream, start_proxy, capsys):
    p = start_proxy(upstream.port)
    _throughput(p.port, total=32 * MiB)  # warm up
    direct = _throughput(upstream.port)
    proxied = _throughput(p.port)
    with capsys.disabled():
        print("\nfaultproxy throughput, 256 MiB of 8 MiB ranged GETs on 4 connections: "
              "%.0f MiB/s through the proxy, %.0f MiB/s direct to the test upstream"
              % (proxied, direct))
    assert proxied > 30  # a loose floor; the report is the number above


def test_latency_and_connection_rate_put_the_server_far_away(upstream, start_proxy, tmp_path):
    # Each response head waits --latency-ms; each connection's body bytes are
    # paced to --connection-rate. Sleeps only make things slower, so the lower
    # bounds below hold on any machine; the bytes must stay exact.
    p = start_proxy(upstream.port, "--latency-ms", 200, "--connection-rate", 4 * MiB)
    conn = p.conn()
    t0 = time.monotonic()
    r = get(conn, rng=(0, 10))
    assert r.read() == BODY[:11]
    small = time.monotonic() - t0
    assert small >= 0.2, small
    t0 = time.monotonic()
    r = get(conn, rng=(0, 2 * MiB - 1))
    assert r.status == 206 and r.read() == BODY[:2 * MiB]
    big = time.monotonic() - t0
    assert big >= 0.2 + 0.5 * 0.9, big  # the round trip, then 2 MiB at 4 MiB/s
    # The pace is per connection: four connections side by side each get it
    # (one pace shared by all would need at least 0.2 + 2 s for their 8 MiB).
    def fetch(out):
        c = p.conn()
        out.append(get(c, rng=(0, 2 * MiB - 1)).read() == BODY[:2 * MiB])
    done = []
    t0 = time.monotonic()
    threads = [threading.Thread(target=fetch, args=(done,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    both = time.monotonic() - t0
    assert done == [True] * 4
    assert 0.2 + 0.5 * 0.9 <= both < 2.0, both
    # A rates file turns both off again; a negative value there is refused
    # (the previous settings stay), and on the command line it is a usage error.
    rates = tmp_path / "far.json"
    write_rates(rates, {"latency_ms": 0, "connection_rate": 0})
    q = start_proxy(upstream.port, "--latency-ms", 5000, "--rates-file", rates)
    t0 = time.monotonic()
    assert get(q.conn(), rng=(0, 10)).read() == BODY[:11]
    assert time.monotonic() - t0 < 4.0
    write_rates(rates, {"latency_ms": -1})
    t0 = time.monotonic()
    assert get(q.conn(), rng=(0, 10)).read() == BODY[:11]
    assert time.monotonic() - t0 < 4.0
    assert "unreadable" in q.stderr() and "not 0 or more" in q.stderr()
    bad = subprocess.run([sys.executable, PROXY, "--upstream", "127.0.0.1:1", "--latency-ms", "-5"],
                         capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and "must be 0 or more" in bad.stderr
