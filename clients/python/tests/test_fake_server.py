"""The client end to end against a small fake daemon on a temporary Unix socket."""
import array
import json
import os
import select
import shutil
import socket
import tempfile
import threading
import time

import pytest

from weightcache import TIER_RAM, Client, FileInfo, ModelInfo, ModelSummary, ProtocolError, WeightCacheError
from weightcache import wire
from weightcache.wire import HelloOk, Progress

MODEL = "tiny@main"
FILES = {
    "weights.bin": os.urandom(10007),
    "even.bin": os.urandom(4000),  # a whole number of 1000-byte pieces
    "dir/small.txt": b"hello",
}
HELLO = HelloOk(1, "fake 0", 65536, 1000, 4, 4096)


def recv_exact(conn, n):
    data = b""
    while len(data) < n:
        more = conn.recv(n - len(data))
        if not more:
            raise EOFError
        data += more
    return data


class FakeDaemon:
    """Serves FILES of MODEL.  Read replies are held back while more requests
    keep arriving and then sent in reverse order (out of order on purpose).
    Magic model names script misbehaviour: "boom" (close mid-frame), "silent"
    (no reply), "weird" (unknown error code), "garbage" (bad header)."""

    def __init__(self, hello=HELLO, reject=False, files=FILES):
        self.hello, self.reject, self.files = hello, reject, files
        self.dir = tempfile.mkdtemp(prefix="wc", dir="/tmp")
        self.path = os.path.join(self.dir, "d.sock")
        self.fds = {}
        for name, data in files.items():
            real = os.path.join(self.dir, name.replace("/", "_"))
            with open(real, "wb") as f:
                f.write(data)
            self.fds[name] = os.open(real, os.O_RDONLY)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.path)
        self.listener.listen()
        self.max_outstanding = 0
        self.read_order = []  # offsets of read replies, in the order sent
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self):
        self.listener.close()
        for fd in self.fds.values():
            os.close(fd)
        shutil.rmtree(self.dir)

    def _accept(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        pending = []
        with conn:
            if self.reject:
                conn.sendall(wire.encode_reply(wire.ERROR, 0, WeightCacheError(8, "too many connections")))
                return
            while True:
                if pending and not select.select([conn], [], [], 0.05)[0]:
                    self.max_outstanding = max(self.max_outstanding, len(pending))
                    for rid, fields in reversed(pending):
                        self.read_order.append(fields[2])
                        conn.sendall(self._read(rid, *fields))
                    pending = []
                    continue
                try:
                    size, type_, rid = wire.unpack_header(recv_exact(conn, wire.HEADER_SIZE))
                    fields = wire.decode_request(type_, recv_exact(conn, size))
                except EOFError:
                    return
                if type_ == wire.READ:
                    pending.append((rid, fields))
                elif self._handle(conn, type_, rid, fields) == "close":
                    return

    def _read(self, rid, model, path, offset, length):
        if model != MODEL or path not in self.files:
            return error(rid, 6, f"no {model} {path}")
        data = self.files[path]
        if offset >= len(data):
            return error(rid, 5, "offset past end")
        return wire.encode_reply(wire.DATA, rid, data[offset:offset + length])

    def _handle(self, conn, type_, rid, fields):
        model = fields[0] if fields else None
        if type_ == wire.HELLO:
            assert fields == ("weightcache", 1, 1, "python")
            conn.sendall(wire.encode_reply(wire.HELLO_OK, rid, self.hello))
        elif model == "boom":
            conn.sendall(wire.encode_reply(wire.MODEL, rid, model_info())[:20])
            return "close"
        elif model == "silent":
            pass
        elif model == "weird":
            conn.sendall(error(rid, 99, "from the future"))
        elif model == "garbage":
            conn.sendall(b"\x08\x00\x00\x00\x80\x00\x01\x00" + rid.to_bytes(4, "little"))
        elif model not in (MODEL, None):
            conn.sendall(error(rid, 6, "no such model"))
        elif type_ == wire.RESOLVE:
            conn.sendall(wire.encode_reply(wire.MODEL, rid, model_info()))
        elif type_ == wire.STAT:
            conn.sendall(wire.encode_reply(wire.FILE, rid, file_info(fields[1], self.files)))
        elif type_ == wire.OPEN:
            frame = wire.encode_reply(wire.OPENED, rid, file_info(fields[1], self.files))
            conn.sendmsg([frame], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [self.fds[fields[1]]]))])
        elif type_ == wire.PRELOAD:
            total = sum(map(len, FILES.values()))
            for done in (0, total // 2, total):
                conn.sendall(wire.encode_reply(wire.PROGRESS, rid, Progress(done, total)))
            conn.sendall(wire.encode_reply(wire.MODEL, rid, model_info(pinned=fields[2])))
        elif type_ == wire.PIN:  # an `ok` with a descriptor nobody asked for
            frame = wire.encode_reply(wire.OK, rid, "pinned")
            conn.sendmsg([frame], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [self.fds["dir/small.txt"]]))])
        elif type_ == wire.LIST:
            conn.sendall(wire.encode_reply(wire.MODELS, rid, [ModelSummary(MODEL, 3, 14012, 0, 0, False)]))
        elif type_ == wire.STATS:
            conn.sendall(wire.encode_reply(wire.STATS_REPLY, rid, json.dumps({"ram": {"hits": 1}, "nvme": {}})))
        else:
            conn.sendall(wire.encode_reply(wire.OK, rid, ""))


