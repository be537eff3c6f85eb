"""Blocking client for the weightcache daemon's Unix socket (docs/protocol.md).

A Client holds one connection and is not thread-safe: use one Client per
thread (connections are cheap).  After a timeout, a closed connection or a
protocol violation the Client closes itself; make a new one to go on.
"""
from __future__ import annotations

import array
import json
import os
import socket
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, List, Optional, Tuple, Union

from . import wire
from .wire import (TIER_NVME, FileInfo, HelloOk, ModelInfo, ModelSummary,
                   ProtocolError, WeightCacheError)

DEFAULT_SOCKET = "/run/weightcache/weightcache.sock"
ProgressCallback = Callable[[int, int], None]

_MAX_FDS = 8  # control buffer room; the daemon sends one descriptor per `opened` frame
_CMSG_CLOEXEC = getattr(socket, "MSG_CMSG_CLOEXEC", 0)


@dataclass
class Frame:
    """One received frame; `fd` is the descriptor that came with its first byte.
    `direct`: the payload was received into the view a `next_frame(into=...)`
    callback supplied, and `payload` is that view."""
    type: int
    request: int
    payload: Union[bytes, bytearray, memoryview]
    fd: Optional[int] = None
    direct: bool = False


# into(type, request id, payload length) -> a writable view of exactly that
# length to receive the payload into, or None for the usual buffer.
PayloadTarget = Callable[[int, int, int], Optional[memoryview]]


@dataclass
class _FdChunk:
    """Descriptors received with the stream bytes [start, end)."""
    start: int
    end: int
    fds: List[int] = field(default_factory=list)


