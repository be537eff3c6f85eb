#!/usr/bin/env python3
"""faultproxy: an HTTP/1.1 reverse proxy that injects faults, for tests.

Put it between an S3 client and an S3 server (SeaweedFS) and it forwards every
request byte for byte (request line, headers in their order and case, Host
included, and the body), so SigV4 signatures made for the proxy's host:port
still verify upstream, while it injects faults at configurable rates:

  error     answer instead of forwarding: 503 SlowDown or 500 InternalError,
            an S3 XML error body (any method in --error-methods)
  reset     forward, then reset the client connection (SO_LINGER 0, RST) after
            the response headers and a random part of the body, or before any
            byte (GET only)
  stall     forward, send the headers and part of the body, then send nothing
            for --stall-seconds or until the client closes; then close (GET)
  truncate  forward, send the headers (with the original Content-Length) and
            part of the body, then close normally with a FIN (GET only)
  flip      forward a 2xx GET response with one random body byte changed
            (same length)
Besides faults, it can put the server far away, as a cloud object store is
from a node (both off by default):
  --latency-ms MS        every forwarded response head is held back MS ms
                         (time to first byte: a request's round trip)
  --connection-rate BPS  each client connection's response bodies are paced
                         to BPS bytes/s (a cloud store's per-connection
                         throughput: one connection alone cannot use a fat link)
With both, a client gets what parallel ranged GETs buy it from a remote store:
throughput grows with connections until the link or the CPU is the limit.

Each fault has a rate, the probability per eligible request, drawn from one
random.Random(--seed) in the fixed order error, reset, stall, truncate, flip;
the first that hits is the request's only fault. (With concurrent connections
the order in which requests draw is up to the scheduler.)

  python3 scripts/faultproxy.py --listen 127.0.0.1:0 --upstream 127.0.0.1:8333 \\
      --error-rate 0.1 --reset-rate 0.05 --rates-file rates.json --stats stats.json

prints `faultproxy listening on HOST:PORT` (the real port) on stdout once it
accepts connections, and exits 0 on SIGTERM or SIGINT.

--rates-file: a JSON object re-read whenever the file changes (write it to a
temporary name and rename it over the old one), e.g.
  {"error": 0.1, "reset": 0.05, "stall": 0, "truncate": 0, "flip": 0,
   "stall_seconds": 5, "error_methods": "GET,HEAD",
   "latency_ms": 30, "connection_rate": 25000000}
Keys it leaves out keep their command-line values ("error_rate" etc. work too).

--stats: after every request the proxy rewrites this JSON file atomically:
  {"requests", "forwarded", "faults": {"error", "reset", "stall", "truncate",
   "flip"}, "flip_skipped" (flip drawn for a response without a 2xx body),
   "upstream_errors" (502s and responses cut by the upstream),
   "client_disconnects", "bytes_to_upstream", "bytes_to_client", "bytes",
   "connections", "active_connections", "rates"}

HTTP handling: one thread per client connection, each with its own keep-alive
upstream connection. Request bodies with Content-Length or
Transfer-Encoding: chunked are streamed through unchanged; `Expect:
100-continue` works (the upstream's 100 Continue is relayed). Responses may be
framed by Content-Length, chunked, or connection close. Faults that cut a
body of unknown length (chunked or close-delimited) cut after a random amount
of up to 1 MiB of body data, or before the end of the body if it is shorter
(for chunked: before the last-chunk); a flip in such a body changes a byte of
its first piece. If the upstream cannot be reached, or fails before any byte of
a response, the client gets 502 with an S3 XML error (Code BadGateway); if it
fails mid-response, the client connection is closed.

Python 3.11+, standard library only.
"""

import argparse
import json
import os
import random
import select
import signal
import socket
import struct
import sys
import threading
import time
import traceback
from email.utils import formatdate
from xml.sax.saxutils import escape

FAULTS = ("error", "reset", "stall", "truncate", "flip")
BODY_FAULTS = ("reset", "stall", "truncate", "flip")  # GET only
UNKNOWN_LENGTH_CUT = 1 << 20
BUF_SIZE = 1 << 20
MAX_LINE = 65536
MAX_HEADERS = 200

ERRORS = {
    503: ("Service Unavailable", "SlowDown", "Please reduce your request rate."),
    500: ("Internal Server Error", "InternalError",
          "We encountered an internal error. Please try again."),
}

_log_lock = threading.Lock()