def error(rid, code, message):
    return wire.encode_reply(wire.ERROR, rid, WeightCacheError(code, message))


def file_info(path, files=FILES):
    return FileInfo(path, len(files[path]), "", wire.NVME_STAGED, 0)


def model_info(pinned=False):
    return ModelInfo(MODEL, "/snap", pinned, [file_info(p) for p in FILES])


@pytest.fixture
def daemon():
    d = FakeDaemon()
    yield d
    d.close()


@pytest.fixture
def client(daemon):
    with Client(daemon.path, timeout=5) as c:
        yield c


def open_fds():
    """The descriptors open now. The listing holds one of its own while it
    reads /proc/self/fd, closed by the time it returns: left in, its number
    (the lowest free one, which the next descriptor received will take) would
    hide a leak of exactly that descriptor."""
    return {fd for fd in os.listdir("/proc/self/fd") if _target(fd) is not None}


def _target(fd):
    """What descriptor `fd` refers to (`socket:[N]`, a path), or None once closed."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None


def assert_no_new_fds(before):
    """Nothing the client received is left open. A subset, not equality: the
    fake daemon serves from threads of this same process, and one of them may
    close the socket of an earlier test's connection meanwhile (seen in CI:
    the fd sets differed by a descriptor the test never touched). New sockets
    are not counted either: the fixture's client connects before `before` is
    taken, but the fake daemon's thread may accept that connection only after
    (seen in CI: one new descriptor, with nothing received left open). What
    the client receives are files, never sockets."""
    # A descriptor closed since open_fds listed it (no target) is not left open.
    left = {fd for fd in open_fds() - before
            if (target := _target(fd)) is not None and not target.startswith("socket:")}
    assert not left, f"descriptors left open: {sorted(left)}"


def test_hello_limits_and_env_default_path(daemon, monkeypatch):
    monkeypatch.setenv("WEIGHTCACHE_SOCKET", daemon.path)
    with Client(timeout=5) as c:
        assert c.path == daemon.path
        assert (c.server, c.max_read_length, c.max_in_flight, c.block_size) == ("fake 0", 1000, 4, 4096)
    assert c.closed


def test_the_daemons_own_socket_variable_is_the_fallback(daemon, monkeypatch):
    # WEIGHTCACHE_SOCKET_PATH is what `weightcache serve` and the CLI read:
    # a node that sets only it must not leave Python clients on the default.
    monkeypatch.delenv("WEIGHTCACHE_SOCKET", raising=False)
    monkeypatch.setenv("WEIGHTCACHE_SOCKET_PATH", daemon.path)
    with Client(timeout=5) as c:
        assert c.path == daemon.path
    monkeypatch.setenv("WEIGHTCACHE_SOCKET", daemon.path)
    monkeypatch.setenv("WEIGHTCACHE_SOCKET_PATH", "/nonexistent/other.sock")
    with Client(timeout=5) as c:  # the client's own variable wins
        assert c.path == daemon.path


def test_split_reads_are_pipelined_and_reassembled_out_of_order(client, daemon):
    data = FILES["weights.bin"]
    assert client.read(MODEL, "weights.bin", 0, len(data)) == data
    assert daemon.max_outstanding == client.max_in_flight == 4
    assert daemon.read_order[:4] == [3000, 2000, 1000, 0]  # replies really came back reversed
    assert client.read(MODEL, "weights.bin", 123, 5000) == data[123:5123]
    assert client.read(MODEL, "weights.bin", 10, 7) == data[10:17]


def test_reads_past_end_of_file_stop_at_the_end(client):
    data, even = FILES["weights.bin"], FILES["even.bin"]
    assert client.read(MODEL, "weights.bin", 10000, 5000) == data[10000:]
    assert client.read(MODEL, "weights.bin", 0, 20000) == data
    assert client.read(MODEL, "even.bin", 0, 9000) == even  # piece at 4000 gets invalid-argument
    assert client.read_file(MODEL, "weights.bin") == data
    assert client.read_file(MODEL, "dir/small.txt") == b"hello"
    buf = bytearray(6000)
    assert client.read_into(MODEL, "even.bin", 500, buf) == 3500
    assert buf[:3500] == even[500:]


def test_read_errors(client):
    with pytest.raises(WeightCacheError) as e:
        client.read(MODEL, "weights.bin", 20000, 3000)
    assert (e.value.code, e.value.name) == (5, "invalid-argument")
    with pytest.raises(WeightCacheError) as e:
        client.read("other@main", "weights.bin", 0, 5000)  # every piece fails; all are drained
    assert (e.value.code, e.value.name) == (6, "not-found")
    assert client.read(MODEL, "dir/small.txt", 0, 5) == b"hello"  # connection still in step


def test_open_passes_a_readable_descriptor(client):
    before = open_fds()
    fd, info = client.open(MODEL, "weights.bin")
    try:
        assert info == file_info("weights.bin")
        assert os.fstat(fd).st_size == len(FILES["weights.bin"])
        assert os.pread(fd, 20000, 0) == FILES["weights.bin"]
    finally:
        os.close(fd)
    assert_no_new_fds(before)


def test_unexpected_descriptor_is_closed(client):
    before = open_fds()
    assert client.pin(MODEL) == "pinned"
    assert_no_new_fds(before)


def test_preload_reports_progress(client):
    seen = []
    info = client.preload(MODEL, tier=TIER_RAM, pin=True, progress=lambda d, t: seen.append((d, t)))
    total = sum(map(len, FILES.values()))
    assert seen == [(0, total), (total // 2, total), (total, total)]
    assert info.pinned and {f.path for f in info.files} == set(FILES)
    assert client.preload(MODEL).model == MODEL  # without a callback


def test_other_requests(client):
    assert client.resolve(MODEL) == model_info()
    assert client.stat(MODEL, "dir/small.txt").size == 5
    assert client.list() == [ModelSummary(MODEL, 3, 14012, 0, 0, False)]
    assert client.stats()["ram"] == {"hits": 1}
    assert client.unpin(MODEL) == "" and client.evict(MODEL, TIER_RAM) == ""


def test_errors_map_to_code_and_name(client):
    with pytest.raises(WeightCacheError) as e:
        client.resolve("missing@main")
    assert (e.value.code, e.value.name, e.value.message) == (6, "not-found", "no such model")
    with pytest.raises(WeightCacheError) as e:
        client.resolve("weird")
    assert (e.value.code, e.value.name) == (99, "internal")
    assert not client.closed and client.resolve(MODEL).model == MODEL


def test_close_mid_reply_raises_instead_of_hanging(client):
    with pytest.raises(ConnectionError):
        client.resolve("boom")
    assert client.closed
    with pytest.raises(ConnectionError):
        client.resolve(MODEL)


def test_silent_daemon_times_out(daemon):
    with Client(daemon.path, timeout=0.3) as c:
        with pytest.raises((TimeoutError, socket.timeout)):
            c.resolve("silent")
        assert c.closed


def test_bad_header_is_a_protocol_error(client):
    with pytest.raises(ProtocolError):
        client.resolve("garbage")
    assert client.closed


def _assert_connect_is_refused_busy(d):
    """Connecting to `d`, a FakeDaemon(reject=True), raises its `busy`; closes d."""
    try:
        with pytest.raises(WeightCacheError) as e:
            Client(d.path, timeout=5)
        assert e.value.name == "busy"
    finally:
        d.close()


def test_connection_level_error_on_connect():
    _assert_connect_is_refused_busy(FakeDaemon(reject=True))


def test_tensors_via_open_and_read():
    np = pytest.importorskip("numpy")
    st = pytest.importorskip("safetensors.numpy")
    from weightcache.tensors import load_tensors, open_safetensors
    expected = {"a": np.arange(3000, dtype=np.float32).reshape(30, 100), "b": np.ones((7,), dtype=np.float16)}
    d = FakeDaemon(files={"m.safetensors": st.save(expected)})
    try:
        with Client(d.path, timeout=5) as c:
            for via in ("open", "read"):
                got = load_tensors(c, MODEL, "m.safetensors", via=via)
                assert set(got) == set(expected)
                for name, tensor in expected.items():
                    assert got[name].dtype == tensor.dtype and np.array_equal(got[name], tensor)
            before = open_fds()
            with open_safetensors(c, MODEL, "m.safetensors") as handle:
                assert sorted(handle.keys()) == ["a", "b"]
            assert_no_new_fds(before)
            with pytest.raises(ValueError):
                load_tensors(c, MODEL, "m.safetensors", via="mmap")
    finally:
        d.close()


def test_read_into_receives_payloads_in_place(client):
    data = FILES["weights.bin"]
    frames = []
    next_frame = client._reader.next_frame
    def spy(into=None):
        frame = next_frame(into)
        frames.append(frame)
        return frame
    client._reader.next_frame = spy
    buf = bytearray(len(data) + 500)
    assert client.read_into(MODEL, "weights.bin", 0, memoryview(buf)[100:]) == len(data)
    assert buf[100:100 + len(data)] == data and buf[:100] == bytes(100)
    assert len(frames) == 11 and all(f.direct and isinstance(f.payload, memoryview) for f in frames)
    assert [f.request for f in frames] != sorted(f.request for f in frames)  # out of order, still in place
    with pytest.raises(TypeError):
        client.read_into(MODEL, "weights.bin", 0, b"read-only")
    assert client.read(MODEL, "weights.bin", 5, 2500) == data[5:2505]  # not in place; still in step


def test_tensors_via_read_match_safetensors_load():
    np = pytest.importorskip("numpy")
    st = pytest.importorskip("safetensors.numpy")
    from test_tensors import MALFORMED, assert_same, sample
    from weightcache.tensors import SafetensorsFormatError, load_tensors
    data = st.save(sample(), metadata={"format": "pt"})
    d = FakeDaemon(files={"m.safetensors": data, "bad.safetensors": MALFORMED["overlap"],
                          "empty.safetensors": b""})
    try:
        with Client(d.path, timeout=5) as c:
            got = load_tensors(c, MODEL, "m.safetensors", via="read")
            assert_same(got, st.load(data))
            assert all(t.flags.writeable for t in got.values())
            assert_same(load_tensors(c, MODEL, "m.safetensors", via="open"), got)
            for bad in ("bad.safetensors", "empty.safetensors"):
                with pytest.raises(SafetensorsFormatError):
                    load_tensors(c, MODEL, bad, via="read")
            assert not c.closed
    finally:
        d.close()


def test_pieces_are_cut_on_block_boundaries():
    from weightcache.client import _pieces
    MiB = 1 << 20
    # An 8 MiB limit over 4 MiB blocks: a tensor 10 KiB into the file is read as
    # the rest of the first 8 MiB, then whole pairs of blocks, then the tail.
    got = list(_pieces(10240, 20 * MiB, 8 * MiB, 4 * MiB))
    assert got == [(0, 8 * MiB - 10240), (8 * MiB - 10240, 8 * MiB), (16 * MiB - 10240, 4 * MiB + 10240)]
    for offset, length, step, block in [(10240, 20 * MiB, 8 * MiB, 4 * MiB), (0, 9 * MiB, 8 * MiB, 4 * MiB),
                                        (123, 5000, 1000, 4096), (5, 3, 8, 2), (0, 0, 8, 4), (7, 100, 10, 3)]:
        pieces = list(_pieces(offset, length, step, block))
        # they tile the range exactly, none longer than the limit ...
        assert [p for p, _ in pieces] == [sum(n for _, n in pieces[:i]) for i in range(len(pieces))]
        assert sum(n for _, n in pieces) == length and all(0 < n <= step for _, n in pieces)
        # ... and no two of them touch the same block (when a step holds one)
        if block <= step:
            blocks = [set(range((offset + p) // block, (offset + p + n - 1) // block + 1)) for p, n in pieces]
            assert all(not (a & b) for i, a in enumerate(blocks) for b in blocks[i + 1:]), pieces
    # The fake daemon's step (1000) holds no 4096-byte block: cut at multiples of 1000.
    assert list(_pieces(123, 2500, 1000, 4096)) == [(0, 877), (877, 1000), (1877, 623)]


def test_unaligned_reads_go_out_on_block_boundaries(client, daemon):
    data = FILES["weights.bin"]
    daemon.read_order.clear()
    assert client.read(MODEL, "weights.bin", 123, 2500) == data[123:2623]
    assert sorted(daemon.read_order) == [123, 1000, 2000]


def test_a_refusal_that_beats_the_hello_is_still_reported(monkeypatch):
    # The daemon refuses (busy) and closes before the client's hello goes out:
    # the hello's send fails with a broken pipe, and the refusal waiting in
    # the socket is what the caller must see (this race failed CI once).
    d = FakeDaemon(reject=True)
    real = wire.encode_hello

    def late(*args, **kwargs):
        time.sleep(0.3)
        return real(*args, **kwargs)
    monkeypatch.setattr(wire, "encode_hello", late)
    _assert_connect_is_refused_busy(d)
