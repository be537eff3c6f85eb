"""Pure codec for the weightcache socket protocol, version 1 (docs/protocol.md).

No I/O happens here: functions turn requests into frame bytes and frame
payloads into values.  Every decoder is strict: a payload that does not parse
exactly (missing bytes, bytes left over, invalid UTF-8, a bool other than 0/1)
raises :class:`ProtocolError`.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Callable, List, Tuple, TypeVar, Union

PROTOCOL_VERSION = 1
MAGIC = "weightcache"

HEADER = struct.Struct("<IHHI")  # length, type, reserved, request id
HEADER_SIZE = HEADER.size  # 12
MAX_FRAME_LENGTH = 0xFFFFFFFF

# Request types.
HELLO, RESOLVE, STAT, LIST, READ, OPEN = 0x01, 0x02, 0x03, 0x04, 0x05, 0x06
PRELOAD, PIN, UNPIN, EVICT, STATS = 0x07, 0x08, 0x09, 0x0A, 0x0B
# Reply types.
OK, HELLO_OK, MODEL, FILE, MODELS, DATA = 0x80, 0x81, 0x82, 0x83, 0x84, 0x85
OPENED, PROGRESS, STATS_REPLY, ERROR = 0x86, 0x87, 0x8B, 0xFF

TIER_NVME = 1  # preload: pull into staging; evict: drop from nvme and ram
TIER_RAM = 2  # preload: staging plus the RAM cache; evict: drop from ram only

NVME_ABSENT, NVME_PARTIAL, NVME_STAGED = 0, 1, 2

ERROR_NAMES = {
    1: "malformed", 2: "unsupported-version", 3: "hello-required",
    4: "unknown-operation", 5: "invalid-argument", 6: "not-found",
    7: "permission-denied", 8: "busy", 9: "unavailable", 10: "integrity",
    11: "no-space", 12: "shutting-down", 13: "internal",
}
# Codes after which the daemon closes the connection.
FATAL_CODES = frozenset({1, 2, 3})


class ProtocolError(ValueError):
    """Bytes that do not follow the protocol (from either side)."""


class WeightCacheError(Exception):
    """An `error` reply from the daemon.

    `code` is the number on the wire; `name` its name from the protocol's
    table, "internal" for codes this client does not know.
    """

    def __init__(self, code: int, message: str = "") -> None:
        self.code = code
        self.name = ERROR_NAMES.get(code, "internal")
        self.message = message
        super().__init__(f"{self.name} ({code}): {message}" if message else f"{self.name} ({code})")


@dataclass(frozen=True)
class FileInfo:
    path: str
    size: int
    digest: str  # xxh3-128 as 32 hex digits, "" when not yet known
    nvme: int  # NVME_ABSENT, NVME_PARTIAL or NVME_STAGED
    ram_bytes: int


@dataclass(frozen=True)
class ModelInfo:
    model: str  # NAME@REVISION
    snapshot: str  # staged folder, "" until staged
    pinned: bool
    files: List[FileInfo]


@dataclass(frozen=True)
class ModelSummary:
    model: str
    files: int
    bytes: int
    nvme_bytes: int
    ram_bytes: int
    pinned: bool


@dataclass(frozen=True)
class HelloOk:
    version: int
    server: str
    max_request_frame: int
    max_read_length: int
    max_in_flight: int
    block_size: int


@dataclass(frozen=True)
class Progress:
    done: int
    total: int


Reply = Union[str, bytes, HelloOk, ModelInfo, FileInfo, List[ModelSummary], Progress, WeightCacheError]

# ---------------------------------------------------------------- framing


def pack_frame(type_: int, request: int, payload: bytes = b"") -> bytes:
    """One whole frame: header then payload."""
    if len(payload) > MAX_FRAME_LENGTH - 8:
        raise ValueError("payload too long for one frame")
    return HEADER.pack(8 + len(payload), type_, 0, request) + payload


def unpack_header(header: bytes) -> Tuple[int, int, int]:
    """(payload length, type, request id) of a 12-byte header; ProtocolError
    when `length` is below 8 or `reserved` is not 0."""
    if len(header) < HEADER_SIZE:
        raise ProtocolError(f"frame header needs {HEADER_SIZE} bytes, got {len(header)}")
    length, type_, reserved, request = HEADER.unpack_from(header)
    if length < 8:
        raise ProtocolError(f"frame length {length} is below 8")
    if reserved != 0:
        raise ProtocolError(f"frame reserved field is {reserved}, not 0")
    return length - 8, type_, request


def unpack_frame(frame: bytes) -> Tuple[int, int, bytes]:
    """(type, request id, payload) of exactly one whole frame."""
    size, type_, request = unpack_header(frame)
    if len(frame) != HEADER_SIZE + size:
        raise ProtocolError(f"frame announces {HEADER_SIZE + size} bytes, got {len(frame)}")
    return type_, request, bytes(frame[HEADER_SIZE:])

# ---------------------------------------------------------------- primitives


def u8(v: int) -> bytes:
    return struct.pack("<B", v)


def u16(v: int) -> bytes:
    return struct.pack("<H", v)


def u32(v: int) -> bytes:
    return struct.pack("<I", v)


def u64(v: int) -> bytes:
    return struct.pack("<Q", v)


def boolean(v: bool) -> bytes:
    return b"\x01" if v else b"\x00"


def string(s: str) -> bytes:
    data = s.encode("utf-8")
    if len(data) > 0xFFFF:
        raise ValueError(f"string of {len(data)} bytes does not fit a u16 length")
    return u16(len(data)) + data


T = TypeVar("T")


class Reader:
    """Reads primitives off one payload; every read is bounds-checked."""

    def __init__(self, payload: bytes) -> None:
        self._data = memoryview(payload)
        self._pos = 0

    def _take(self, n: int) -> memoryview:
        if self._pos + n > len(self._data):
            raise ProtocolError(f"payload truncated: need {n} bytes at {self._pos}, have {len(self._data) - self._pos}")
        view = self._data[self._pos:self._pos + n]
        self._pos += n
        return view

    def _int(self, fmt: str, n: int) -> int:
        return struct.unpack(fmt, self._take(n))[0]

    def u8(self) -> int:
        return self._int("<B", 1)

    def u16(self) -> int:
        return self._int("<H", 2)

    def u32(self) -> int:
        return self._int("<I", 4)

    def u64(self) -> int:
        return self._int("<Q", 8)

    def bool(self) -> bool:
        v = self.u8()
        if v > 1:
            raise ProtocolError(f"bool is {v}, not 0 or 1")
        return v == 1

    def string(self) -> str:
        raw = self._take(self.u16())
        try:
            return str(raw, "utf-8")
        except UnicodeDecodeError as e:
            raise ProtocolError(f"invalid UTF-8 in string: {e}") from None

    def list(self, item: Callable[["Reader"], T]) -> List[T]:
        count = self.u32()
        if count > len(self._data) - self._pos:  # every item is at least 1 byte
            raise ProtocolError(f"list of {count} items cannot fit the payload")
        return [item(self) for _ in range(count)]

    def rest(self) -> bytes:
        return bytes(self._take(len(self._data) - self._pos))

    def end(self) -> None:
        """ProtocolError unless the whole payload was read."""
        if self._pos != len(self._data):
            raise ProtocolError(f"{len(self._data) - self._pos} bytes left over in payload")

# ---------------------------------------------------------------- requests

# The fields of each request payload, in order (docs/protocol.md, "Requests").
REQUEST_FIELDS = {
    HELLO: ("string", "u16", "u16", "string"),  # magic, minVersion, maxVersion, client
    RESOLVE: ("string",),  # model
    STAT: ("string", "string"),  # model, path
    LIST: (),
    READ: ("string", "string", "u64", "u32"),  # model, path, offset, length
    OPEN: ("string", "string"),  # model, path
    PRELOAD: ("string", "u8", "bool"),  # model, tier, pin
    PIN: ("string",),  # model
    UNPIN: ("string",),  # model
    EVICT: ("string", "u8"),  # model, tier
    STATS: (),
}
_WRITERS = {"u8": u8, "u16": u16, "u32": u32, "u64": u64, "bool": boolean, "string": string}


def encode_request(type_: int, request: int, *fields: object) -> bytes:
    """The frame of one request; `fields` as listed in REQUEST_FIELDS.
    ValueError for a wrong field count or a value out of its type's range."""
    kinds = REQUEST_FIELDS[type_]
    if len(fields) != len(kinds):
        raise ValueError(f"request 0x{type_:02x} takes {len(kinds)} fields, got {len(fields)}")
    try:
        payload = b"".join(_WRITERS[k](v) for k, v in zip(kinds, fields))
    except struct.error as e:
        raise ValueError(f"request 0x{type_:02x}: {e}") from None
    return pack_frame(type_, request, payload)


