"""weightcache.tensors' own safetensors parser against safetensors.numpy.load."""
import json
import random
import struct

import pytest

np = pytest.importorskip("numpy")
st = pytest.importorskip("safetensors.numpy")
from safetensors import SafetensorError  # noqa: E402

from weightcache.tensors import SafetensorsFormatError, UnsupportedDtype, parse_header, tensors_from_buffer  # noqa: E402


def sample():
    """Every dtype safetensors.numpy maps, odd shapes, a 0-d and empty tensors."""
    rng = np.random.default_rng(7)
    return {
        "f64": rng.standard_normal((3, 5)),
        "f32": rng.standard_normal((2, 3, 4), dtype=np.float32),
        "f16": rng.standard_normal(7).astype(np.float16),
        "bf16_bits": (rng.standard_normal((4, 6), dtype=np.float32).view(np.uint32) >> 16).astype(np.uint16),
        "i64": rng.integers(-2**62, 2**62, (4,), dtype=np.int64),
        "u64": rng.integers(0, 2**63, (2, 2), dtype=np.uint64),
        "i32": rng.integers(-2**31, 2**31, (9,), dtype=np.int32),
        "u32": rng.integers(0, 2**32, (1, 3), dtype=np.uint32),
        "i16": rng.integers(-2**15, 2**15, (5,), dtype=np.int16),
        "i8": rng.integers(-128, 128, (3, 1, 2), dtype=np.int8),
        "u8": rng.integers(0, 256, (11,), dtype=np.uint8),
        "bool": rng.integers(0, 2, (6,)).astype(bool),
        "c64": (rng.standard_normal(3) + 1j * rng.standard_normal(3)).astype(np.complex64),
        "scalar": np.array(3.5, dtype=np.float32),
        "empty": np.zeros((0,), dtype=np.float32),
        "empty_2d": np.zeros((4, 0), dtype=np.int16),
    }


def assert_same(got, expected):
    assert set(got) == set(expected)
    for name, tensor in expected.items():
        assert got[name].dtype == tensor.dtype, name
        assert got[name].shape == tensor.shape, name
        assert np.array_equal(got[name], tensor), name


def file_with(header, data=b""):
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


def test_matches_safetensors_load_and_views_one_writable_buffer():
    data = st.save(sample(), metadata={"format": "pt"})
    buffer = bytearray(data)
    got = tensors_from_buffer(buffer)
    assert_same(got, st.load(data))
    assert_same(got, sample())
    for tensor in got.values():
        assert tensor.flags.writeable and not tensor.flags.owndata
    got["u8"][0] = got["u8"][0] ^ 0xFF  # a view: writes land in the buffer
    assert tensors_from_buffer(buffer)["u8"][0] == got["u8"][0]
    assert not tensors_from_buffer(data)["f32"].flags.writeable  # bytes: read-only views
    assert tensors_from_buffer(st.save({})) == st.load(st.save({})) == {}


def test_bf16_raises_like_safetensors():
    data = file_with({"x": {"dtype": "BF16", "shape": [2], "data_offsets": [0, 4]}}, b"\0" * 4)
    with pytest.raises(KeyError):
        st.load(data)
    with pytest.raises(UnsupportedDtype) as e:
        tensors_from_buffer(data)
    assert isinstance(e.value, KeyError) and isinstance(e.value, ValueError)
    assert "BF16" in str(e.value)


