"""The codec alone: round trips, the spec's example bytes, malformed input."""
import struct

import pytest

from weightcache import wire
from weightcache.wire import FileInfo, HelloOk, ModelInfo, ModelSummary, Progress, ProtocolError, WeightCacheError

FILE = FileInfo("tokenizer/vocab.txt", 8893, "0123456789abcdef0123456789abcdef", wire.NVME_STAGED, 4096)
MODEL = ModelInfo("tiny@main", "/var/lib/weightcache/snap/tiny", True,
                  [FILE, FileInfo("model.safetensors", 1 << 40, "", wire.NVME_ABSENT, 0)])
SUMMARY = ModelSummary("org/näme@v1", 2, 1 << 33, 5, 0, False)


def split(frame: bytes):
    """(type, request, payload) of a whole frame, checking its length field."""
    return wire.unpack_frame(frame)


def test_hello_frame_matches_protocol_example():
    expected = bytes.fromhex("1b000000 0100 0000 01000000 0b00") + b"weightcache" + bytes.fromhex("0100 0100 0000")
    assert wire.encode_hello(1, client="") == expected


def test_read_frame_matches_protocol_example():
    frame = wire.encode_request(wire.READ, 2, "tiny@main", "model.safetensors", 0, 16)
    assert frame[4:12] == bytes.fromhex("0500 0000 02000000")
    assert frame[12:] == (bytes.fromhex("0900") + b"tiny@main" + bytes.fromhex("1100") + b"model.safetensors"
                          + bytes(8) + bytes.fromhex("10000000"))
    assert struct.unpack_from("<I", frame)[0] == len(frame) - 4


def test_data_reply_matches_protocol_example():
    frame = bytes.fromhex("18000000 8500 0000 02000000") + bytes(range(16))
    type_, request, payload = split(frame)
    assert (type_, request) == (wire.DATA, 2)
    assert wire.decode_reply(type_, payload) == bytes(range(16))


@pytest.mark.parametrize("type_,fields", [
    (wire.HELLO, ("weightcache", 1, 1, "python")),
    (wire.RESOLVE, ("tiny@main",)),
    (wire.STAT, ("tiny", "a/b.bin")),
    (wire.LIST, ()),
    (wire.READ, ("tiny@main", "x", (1 << 64) - 1, (1 << 32) - 1)),
    (wire.OPEN, ("tiny", "model.safetensors")),
    (wire.PRELOAD, ("tiny", wire.TIER_RAM, True)),
    (wire.PIN, ("tiny",)),
    (wire.UNPIN, ("tiny",)),
    (wire.EVICT, ("tiny", wire.TIER_NVME)),
    (wire.STATS, ()),
])
def test_request_round_trip(type_, fields):
    t, request, payload = split(wire.encode_request(type_, 0xFFFFFFFF, *fields))
    assert (t, request) == (type_, 0xFFFFFFFF)
    assert wire.decode_request(t, payload) == fields


@pytest.mark.parametrize("type_,value", [
    (wire.OK, "done"),
    (wire.OK, ""),
    (wire.HELLO_OK, HelloOk(1, "weightcache 0.1.0", 65536, 8 << 20, 32, 1 << 20)),
    (wire.MODEL, MODEL),
    (wire.MODEL, ModelInfo("empty@main", "", False, [])),
    (wire.FILE, FILE),
    (wire.OPENED, FILE),
    (wire.MODELS, [SUMMARY, ModelSummary("tiny@main", 5, 9, 9, 9, True)]),
    (wire.MODELS, []),
    (wire.DATA, b"\x00\xffabc"),
    (wire.DATA, b""),
    (wire.PROGRESS, Progress(10, 1 << 50)),
    (wire.STATS_REPLY, '{"ram": {}, "nvme": {}}'),
])
def test_reply_round_trip(type_, value):
    t, request, payload = split(wire.encode_reply(type_, 7, value))
    assert (t, request) == (type_, 7)
    assert wire.decode_reply(t, payload) == value