def log(msg):
    with _log_lock:
        try:
            sys.stderr.write("faultproxy %s: %s\n" % (time.strftime("%H:%M:%S"), msg))
            sys.stderr.flush()
        except (OSError, ValueError):
            pass


# ---------------------------------------------------------------- exceptions

class ClientGone(Exception):
    """The client closed, reset or timed out; nothing more can be said to it."""


class BadRequest(Exception):
    """The client sent something this proxy cannot frame."""


class UpstreamError(Exception):
    """The upstream could not be reached, or failed, or sent garbage."""


class Cut(Exception):
    """The response reached the point where the injected fault cuts it."""


# ---------------------------------------------------------------- config

def parse_hostport(text, what):
    t = text.strip()
    for scheme in ("http://", "HTTP://"):
        if t.startswith(scheme):
            t = t[len(scheme):]
    t = t.rstrip("/")
    if t.startswith("["):
        host, _, rest = t[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port = t.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError("%s must be HOST:PORT, not %r" % (what, text))
    return host, int(port)


def parse_methods(value):
    if isinstance(value, (list, tuple)):
        items = value
    else:
        items = str(value).split(",")
    return frozenset(m.strip().upper() for m in items if m.strip())


def nonnegative_arg(text):
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("not a number: %r" % text)
    if not v >= 0.0:  # also refuses nan
        raise argparse.ArgumentTypeError("must be 0 or more, not %s" % text)
    return v


def rate_arg(text):
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("not a number: %r" % text)
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError("a rate is between 0 and 1, not %s" % text)
    return v


class Settings:
    """Rates and the other knobs a rates file may change, behind a lock."""

    def __init__(self, args):
        self.base = {
            "rates": {f: getattr(args, f + "_rate") for f in FAULTS},
            "stall_seconds": args.stall_seconds,
            "error_methods": parse_methods(args.error_methods),
            "latency_ms": args.latency_ms,
            "connection_rate": args.connection_rate,
        }
        self.current = self.base
        self.path = args.rates_file
        self.key = None
        self.missing_logged = False
        self.lock = threading.Lock()

    def get(self):
        if self.path is None:
            return self.current
        with self.lock:
            try:
                st = os.stat(self.path)
            except FileNotFoundError:
                if self.key is not None or not self.missing_logged:
                    log("rates file %s missing: command-line rates apply" % self.path)
                    self.missing_logged = True
                self.key = None
                self.current = self.base
                return self.current
            except OSError as e:
                log("rates file %s: %s" % (self.path, e))
                return self.current
            key = (st.st_mtime_ns, st.st_size, st.st_ino)
            if key != self.key:
                try:
                    with open(self.path, "rb") as f:
                        doc = json.loads(f.read() or b"null")
                    self.current = self._merge(doc)
                    self.key = key
                    self.missing_logged = False
                    log("rates from %s: %s" % (self.path, json.dumps(self.current["rates"])))
                except (OSError, ValueError, TypeError) as e:
                    # Probably caught mid-write: keep the old rates, retry next time.
                    log("rates file %s unreadable (%s): keeping current rates" % (self.path, e))
            return self.current

    def _merge(self, doc):
        if not isinstance(doc, dict):
            raise ValueError("expected a JSON object")
        rates = dict(self.base["rates"])
        out = {"rates": rates, "stall_seconds": self.base["stall_seconds"],
               "error_methods": self.base["error_methods"],
               "latency_ms": self.base["latency_ms"], "connection_rate": self.base["connection_rate"]}
        for k, v in doc.items():
            name = k[:-5] if k.endswith("_rate") else k
            if name in rates:
                v = float(v)
                if not 0.0 <= v <= 1.0:
                    raise ValueError("rate %s=%s is not between 0 and 1" % (k, v))
                rates[name] = v
            elif k == "stall_seconds":
                out["stall_seconds"] = float(v)
            elif k == "error_methods":
                out["error_methods"] = parse_methods(v)
            elif k in ("latency_ms", "connection_rate"):
                v = float(v)
                if not v >= 0.0:
                    raise ValueError("%s=%s is not 0 or more" % (k, v))
                out[k] = v
            else:
                log("rates file: ignoring unknown key %r" % k)
        return out


class Stats:
    def __init__(self, path, settings):
        self.path = path
        self.settings = settings
        self.lock = threading.Lock()
        self.c = {
            "requests": 0, "forwarded": 0,
            "faults": {f: 0 for f in FAULTS},
            "flip_skipped": 0, "upstream_errors": 0, "client_disconnects": 0,
            "bytes_to_upstream": 0, "bytes_to_client": 0, "bytes": 0,
            "connections": 0, "active_connections": 0,
        }

    def add(self, write=True, fault=None, **counts):
        with self.lock:
            for k, v in counts.items():
                self.c[k] += v
            if fault:
                self.c["faults"][fault] += 1
            self.c["bytes"] = self.c["bytes_to_upstream"] + self.c["bytes_to_client"]
            if write:
                self._write()

    def write(self):
        with self.lock:
            self._write()

    def _write(self):
        if not self.path:
            return
        doc = dict(self.c)
        doc["faults"] = dict(self.c["faults"])
        doc["rates"] = dict(self.settings.current["rates"])
        tmp = "%s.tmp%d" % (self.path, os.getpid())
        try:
            with open(tmp, "w") as f:
                json.dump(doc, f, sort_keys=True)
                f.write("\n")
            os.replace(tmp, self.path)
        except OSError as e:
            log("cannot write stats %s: %s" % (self.path, e))


# ---------------------------------------------------------------- HTTP parsing

class Reader:
    """A buffered socket reader that turns errors into `exc`."""

    def __init__(self, sock, exc):
        self.sock = sock
        self.f = sock.makefile("rb", buffering=65536)
        self.exc = exc

    def readline(self):
        try:
            line = self.f.readline(MAX_LINE + 1)
        except (OSError, ValueError) as e:
            raise self.exc("read: %s" % e)
        if len(line) > MAX_LINE:
            raise self.exc("line longer than %d bytes" % MAX_LINE)
        return line

    def readinto1(self, mv):
        try:
            return self.f.readinto1(mv)
        except (OSError, ValueError) as e:
            raise self.exc("read: %s" % e)

    def close(self):
        try:
            self.f.close()
        except OSError:
            pass


def read_head(reader, allow_eof):
    """Reads a message head; returns (raw bytes, first line, {name: [values]}),
    or None at a clean EOF before any byte when allow_eof."""
    chunks = []
    line = reader.readline()
    while line in (b"\r\n", b"\n"):  # RFC 9112 2.2: ignore leading empty lines
        line = reader.readline()
    if not line:
        if allow_eof:
            return None
        raise reader.exc("connection closed before a message head")
    chunks.append(line)
    first = line.rstrip(b"\r\n")
    headers = {}
    while True:
        line = reader.readline()
        if not line.endswith(b"\n"):
            raise reader.exc("connection closed inside a message head")
        chunks.append(line)
        if line in (b"\r\n", b"\n"):
            break
        if len(chunks) > MAX_HEADERS:
            raise reader.exc("more than %d header lines" % MAX_HEADERS)
        name, sep, value = line.partition(b":")
        if not sep:
            continue  # obs-fold or junk: forwarded as is, not interpreted
        headers.setdefault(name.strip().lower().decode("latin-1"), []).append(
            value.strip().decode("latin-1"))
    return b"".join(chunks), first, headers


def tokens(headers, name):
    out = []
    for v in headers.get(name, []):
        out.extend(t.strip().lower() for t in v.split(",") if t.strip())
    return out


def content_length(headers, exc):
    values = headers.get("content-length")
    if not values:
        return None
    found = set()
    for v in values:
        for item in v.split(","):
            item = item.strip()
            if not item.isdigit():
                raise exc("bad Content-Length %r" % v)
            found.add(int(item))
    if len(found) != 1:
        raise exc("conflicting Content-Length %r" % values)
    return found.pop()


def keep_alive(version, headers):
    conn = tokens(headers, "connection")
    if "close" in conn:
        return False
    if version == b"HTTP/1.0":
        return "keep-alive" in conn
    return True


def relay_exact(reader, n, write, buf):
    """Copies exactly n bytes from reader to write(memoryview)."""
    mv = memoryview(buf)
    while n > 0:
        k = reader.readinto1(mv[:min(n, len(mv))])
        if not k:
            raise reader.exc("connection closed with %d body bytes to go" % n)
        write(mv[:k])
        n -= k


def relay_chunked(reader, data, framing, buf, before_end=None):
    """Copies a chunked body byte for byte: chunk-size lines, extensions,
    CRLFs and trailers go to framing(bytes), chunk data to data(memoryview).
    before_end() is called before the last-chunk is written."""
    while True:
        line = reader.readline()
        if not line.endswith(b"\n"):
            raise reader.exc("connection closed inside a chunked body")
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise reader.exc("bad chunk size line %r" % line[:80])
        if size == 0:
            if before_end:
                before_end()
            framing(line)
            while True:  # trailers, then the empty line
                t = reader.readline()
                if not t.endswith(b"\n"):
                    raise reader.exc("connection closed inside chunked trailers")
                framing(t)
                if t in (b"\r\n", b"\n"):
                    return
        framing(line)
        relay_exact(reader, size, data, buf)
        crlf = reader.readline()
        if crlf not in (b"\r\n", b"\n"):
            raise reader.exc("chunk data not followed by CRLF")
        framing(crlf)


def relay_until_close(reader, write, buf):
    mv = memoryview(buf)
    while True:
        k = reader.readinto1(mv)
        if not k:
            return
        write(mv[:k])


def xml_error(status, reason, code, message, method, close):
    body = ('<?xml version="1.0" encoding="UTF-8"?>\n'
            "<Error><Code>%s</Code><Message>%s</Message><RequestId>faultproxy</RequestId>"
            "</Error>" % (code, escape(message))).encode()
    head = ("HTTP/1.1 %d %s\r\n"
            "Content-Type: application/xml\r\n"
            "Content-Length: %d\r\n"
            "x-amz-request-id: faultproxy\r\n"
            "Server: faultproxy\r\n"
            "Date: %s\r\n"
            "Connection: %s\r\n\r\n"
            % (status, reason, len(body), formatdate(usegmt=True),
               "close" if close else "keep-alive")).encode()
    return head if method == "HEAD" else head + body


# ---------------------------------------------------------------- the proxy

class Sink:
    """Writes a response to the client, applying the request's body fault."""

    def __init__(self, handler, fault, settings):
        self.h = handler
        self.latency = settings["latency_ms"] / 1000.0
        self.fault = fault          # None or one of BODY_FAULTS
        self.cut = None             # body data bytes to send before cutting; -1: before the head
        self.flip_at = None
        self.flip_first_piece = False
        self.data_sent = 0
        self.head_sent = False
        self.length = None

    def plan(self, status, length, has_body):
        """Called once the response head is known. length: body length or None."""
        rng = self.h.proxy.rng_call
        self.length = length if has_body else 0
        if self.fault == "flip":
            if not (200 <= status < 300 and has_body and length != 0):
                self.fault = None
                self.h.proxy.stats.add(write=False, flip_skipped=1)
            elif length is None:
                self.flip_first_piece = True
            else:
                self.flip_at = rng(lambda r: r.randrange(length))
        elif self.fault in ("reset", "stall", "truncate"):
            n = length if has_body else 0
            if n is None:
                n = UNKNOWN_LENGTH_CUT
            if self.fault == "reset":
                self.cut = rng(lambda r: r.randrange(-1, n))
            else:
                self.cut = rng(lambda r: r.randrange(n)) if n > 0 else -1
        if self.fault:
            self.h.proxy.stats.add(write=self.fault == "stall", fault=self.fault)
            if self.h.proxy.verbose:
                log("%s %s %s: inject %s (cut %s, flip %s)" % (
                    self.h.peer, self.h.method, self.h.target, self.fault, self.cut, self.flip_at))

    def head(self, raw):
        if self.latency > 0:
            time.sleep(self.latency)  # the round trip to a far server
        if self.cut == -1:
            raise Cut()
        if self.length == 0 and self.cut is None:
            self.h.account_before_end(len(raw))
        self.h.send_client(raw)
        self.head_sent = True

    def data(self, mv):
        n = len(mv)
        if self.flip_first_piece and n:
            self.flip_at = self.data_sent + self.h.proxy.rng_call(lambda r: r.randrange(n))
            self.flip_first_piece = False
        if self.flip_at is not None and self.data_sent <= self.flip_at < self.data_sent + n:
            i = self.flip_at - self.data_sent
            mv[i] ^= self.h.proxy.rng_call(lambda r: r.randrange(1, 256))
            self.flip_at = None
        if self.cut is not None and self.data_sent + n > self.cut:
            k = self.cut - self.data_sent
            if k > 0:
                self.h.send_client(mv[:k])
                self.data_sent += k
            raise Cut()
        if self.length is not None and self.data_sent + n == self.length:
            self.h.account_before_end(n)
        self.h.pace(n)
        self.h.send_client(mv)
        self.data_sent += n

    def framing(self, raw):
        if self.cut is not None and self.data_sent >= self.cut:
            raise Cut()
        self.h.send_client(raw)

    def before_end(self):
        if self.cut is not None:
            raise Cut()
        self.h.account_before_end(5)  # about the size of the last-chunk


class Handler:
    def __init__(self, proxy, csock, addr):
        self.proxy = proxy
        self.csock = csock
        self.peer = "%s:%s" % addr[:2]
        self.creader = Reader(csock, ClientGone)
        self.usock = None
        self.ureader = None
        self.buf = bytearray(BUF_SIZE)
        self.to_client = 0
        self.to_upstream = 0
        self.method = self.target = "-"
        self.body_pending = False
        self.rate = 0.0             # this connection's pacing, bytes/s (0: none)
        self.paced_from = 0.0       # when the paced bytes started
        self.paced = 0              # body bytes sent since then

    # --- I/O with error translation and byte counting

    def send_client(self, data):
        try:
            self.csock.sendall(data)
        except OSError as e:
            raise ClientGone("send: %s" % e)
        self.to_client += len(data)

    def pace(self, n):
        """Sleeps until n more body bytes fit the connection's rate. The
        schedule restarts after an idle gap, so a pause between requests is
        not made up for with a burst."""
        if self.rate <= 0:
            return
        now = time.monotonic()
        if self.paced_from + self.paced / self.rate < now - 0.05:
            self.paced_from, self.paced = now, 0
        # The n bytes arrive when the link has carried them at the rate.
        self.paced += n
        due = self.paced_from + self.paced / self.rate
        if due > now:
            time.sleep(due - now)

    def send_upstream(self, data):
        try:
            self.usock.sendall(data)
        except OSError as e:
            raise UpstreamError("send: %s" % e)
        self.to_upstream += len(data)

    def flush_counts(self, write, fault=None, **extra):
        tc, tu = self.to_client, self.to_upstream
        self.to_client = self.to_upstream = 0
        self.proxy.stats.add(write=write, fault=fault, bytes_to_client=tc, bytes_to_upstream=tu,
                             **extra)

    def account_before_end(self, pending, fault=None, **extra):
        """Writes the stats before the last `pending` bytes of a response go
        out, so that a client that has its whole response can read stats that
        count it. (Those bytes are counted now; to_client goes negative until
        they are sent.)"""
        self.to_client += pending
        self.flush_counts(write=True, fault=fault, **extra)
        self.to_client = -pending

    # --- upstream connection

    def close_upstream(self):
        if self.ureader:
            self.ureader.close()
        if self.usock:
            try:
                self.usock.close()
            except OSError:
                pass
        self.usock = self.ureader = None

    def upstream_stale(self):
        """A kept-alive upstream connection that the server closed (or that has
        unexpected bytes waiting: readable either way) must not be reused."""
        try:
            r, _, _ = select.select([self.usock], [], [], 0)
        except (OSError, ValueError):
            return True
        return bool(r)

    def connect_upstream(self):
        """Returns True if a fresh connection was made."""
        if self.usock is not None and not self.upstream_stale():
            return False
        self.close_upstream()
        host, port = self.proxy.upstream
        try:
            s = socket.create_connection((host, port), timeout=self.proxy.connect_timeout)
        except OSError as e:
            raise UpstreamError("connect %s:%d: %s" % (host, port, e))
        s.settimeout(self.proxy.upstream_timeout)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.usock = s
        self.ureader = Reader(s, UpstreamError)
        return True

    # --- closing the client

    def close_client(self, how):
        s = self.csock
        try:
            if how == "reset":
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            else:
                # A graceful close: FIN, then read what the client still sends
                # (a close() with unread input would send RST instead).
                s.shutdown(socket.SHUT_WR)
                s.settimeout(2.0)
                deadline = time.monotonic() + 2.0
                while time.monotonic() < deadline:
                    if not s.recv(65536):
                        break
        except OSError:
            pass
        self.creader.close()
        try:
            s.close()
        except OSError:
            pass

    def stall(self, seconds):
        """Sends nothing for `seconds` or until the client closes."""
        deadline = time.monotonic() + seconds
        stop = self.proxy.stopping
        while not stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            try:
                r, _, _ = select.select([self.csock], [], [], min(left, 0.5))
                if r and not self.csock.recv(65536):
                    return  # the client closed
            except OSError:
                return

    # --- the loop

    def run(self):
        how = "close"
        try:
            how = self.serve()
        except ClientGone as e:
            if self.proxy.verbose:
                log("%s: client gone: %s" % (self.peer, e))
            self.flush_counts(write=True, client_disconnects=1)
        except UpstreamError as e:
            log("%s: upstream error: %s" % (self.peer, e))
            how = "reset"
        except Exception:  # a bug: log it, but never let one connection take the proxy down
            log("%s: internal error:\n%s" % (self.peer, traceback.format_exc()))
            how = "reset"
        finally:
            self.close_upstream()
            self.close_client(how)
            self.proxy.stats.add(write=True, active_connections=-1)

    def serve(self):
        while True:
            head = read_head(self.creader, allow_eof=True)
            if head is None:
                return "close"
            raw, first, headers = head
            parts = first.split(b" ")
            if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
                self.send_client(xml_error(400, "Bad Request", "BadRequest",
                                           "faultproxy cannot parse the request line", "GET", True))
                return "close"
            method = parts[0].decode("latin-1")
            self.method, self.target = method, parts[1].decode("latin-1")
            version = parts[2]
            try:
                if "transfer-encoding" in headers:
                    if tokens(headers, "transfer-encoding")[-1:] != ["chunked"]:
                        raise BadRequest("unsupported Transfer-Encoding %r" % headers["transfer-encoding"])
                    body = "chunked"
                else:
                    body = content_length(headers, BadRequest) or None
            except BadRequest as e:
                log("%s: bad request: %s" % (self.peer, e))
                self.send_client(xml_error(400, "Bad Request", "BadRequest", str(e), method, True))
                return "close"
            expect = "100-continue" in tokens(headers, "expect")
            client_ka = keep_alive(version, headers)

            settings = self.proxy.settings.get()
            fault = self.proxy.draw(method, settings)
            self.proxy.stats.add(write=False, requests=1)

            if fault == "error":
                status = self.proxy.rng_call(lambda r: r.choice((503, 500)))
                reason, code, message = ERRORS[status]
                close = not client_ka or (body is not None and expect)
                if not close and body is not None:
                    self.discard_body(body)
                resp = xml_error(status, reason, code, message, method, close)
                self.account_before_end(len(resp), fault="error")
                self.send_client(resp)
                if self.proxy.verbose:
                    log("%s %s %s: inject error %d" % (self.peer, method, self.target, status))
                if close:
                    return "close"
                continue

            result = self.forward(raw, method, body, expect, fault, settings)
            if result != "keep" or not client_ka:
                return result

    def discard_body(self, body):
        def drop(_):
            pass
        if body == "chunked":
            relay_chunked(self.creader, drop, drop, self.buf)
        else:
            relay_exact(self.creader, body, drop, self.buf)

    def send_body_upstream(self, body):
        """Streams the request body. If the upstream fails, the rest of the
        body is still read (and dropped), so that the client can get a 502 on
        a connection that stays in step."""
        failed = []

        def out(data):
            if failed:
                return
            try:
                self.send_upstream(data)
            except UpstreamError as e:
                failed.append(e)
        if body == "chunked":
            relay_chunked(self.creader, out, out, self.buf)
        else:
            relay_exact(self.creader, body, out, self.buf)
        self.body_pending = False
        if failed:
            raise failed[0]

    def read_final_head(self):
        """Reads the upstream's response head, relaying 1xx interim responses."""
        while True:
            raw, first, headers = read_head(self.ureader, allow_eof=False)
            status = parse_status(first)
            if 100 <= status < 200 and status != 101:
                self.send_client(raw)
                continue
            return raw, first, headers, status

    def bad_gateway(self, method, body, expect, err):
        """Answers 502; reads the request body first unless the client waits
        for 100 Continue (then the connection is closed after the answer)."""
        log("%s %s %s: upstream error: %s -> 502" % (self.peer, method, self.target, err))
        self.close_upstream()
        if self.body_pending and not expect:
            self.discard_body(body)
            self.body_pending = False
        close = self.body_pending
        resp = xml_error(502, "Bad Gateway", "BadGateway",
                         "faultproxy: upstream %s:%d: %s" % (*self.proxy.upstream, err),
                         method, close)
        self.account_before_end(len(resp), upstream_errors=1)
        self.send_client(resp)
        return "close" if close else "keep"

    def send_request(self, raw, body, expect):
        """Sends the request (and its body); returns the final response head
        as (raw, first line, headers, status)."""
        self.send_upstream(raw)
        if self.body_pending:
            if not expect:
                self.send_body_upstream(body)
            else:
                r = read_head(self.ureader, allow_eof=False)
                status = parse_status(r[1])
                if not (100 <= status < 200 and status != 101):
                    return r + (status,)  # a final answer: the body is not wanted
                self.send_client(r[0])    # 100 Continue
                self.send_body_upstream(body)
        return self.read_final_head()

    def forward(self, raw, method, body, expect, fault, settings):
        """Forwards one request and its response. Returns "keep" to serve the
        next request on this connection, or how to close it."""
        self.body_pending = body is not None
        self.rate = settings["connection_rate"]
        sink = Sink(self, fault, settings)
        for attempt in (1, 2):
            try:
                fresh = self.connect_upstream()
            except UpstreamError as e:
                return self.bad_gateway(method, body, expect, e)
            try:
                rhead = self.send_request(raw, body, expect)
                break
            except UpstreamError as e:
                # A reused connection that the server closed meanwhile: retry
                # once on a new one if there is no request body to replay.
                if attempt == 1 and not fresh and body is None:
                    self.close_upstream()
                    continue
                return self.bad_gateway(method, body, expect, e)

        self.proxy.stats.add(write=False, forwarded=1)
        uraw, first, uheaders, status = rhead
        resp_version = first.split(b" ", 1)[0]
        try:
            if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
                framing, length = "none", 0
            elif "transfer-encoding" in uheaders:
                if tokens(uheaders, "transfer-encoding")[-1:] == ["chunked"]:
                    framing, length = "chunked", None
                else:
                    framing, length = "close", None
            else:
                length = content_length(uheaders, UpstreamError)
                framing = "close" if length is None else "length"
            upstream_ka = framing != "close" and keep_alive(resp_version, uheaders)
            sink.plan(status, length, framing != "none")
            sink.head(uraw)
            if framing == "length":
                relay_exact(self.ureader, length, sink.data, self.buf)
            elif framing == "chunked":
                relay_chunked(self.ureader, sink.data, sink.framing, self.buf, sink.before_end)
            elif framing == "close":
                relay_until_close(self.ureader, sink.data, self.buf)
                sink.before_end()
        except Cut:
            self.close_upstream()
            self.flush_counts(write=True)
            if sink.fault == "reset":
                return "reset"
            if sink.fault == "stall":
                self.stall(settings["stall_seconds"])
            return "close"
        except UpstreamError as e:
            if not sink.head_sent:
                return self.bad_gateway(method, body, expect, e)
            log("%s %s %s: upstream failed mid-response: %s" % (self.peer, method, self.target, e))
            self.close_upstream()
            self.flush_counts(write=True, upstream_errors=1)
            return "reset"

        self.flush_counts(write=True)
        if self.body_pending:
            self.close_upstream()
            return "close"  # answered before 100 Continue: the client may or may not send the body
        if not upstream_ka:
            self.close_upstream()
            return "close"  # the client saw Connection: close or a close-delimited body
        return "keep"


def parse_status(first):
    parts = first.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        raise UpstreamError("bad status line %r" % first[:80])
    return int(parts[1])


class Proxy:
    def __init__(self, args):
        self.upstream = args.upstream
        self.settings = Settings(args)
        self.stats = Stats(args.stats, self.settings)
        self.rng = random.Random(args.seed)
        self.rng_lock = threading.Lock()
        self.verbose = args.verbose
        self.upstream_timeout = args.upstream_timeout
        self.connect_timeout = min(10.0, args.upstream_timeout)
        self.idle_timeout = args.idle_timeout
        self.stopping = threading.Event()
        self.conns = set()
        self.conns_lock = threading.Lock()

    def rng_call(self, fn):
        with self.rng_lock:
            return fn(self.rng)

    def draw(self, method, settings):
        rates = settings["rates"]
        with self.rng_lock:
            if method in settings["error_methods"] and self.rng.random() < rates["error"]:
                return "error"
            if method == "GET":
                for f in BODY_FAULTS:
                    if self.rng.random() < rates[f]:
                        return f
        return None

    def serve_connection(self, csock, addr):
        with self.conns_lock:
            self.conns.add(csock)
        try:
            Handler(self, csock, addr).run()
        finally:
            with self.conns_lock:
                self.conns.discard(csock)

    def run(self, lsock):
        self.stats.write()
        while not self.stopping.is_set():
            try:
                csock, addr = lsock.accept()
            except OSError as e:
                if self.stopping.is_set():
                    break
                log("accept: %s" % e)
                time.sleep(0.05)
                continue
            try:
                csock.settimeout(self.idle_timeout)
                csock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                csock.close()
                continue
            self.stats.add(write=False, connections=1, active_connections=1)
            t = threading.Thread(target=self.serve_connection, args=(csock, addr),
                                 name="conn-%s:%s" % addr[:2], daemon=True)
            t.start()

    def shutdown(self):
        self.stopping.set()
        with self.conns_lock:
            conns = list(self.conns)
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def main(argv=None):
    p = argparse.ArgumentParser(
        prog="faultproxy.py",
        description="HTTP/1.1 reverse proxy that injects faults (see the module docstring).")
    p.add_argument("--listen", default="127.0.0.1:0", type=lambda t: parse_hostport(t, "--listen"),
                   help="HOST:PORT to listen on; port 0 picks a free one (default 127.0.0.1:0)")
    p.add_argument("--upstream", required=True, type=lambda t: parse_hostport(t, "--upstream"),
                   help="HOST:PORT of the server (an http:// prefix is accepted)")
    p.add_argument("--seed", type=int, default=0, help="seed of the fault draws (default 0)")
    for f, text in (("error", "answer 503 SlowDown / 500 InternalError instead of forwarding"),
                    ("reset", "reset the connection (RST) in a GET response"),
                    ("stall", "stop sending in a GET response for --stall-seconds"),
                    ("truncate", "close (FIN) in the middle of a GET response body"),
                    ("flip", "change one byte of a 2xx GET response body")):
        p.add_argument("--%s-rate" % f, type=rate_arg, default=0.0, metavar="P",
                       help="probability per eligible request to %s (default 0)" % text)
    p.add_argument("--error-methods", default="GET,HEAD",
                   help="comma-separated methods eligible for --error-rate (default GET,HEAD)")
    p.add_argument("--stall-seconds", type=float, default=60.0,
                   help="how long a stall lasts before the proxy closes the connection (default 60)")
    p.add_argument("--latency-ms", type=nonnegative_arg, default=0.0, metavar="MS",
                   help="hold every response head back MS milliseconds: a far server's time to first byte (default 0)")
    p.add_argument("--connection-rate", type=nonnegative_arg, default=0.0, metavar="BPS",
                   help="pace each client connection's response bodies to BPS bytes/s, as a cloud store "
                        "limits one connection (default 0: no limit)")
    p.add_argument("--rates-file", metavar="PATH",
                   help="JSON object of rates (and stall_seconds, error_methods, latency_ms, connection_rate), "
                        "re-read when it changes")
    p.add_argument("--stats", metavar="PATH", help="JSON file of counters, rewritten after every request")
    p.add_argument("--upstream-timeout", type=float, default=120.0,
                   help="seconds to wait on the upstream for one read or write (default 120)")
    p.add_argument("--idle-timeout", type=float, default=300.0,
                   help="seconds a client connection may be idle or blocked (default 300)")
    p.add_argument("-v", "--verbose", action="store_true", help="log every injected fault")
    args = p.parse_args(argv)

    proxy = Proxy(args)
    proxy.settings.get()  # log the rates file's state once at start

    host, port = args.listen
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    lsock = socket.socket(family, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        lsock.bind((host, port))
    except OSError as e:
        log("cannot listen on %s:%d: %s" % (host, port, e))
        return 1
    lsock.listen(256)
    actual = lsock.getsockname()
    shown = "[%s]" % actual[0] if family == socket.AF_INET6 else actual[0]

    def on_signal(signum, frame):
        raise KeyboardInterrupt()
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    print("faultproxy listening on %s:%d" % (shown, actual[1]), flush=True)
    log("upstream %s:%d, rates %s, seed %d, latency %g ms, %g bytes/s per connection" % (
        args.upstream[0], args.upstream[1], json.dumps(proxy.settings.current["rates"]), args.seed,
        args.latency_ms, args.connection_rate))
    try:
        proxy.run(lsock)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        lsock.close()
        proxy.shutdown()
        proxy.stats.write()
        log("stopped")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