U8 = {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]}
MALFORMED = {
    "too short": b"\x05\0\0",
    "header length past the end": struct.pack("<Q", 100) + b"{}",
    "header length over 100 MB": struct.pack("<Q", 100_000_001) + b"{}",
    "header length 2^64-1": b"\xff" * 8 + b"{}",
    "not utf-8": struct.pack("<Q", 3) + b"{\xff}",
    "not json": file_with(b"{nope"),
    "nan": file_with(b'{"__metadata__": {"a": NaN}}'),
    "not an object": file_with([]),
    "metadata not strings": file_with({"__metadata__": {"a": 1}}),
    "metadata a string": file_with({"__metadata__": "x"}),
    "tensor not an object": file_with({"a": [1]}),
    "missing shape": file_with({"a": {"dtype": "U8", "data_offsets": [0, 2]}}, b"xy"),
    "unknown dtype": file_with({"a": dict(U8, dtype="u8")}, b"xy"),
    "float in shape": file_with({"a": dict(U8, shape=[2.0])}, b"xy"),
    "bool in shape": file_with({"a": dict(U8, shape=[True, 2])}, b"xy"),
    "negative shape": file_with({"a": dict(U8, shape=[-2])}, b"xy"),
    "three offsets": file_with({"a": dict(U8, data_offsets=[0, 1, 2])}, b"xy"),
    "reversed offsets": file_with({"a": dict(U8, data_offsets=[2, 0])}, b"xy"),
    "gap before": file_with({"a": dict(U8, data_offsets=[1, 3])}, b"xyz"),
    "size mismatch": file_with({"a": dict(U8, shape=[3])}, b"xy"),
    "past the end": file_with({"a": U8}, b"x"),
    "trailing bytes": file_with({"a": U8}, b"xyz"),
    "overlap": file_with({"a": U8, "b": dict(U8, data_offsets=[1, 3])}, b"xyz"),
    "duplicate offsets": file_with({"a": U8, "b": U8}, b"xy"),
    "gap between": file_with({"a": U8, "b": dict(U8, data_offsets=[3, 5])}, b"xyzvw"),
    "shape overflow": file_with({"a": dict(U8, shape=[2**32, 2**32])}, b"xy"),
    "half bytes": file_with({"a": {"dtype": "F4", "shape": [3], "data_offsets": [0, 2]}}, b"xy"),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_files_raise_value_error_where_safetensors_raises(name):
    data = MALFORMED[name]
    with pytest.raises(SafetensorError):
        st.load(data)
    with pytest.raises(SafetensorsFormatError) as e:
        tensors_from_buffer(bytearray(data))
    assert isinstance(e.value, ValueError) and str(e.value)


def test_accepts_what_safetensors_accepts():
    for data in (file_with({"__metadata__": None, "a": dict(U8, extra=1)}, b"xy"),
                 file_with(b'  {"a": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]}}  ', b"xy"),
                 file_with({"b": dict(U8, data_offsets=[2, 4]), "a": U8}, b"xyzw"),  # header order != file order
                 file_with({"a": U8, "a ": {"dtype": "I8", "shape": [], "data_offsets": [2, 3]}}, b"xyz")):
        assert_same(tensors_from_buffer(bytearray(data)), st.load(data))


def test_random_header_damage_is_judged_like_safetensors():
    """Flip bytes of a real header: both accept (with equal tensors) or both reject."""
    data = st.save({k: v for k, v in sample().items()}, metadata={"format": "pt"})
    length = struct.unpack_from("<Q", data)[0]
    rng = random.Random(1)
    verdicts = set()
    for _ in range(400):
        damaged = bytearray(data)
        for _ in range(rng.randint(1, 3)):
            damaged[rng.randrange(8 + length)] = rng.choice(b'0123456789[]{},:" \xffabcFIUx') if rng.random() < .8 else rng.randrange(256)
        damaged = bytes(damaged)
        try:
            expected = st.load(damaged)
        except (SafetensorError, KeyError) as e:
            verdicts.add(type(e).__name__)
            with pytest.raises(KeyError if isinstance(e, KeyError) else SafetensorsFormatError):
                tensors_from_buffer(bytearray(damaged))
        else:
            verdicts.add("ok")
            assert_same(tensors_from_buffer(bytearray(damaged)), expected)
    assert "ok" in verdicts and "SafetensorError" in verdicts


def test_parse_header_reports_file_order():
    data = st.save({"b": np.zeros(2, np.uint8), "a": np.zeros(3, np.float32)})
    base, entries = parse_header(data)
    assert base == 8 + struct.unpack_from("<Q", data)[0]
    assert [(e[0], e[4], e[5]) for e in entries] in ([("a", 0, 12), ("b", 12, 14)], [("b", 0, 2), ("a", 2, 14)])


def test_parse_header_from_the_first_bytes_and_the_file_size():
    data = st.save({"b": np.zeros(2, np.uint8), "a": np.zeros(3, np.float32)})
    base, entries = parse_header(data)
    assert parse_header(data[:base], len(data)) == (base, entries)
    with pytest.raises(SafetensorsFormatError):  # the tensors must end where the file does
        parse_header(data[:base], len(data) + 1)
    with pytest.raises(ValueError):  # the header itself must be there
        parse_header(data[:base - 1], len(data))