def encode_hello(request: int, client: str = "python", min_version: int = 1, max_version: int = 1) -> bytes:
    return encode_request(HELLO, request, MAGIC, min_version, max_version, client)


def decode_request(type_: int, payload: bytes) -> tuple:
    """The fields of a request payload (the daemon's side; used by tests)."""
    kinds = REQUEST_FIELDS.get(type_)
    if kinds is None:
        raise ProtocolError(f"unknown request type 0x{type_:02x}")
    r = Reader(payload)
    fields = tuple(getattr(r, k)() for k in kinds)
    r.end()
    return fields

# ---------------------------------------------------------------- replies


def read_file_info(r: Reader) -> FileInfo:
    return FileInfo(r.string(), r.u64(), r.string(), r.u8(), r.u64())


def read_model_info(r: Reader) -> ModelInfo:
    return ModelInfo(r.string(), r.string(), r.bool(), r.list(read_file_info))


def read_model_summary(r: Reader) -> ModelSummary:
    return ModelSummary(r.string(), r.u32(), r.u64(), r.u64(), r.u64(), r.bool())


def read_hello_ok(r: Reader) -> HelloOk:
    return HelloOk(r.u16(), r.string(), r.u32(), r.u32(), r.u16(), r.u32())


_REPLY_DECODERS = {
    OK: Reader.string,
    HELLO_OK: read_hello_ok,
    MODEL: read_model_info,
    FILE: read_file_info,
    MODELS: lambda r: r.list(read_model_summary),
    OPENED: read_file_info,
    PROGRESS: lambda r: Progress(r.u64(), r.u64()),
    STATS_REPLY: Reader.string,
    ERROR: lambda r: WeightCacheError(r.u16(), r.string()),
}