def _close_fds(fds: List[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


class FrameReader:
    """Reassembles frames from a stream socket, collecting SCM_RIGHTS descriptors.

    A descriptor belongs to the frame whose first byte arrived in the same
    recvmsg as the descriptor; it is handed out only with an `opened` frame,
    every other one is closed.  Large payloads are received straight into
    their own buffer, or into the caller's memory (see next_frame): one copy.
    """

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buf = bytearray()  # received bytes not yet part of a returned frame
        self._received = 0  # stream bytes received so far
        self._chunks: List[_FdChunk] = []
        self._scratch = memoryview(bytearray(1 << 16))

    def next_frame(self, into: Optional[PayloadTarget] = None) -> Frame:
        """The next whole frame; ConnectionError at end of stream, ProtocolError
        on a bad header, socket timeouts as raised by the socket.  With `into`,
        called once the header is known: a view it returns (of exactly the
        payload's length) receives the payload, and the frame is `direct`."""
        while len(self._buf) < wire.HEADER_SIZE:
            self._buf += self._scratch[:self._recv_into(self._scratch)]
        size, type_, request = wire.unpack_header(self._buf[:wire.HEADER_SIZE])
        start = self._received - len(self._buf)
        end = wire.HEADER_SIZE + size
        target = into(type_, request, size) if into is not None and size else None
        if target is not None:
            if len(target) != size or target.readonly:
                raise ValueError("a payload target must be writable and exactly as long as the payload")
            self._receive_payload_into(target, end)
            return self._frame(start, start + end, type_, request, target, direct=True)
        with memoryview(self._buf) as view:
            if len(self._buf) >= end:
                payload = bytes(view[wire.HEADER_SIZE:end])
            else:
                payload = bytearray(size)
                payload[:len(view) - wire.HEADER_SIZE] = view[wire.HEADER_SIZE:]
        if isinstance(payload, bytearray):
            have = len(self._buf) - wire.HEADER_SIZE
            self._buf.clear()
            with memoryview(payload) as view:
                while have < size:
                    have += self._recv_into(view[have:])
        else:
            del self._buf[:end]
        return self._frame(start, start + wire.HEADER_SIZE + size, type_, request, payload)

    def _receive_payload_into(self, target: memoryview, end: int) -> None:
        """Move the payload bytes already buffered (frame bytes [HEADER_SIZE,
        end) of _buf) into `target`, then receive the rest straight into it."""
        with memoryview(self._buf) as view:
            have = min(len(view), end) - wire.HEADER_SIZE
            target[:have] = view[wire.HEADER_SIZE:wire.HEADER_SIZE + have]
        del self._buf[:wire.HEADER_SIZE + have]
        while have < len(target):
            have += self._recv_into(target[have:])

    def _recv_into(self, view: memoryview) -> int:
        """One recvmsg_into; records descriptors with the bytes they came with."""
        n, ancdata, flags, _ = self._sock.recvmsg_into([view], socket.CMSG_SPACE(_MAX_FDS * 4), _CMSG_CLOEXEC)
        fds = _fds_from(ancdata)
        if n == 0:
            _close_fds(fds)
            raise ConnectionError("the daemon closed the connection")
        if fds:
            self._chunks.append(_FdChunk(self._received, self._received + n, fds))
        self._received += n
        if flags & getattr(socket, "MSG_CTRUNC", 0):
            raise ProtocolError("control data truncated: descriptors were lost")
        return n

    def _frame(self, start: int, end: int, type_: int, request: int, payload, direct: bool = False) -> Frame:
        """The frame at stream bytes [start, end), with its descriptor if it is
        `opened`; descriptors that can no longer belong to any frame are closed."""
        fd = None
        if type_ == wire.OPENED:
            for chunk in self._chunks:
                if chunk.start <= start < chunk.end and chunk.fds:
                    fd = chunk.fds.pop(0)
                    break
        # Every frame starting before `end` has now been read: descriptors that
        # arrived only with such frames were not claimed and never will be.
        for chunk in self._chunks:
            if chunk.end <= end:
                _close_fds(chunk.fds)
        self._chunks = [c for c in self._chunks if c.end > end]
        return Frame(type_, request, payload, fd, direct)

    def close(self) -> None:
        """Close every descriptor not handed out."""
        for chunk in self._chunks:
            _close_fds(chunk.fds)
        self._chunks = []


def _fds_from(ancdata: list) -> List[int]:
    fds = array.array("i")
    for level, type_, data in ancdata:
        if level == socket.SOL_SOCKET and type_ == socket.SCM_RIGHTS:
            fds.frombytes(data[:len(data) - len(data) % fds.itemsize])
    return list(fds)


def _pieces(offset: int, length: int, step: int, block: int) -> Iterator[Tuple[int, int]]:
    """(position relative to offset, length) of each read request that covers
    [offset, offset + length): at most `step` bytes each (the daemon's
    max_read_length), and cut at multiples of the largest whole number of
    blocks that fits in a step, counted from the start of the file. So no two
    requests need the same block: on a cold file each block is fetched from
    the store once, by one request, with no request waiting on another's
    fetch (an unaligned 8 MiB read touches three 4 MiB blocks, and its
    neighbours share two of them). When a step holds no whole block, the cuts
    fall at multiples of the step."""
    unit = step // block * block if 0 < block <= step else step
    pos = 0
    while pos < length:
        n = min(length - pos, unit - (offset + pos) % unit)
        yield pos, n
        pos += n


class Client:
    """One connection to the daemon; see the module docstring for threading.

    `path` defaults to $WEIGHTCACHE_SOCKET, else $WEIGHTCACHE_SOCKET_PATH (the
    variable the daemon and the CLI read socket.path from, so one setting
    serves every process), else /run/weightcache/weightcache.sock.
    `timeout` (seconds, None = wait forever) bounds every socket operation.
    Raises WeightCacheError for `error` replies (`.code`, `.name`, `.message`),
    ConnectionError when the connection ends, ProtocolError on bad bytes.
    """

    def __init__(self, path: Optional[str] = None, timeout: Optional[float] = None,
                 client_name: str = "python") -> None:
        self.path = (path or os.environ.get("WEIGHTCACHE_SOCKET") or os.environ.get("WEIGHTCACHE_SOCKET_PATH")
                     or DEFAULT_SOCKET)
        self._next_id = 1
        self._sock: Optional[socket.socket] = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._sock.settimeout(timeout)
            self._sock.connect(self.path)
            self._reader = FrameReader(self._sock)
            frame = wire.encode_hello(self._new_id(), client_name)
            rid = wire.unpack_header(frame)[2]
            try:
                self._sock.sendall(frame)
            except (BrokenPipeError, ConnectionResetError) as e:
                # A daemon that refuses the connection (busy, over its limits)
                # writes a connection-level error and closes, and may do so
                # before our hello is sent: that error is still waiting to be
                # read, and says more than the broken pipe.
                try:
                    self._receive({rid})
                except WeightCacheError as refusal:
                    raise refusal from e
                except (OSError, ConnectionError, ProtocolError):
                    pass
                raise
            hello = self._final_value(self._receive({rid}), wire.HELLO_OK)
        except BaseException:
            self.close()
            raise
        if hello.version != wire.PROTOCOL_VERSION or hello.max_read_length < 1 or hello.max_in_flight < 1:
            self.close()
            raise ProtocolError(f"unusable hello-ok: {hello}")
        self.hello: HelloOk = hello
        self.server = hello.server
        self.max_request_frame = hello.max_request_frame
        self.max_read_length = hello.max_read_length
        self.max_in_flight = hello.max_in_flight
        self.block_size = hello.block_size

    # ------------------------------------------------------------ requests

    def resolve(self, model: str) -> ModelInfo:
        """The model's files and their state on each tier."""
        return self._request(wire.RESOLVE, wire.MODEL, model)

    def stat(self, model: str, path: str) -> FileInfo:
        return self._request(wire.STAT, wire.FILE, model, path)

    def list(self) -> List[ModelSummary]:
        """Every model the daemon knows."""
        return self._request(wire.LIST, wire.MODELS)

    def read(self, model: str, path: str, offset: int, length: int) -> bytes:
        """Bytes [offset, offset+length) of a file, fewer when the range ends
        past the end of the file.  Lengths over max_read_length are split into
        requests pipelined up to max_in_flight deep."""
        parts: Dict[int, bytes] = {}
        self._read_ranges(model, path, offset, length, parts.__setitem__)
        return b"".join(parts[k] for k in sorted(parts))

    def read_into(self, model: str, path: str, offset: int, buffer: Union[bytearray, memoryview]) -> int:
        """Fill the writable bytes-like `buffer` from `offset` on, as read()
        would; returns the number of bytes written (fewer than len(buffer) when
        the file ends first; bytes of `buffer` past that count are undefined).
        Each reply's payload is received straight into its place in `buffer`:
        no other copy is made."""
        view = memoryview(buffer).cast("B")
        if view.readonly:
            raise TypeError("read_into needs a writable buffer")
        def sink(pos: int, data: bytes) -> None:
            view[pos:pos + len(data)] = data
        return self._read_ranges(model, path, offset, len(view), sink, view)

    def read_file(self, model: str, path: str) -> bytes:
        """The whole file, through read()."""
        size = self.stat(model, path).size
        return self.read(model, path, 0, size) if size else b""

    def open(self, model: str, path: str) -> Tuple[int, FileInfo]:
        """A read-only descriptor of the verified staged file, and its FileInfo.
        The caller owns the descriptor and must close it."""
        rid = self._new_id()
        frame = self._exchange(wire.encode_request(wire.OPEN, rid, model, path), rid)
        info = self._final_value(frame, wire.OPENED)
        if frame.fd is None:
            self.close()
            raise ProtocolError("`opened` reply came without a file descriptor")
        return frame.fd, info

    def preload(self, model: str, tier: int = TIER_NVME, pin: bool = False,
                progress: Optional[ProgressCallback] = None) -> ModelInfo:
        """Bring the whole model onto `tier` (pinning it first when `pin`);
        `progress(done, total)` is called for every progress frame."""
        rid = self._new_id()
        frame = self._exchange(wire.encode_request(wire.PRELOAD, rid, model, tier, pin), rid, progress)
        return self._final_value(frame, wire.MODEL)

    def pin(self, model: str) -> str:
        return self._request(wire.PIN, wire.OK, model)

    def unpin(self, model: str) -> str:
        return self._request(wire.UNPIN, wire.OK, model)

    def evict(self, model: str, tier: int = TIER_NVME) -> str:
        """Drop the model from nvme and ram (tier 1) or from ram only (tier 2)."""
        return self._request(wire.EVICT, wire.OK, model, tier)

    def stats(self) -> dict:
        """The daemon's counters (the JSON object of docs/protocol.md, "Stats")."""
        return json.loads(self._request(wire.STATS, wire.STATS_REPLY))

    def close(self) -> None:
        """Close the connection; safe to call twice."""
        sock, self._sock = self._sock, None
        if sock is not None:
            if hasattr(self, "_reader"):
                self._reader.close()
            sock.close()

    @property
    def closed(self) -> bool:
        return self._sock is None

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------ internals

    def _new_id(self) -> int:
        rid = self._next_id
        self._next_id = rid % 0xFFFFFFFF + 1  # 1 ... 2^32-1, never 0
        return rid

    def _request(self, type_: int, reply_type: int, *fields: object):
        rid = self._new_id()
        return self._call(wire.encode_request(type_, rid, *fields), reply_type)

    def _call(self, frame: bytes, reply_type: int):
        rid = wire.unpack_header(frame)[2]
        return self._final_value(self._exchange(frame, rid), reply_type)

    def _exchange(self, frame: bytes, rid: int, progress: Optional[ProgressCallback] = None) -> Frame:
        """Send one request and return its final reply frame."""
        self._send(frame)
        return self._receive({rid}, progress)

    def _send(self, *frames: bytes) -> None:
        """Send request frames, several in one write."""
        if self._sock is None:
            raise ConnectionError("client is closed")
        limit = getattr(self, "max_request_frame", 0)
        for frame in frames:
            if limit and len(frame) > limit:
                raise ValueError(f"request frame of {len(frame)} bytes is over the daemon's {limit}")
        data = frames[0] if len(frames) == 1 else b"".join(frames)
        self._guard(lambda: self._sock.sendall(data))

    def _receive(self, waiting: set, progress: Optional[ProgressCallback] = None,
                 into: Optional[PayloadTarget] = None) -> Frame:
        """The next final reply to one of the request ids in `waiting`; progress
        frames go to `progress`.  A connection-level error (id 0) is raised.
        `into` is passed to FrameReader.next_frame."""
        while True:
            if self._sock is None:
                raise ConnectionError("client is closed")
            frame = self._guard(lambda: self._reader.next_frame(into))
            if frame.request in waiting and frame.type == wire.PROGRESS:
                p = self._decode(frame)
                if progress is not None:  # a callback that raises closes the client
                    self._guard(lambda: progress(p.done, p.total))
                continue
            if frame.request in waiting:
                return frame
            if frame.fd is not None:
                os.close(frame.fd)
            value = self._decode(frame)
            self.close()
            if isinstance(value, WeightCacheError) and frame.request == 0:
                raise value
            raise ProtocolError(f"reply type 0x{frame.type:02x} for request {frame.request}, which is not in flight")

    def _decode(self, frame: Frame):
        try:
            return wire.decode_reply(frame.type, frame.payload)
        except ProtocolError:
            if frame.fd is not None:
                os.close(frame.fd)
            self.close()
            raise

    def _final_value(self, frame: Frame, reply_type: int):
        """The value of a final reply; WeightCacheError for `error` (closing
        the client when the daemon closes too), ProtocolError for another type."""
        value = self._decode(frame)
        if frame.fd is not None and frame.type != reply_type:
            os.close(frame.fd)
        if isinstance(value, WeightCacheError):
            if value.code in wire.FATAL_CODES:
                self.close()
            raise value
        if frame.type != reply_type:
            self.close()
            raise ProtocolError(f"expected reply 0x{reply_type:02x}, got 0x{frame.type:02x}")
        return value

    def _guard(self, op):
        """Run a socket operation; on any failure the connection is closed."""
        try:
            return op()
        except BaseException:
            self.close()
            raise

    def _read_ranges(self, model: str, path: str, offset: int, length: int,
                     sink: Callable[[int, bytes], None], target: Optional[memoryview] = None) -> int:
        """Read [offset, offset+length) in pieces of at most max_read_length,
        cut on the file's block boundaries (_pieces), at most max_in_flight outstanding, calling sink(position, data) for each piece
        (position relative to `offset`, any order).  With `target` (a writable
        byte view of `length` bytes), `data` replies are received straight into
        target[position:] instead, and sink only gets pieces that do not fit
        there (bytes past a known end of file).  A piece shorter than asked,
        or `invalid-argument` for any piece after the first, marks the end of
        the file: later pieces are not asked for and not delivered.
        Returns the number of bytes delivered."""
        if offset < 0 or length < 0:
            raise ValueError("offset and length must not be negative")
        pieces = _pieces(offset, length, self.max_read_length, self.block_size)
        in_flight: Dict[int, Tuple[int, int]] = {}  # request id -> (position, length)
        eof = length  # position where the file ends, as far as known
        error: Optional[WeightCacheError] = None
        error_pos = length

        def next_request() -> Optional[bytes]:
            pos, n = next(pieces, (None, 0))
            if pos is None or pos >= eof or error is not None:
                return None
            rid = self._new_id()
            in_flight[rid] = (pos, n)
            return wire.encode_request(wire.READ, rid, model, path, offset + pos, n)

        def send_next() -> bool:
            frame = next_request()
            if frame is None:
                return False
            self._send(frame)
            return True

        def into(type_: int, rid: int, size: int) -> Optional[memoryview]:
            place = in_flight.get(rid) if type_ == wire.DATA else None
            if place is None or size > place[1] or place[0] + size > eof:
                return None  # not a piece of ours, too long (an error below), or past the end
            return target[place[0]:place[0] + size]

        delivered = 0
        try:
            # The first window goes out in one write, so that the daemon sees
            # every request at once and runs them side by side (one at a time,
            # it answers the first on its reading thread before it reads the next).
            window = []
            while len(in_flight) < self.max_in_flight:
                frame = next_request()
                if frame is None:
                    break
                window.append(frame)
            if window:
                self._send(*window)
            while in_flight:
                frame = self._receive(set(in_flight), into=into if target is not None else None)
                pos, n = in_flight.pop(frame.request)
                if frame.direct:  # already in target[pos:pos + len(payload)]
                    got = len(frame.payload)
                    if got < n:
                        eof = min(eof, pos + got)
                    delivered += max(0, min(got, eof - pos))
                    send_next()
                    continue
                try:
                    data = self._final_value(frame, wire.DATA)
                except WeightCacheError as e:
                    if e.code in wire.FATAL_CODES:
                        raise
                    if pos > 0 and e.name == "invalid-argument":
                        eof = min(eof, pos)
                    elif error is None or pos < error_pos:
                        error, error_pos = e, pos
                    data = b""
                else:
                    if len(data) > n:
                        raise ProtocolError(f"asked for {n} bytes, got {len(data)}")
                    if len(data) < n:
                        eof = min(eof, pos + len(data))
                keep = min(len(data), eof - pos)
                if keep > 0:
                    sink(pos, data if keep == len(data) else memoryview(data)[:keep])
                    delivered += keep
                send_next()
        except BaseException:
            self.close()  # replies still in flight would put the connection out of step
            raise
        if error is not None and error_pos < eof:
            raise error
        return delivered