def test_error_reply_decodes_to_exception():
    _, _, payload = split(wire.encode_reply(wire.ERROR, 3, WeightCacheError(6, "no model x")))
    err = wire.decode_reply(wire.ERROR, payload)
    assert isinstance(err, WeightCacheError)
    assert (err.code, err.name, err.message) == (6, "not-found", "no model x")


def test_unknown_error_code_is_internal_but_keeps_number():
    err = WeightCacheError(4242, "new")
    assert (err.code, err.name) == (4242, "internal")


# ------------------------------------------------------------ malformed input

def test_header_rejects_short_length_and_reserved():
    with pytest.raises(ProtocolError):
        wire.unpack_header(struct.pack("<IHHI", 7, wire.OK, 0, 1))
    with pytest.raises(ProtocolError):
        wire.unpack_header(struct.pack("<IHHI", 8, wire.OK, 1, 1))
    with pytest.raises(ProtocolError):
        wire.unpack_header(b"\x08\x00\x00")
    assert wire.unpack_header(struct.pack("<IHHI", 8, wire.LIST, 0, 9)) == (0, wire.LIST, 9)


def test_frame_with_wrong_total_length():
    frame = wire.encode_reply(wire.OK, 1, "hi")
    with pytest.raises(ProtocolError):
        split(frame[:-1])
    with pytest.raises(ProtocolError):
        split(frame + b"x")


@pytest.mark.parametrize("type_,value", [
    (wire.MODEL, MODEL), (wire.FILE, FILE), (wire.MODELS, [SUMMARY]), (wire.PROGRESS, Progress(1, 2)),
    (wire.HELLO_OK, HelloOk(1, "s", 1, 2, 3, 4)), (wire.OK, "message"),
])
def test_every_truncation_and_every_extra_byte_is_rejected(type_, value):
    _, _, payload = split(wire.encode_reply(type_, 1, value))
    for cut in range(len(payload)):
        with pytest.raises(ProtocolError):
            wire.decode_reply(type_, payload[:cut])
    with pytest.raises(ProtocolError, match="left over"):
        wire.decode_reply(type_, payload + b"\x00")


def test_bad_utf8_is_rejected():
    with pytest.raises(ProtocolError, match="UTF-8"):
        wire.decode_reply(wire.OK, b"\x02\x00\xc3\x28")
    with pytest.raises(ProtocolError):
        wire.decode_request(wire.RESOLVE, b"\x01\x00\xff")


def test_bool_other_than_0_or_1_is_rejected():
    payload = wire.model_info_bytes(ModelInfo("m", "", True, []))
    pos = len(wire.string("m") + wire.string(""))
    assert payload[pos] == 1
    bad = payload[:pos] + b"\x02" + payload[pos + 1:]
    with pytest.raises(ProtocolError, match="bool"):
        wire.decode_reply(wire.MODEL, bad)
    with pytest.raises(ProtocolError, match="bool"):
        wire.decode_request(wire.PRELOAD, wire.string("m") + b"\x01\xff")


def test_string_length_past_end_and_huge_list_count():
    with pytest.raises(ProtocolError):
        wire.decode_reply(wire.OK, b"\x05\x00abc")
    with pytest.raises(ProtocolError, match="list"):
        wire.decode_reply(wire.MODELS, b"\xff\xff\xff\xff")


def test_unknown_types_are_rejected():
    with pytest.raises(ProtocolError):
        wire.decode_reply(0x99, b"")
    with pytest.raises(ProtocolError):
        wire.decode_request(0x7F, b"")


def test_encoder_rejects_out_of_range_values():
    with pytest.raises(ValueError):
        wire.encode_request(wire.READ, 1, "m", "p", -1, 1)
    with pytest.raises(ValueError):
        wire.encode_request(wire.READ, 1, "m", "p", 0, 1 << 32)
    with pytest.raises(ValueError):
        wire.encode_request(wire.RESOLVE, 1, "x" * 70000)
    with pytest.raises(ValueError):
        wire.encode_request(wire.STAT, 1, "only-model")