def decode_reply(type_: int, payload: bytes) -> Reply:
    """The value a reply payload carries: str (ok message, stats JSON), the
    payload itself (data; bytes or bytearray as given), HelloOk, ModelInfo, FileInfo (file, opened), list of ModelSummary,
    Progress, or a WeightCacheError (error; returned, not raised)."""
    if type_ == DATA:
        return payload if isinstance(payload, (bytes, bytearray)) else bytes(payload)
    decoder = _REPLY_DECODERS.get(type_)
    if decoder is None:
        raise ProtocolError(f"unknown reply type 0x{type_:02x}")
    r = Reader(payload)
    value = decoder(r)
    r.end()
    return value


def file_info_bytes(f: FileInfo) -> bytes:
    return string(f.path) + u64(f.size) + string(f.digest) + u8(f.nvme) + u64(f.ram_bytes)


def model_info_bytes(m: ModelInfo) -> bytes:
    return string(m.model) + string(m.snapshot) + boolean(m.pinned) + u32(len(m.files)) + b"".join(map(file_info_bytes, m.files))


def model_summary_bytes(s: ModelSummary) -> bytes:
    return string(s.model) + u32(s.files) + u64(s.bytes) + u64(s.nvme_bytes) + u64(s.ram_bytes) + boolean(s.pinned)


def hello_ok_bytes(h: HelloOk) -> bytes:
    return (u16(h.version) + string(h.server) + u32(h.max_request_frame) + u32(h.max_read_length)
            + u16(h.max_in_flight) + u32(h.block_size))


_REPLY_ENCODERS = {
    OK: string,
    HELLO_OK: hello_ok_bytes,
    MODEL: model_info_bytes,
    FILE: file_info_bytes,
    MODELS: lambda items: u32(len(items)) + b"".join(map(model_summary_bytes, items)),
    DATA: bytes,
    OPENED: file_info_bytes,
    PROGRESS: lambda p: u64(p.done) + u64(p.total),
    STATS_REPLY: string,
    ERROR: lambda e: u16(e.code) + string(e.message),
}


def encode_reply(type_: int, request: int, value: Reply) -> bytes:
    """The frame of one reply carrying `value` (the inverse of decode_reply;
    the daemon's side, used by tests)."""
    return pack_frame(type_, request, _REPLY_ENCODERS[type_](value))
