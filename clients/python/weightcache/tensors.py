"""safetensors helpers (optional extra: `pip install weightcache[safetensors]`)."""
from __future__ import annotations

import contextlib
import json
import os
from typing import TYPE_CHECKING, Dict, Iterator, List, Optional, Tuple, Union

if TYPE_CHECKING:
    import numpy

    from .client import Client


def _safetensors():
    try:
        import safetensors
        import safetensors.numpy
    except ImportError as e:
        raise ImportError("weightcache.tensors needs safetensors and numpy: "
                          "pip install 'weightcache[safetensors]'") from e
    return safetensors


@contextlib.contextmanager
def open_safetensors(client: "Client", model: str, path: str) -> Iterator[object]:
    """A `safetensors.safe_open` handle (numpy framework) on the descriptor the
    daemon passes for `path`; the descriptor is closed on exit."""
    st = _safetensors()
    fd, _ = client.open(model, path)
    try:
        with st.safe_open(f"/proc/self/fd/{fd}", framework="numpy") as handle:
            yield handle
    finally:
        os.close(fd)


def load_tensors(client: "Client", model: str, path: str, via: str = "open") -> Dict[str, "numpy.ndarray"]:
    """Every tensor of a safetensors file, by name.

    via="open" maps the descriptor from client.open (safetensors.safe_open).
    via="read" receives the whole file over the socket into one bytearray
    (client.read_into: one copy) and returns writable arrays that are views
    into it (tensors_from_buffer): the values, dtypes and shapes of
    safetensors.numpy.load, without its copy per tensor.  Only numpy is
    needed for via="read"."""
    if via == "open":
        _safetensors()
        with open_safetensors(client, model, path) as handle:
            return {name: handle.get_tensor(name) for name in handle.keys()}
    if via == "read":
        _numpy()
        size = client.stat(model, path).size
        buffer = bytearray(size)
        got = client.read_into(model, path, 0, buffer) if size else 0
        if got != size:
            raise ValueError(f"{path}: the file ended after {got} of its {size} bytes")
        return tensors_from_buffer(buffer)
    raise ValueError(f"via must be 'open' or 'read', not {via!r}")


def read_tensor(client: "Client", model: str, path: str, name: str) -> "numpy.ndarray":
    """One tensor of a safetensors file, by name, without the rest of the
    file: its header is read and checked (as parse_header checks a whole
    file), then the tensor's bytes are received straight into a new numpy
    array of its dtype and shape (client.read_into: one copy).  On a model
    not staged yet the daemon fetches just those blocks from the store
    (read-through), so the first tensor can be in hand long before the
    whole model is.  KeyError for an unknown name; SafetensorsFormatError and
    UnsupportedDtype as tensors_from_buffer raises them.  Only numpy is needed."""
    np = _numpy()
    size = client.stat(model, path).size
    prefix = client.read(model, path, 0, min(size, 8))
    if len(prefix) < 8:
        raise SafetensorsFormatError(f"invalid safetensors file: {size} bytes, too short for the header length")
    length = int.from_bytes(prefix, "little")
    if length > _MAX_HEADER or 8 + length > size:
        parse_header(prefix, size)  # raises the error safetensors would
    header = prefix + client.read(model, path, 8, length)
    base, entries = parse_header(header, size)
    for entry_name, dtype, shape, elements, start, stop in entries:
        if entry_name != name:
            continue
        if dtype not in _NUMPY_TYPES:
            raise UnsupportedDtype(f"{dtype} (tensor {name!r}): numpy has no such type")
        array = np.empty(shape, dtype=_NUMPY_TYPES[dtype])
        if stop > start:
            got = client.read_into(model, path, base + start, array.reshape(-1).view(np.uint8))
            if got != stop - start:
                raise ValueError(f"{path}: the file ended {got} bytes into tensor {name!r}")
        return array
    raise KeyError(f"{path} has no tensor {name!r}")


# ------------------------------------------------------------ safetensors parsing

class SafetensorsFormatError(ValueError):
    """A malformed safetensors file (where safetensors raises SafetensorError)."""


class UnsupportedDtype(KeyError, ValueError):
    """A valid safetensors dtype numpy has no type for (BF16, F8_*, F6_*, F4).
    A KeyError like safetensors.numpy.load's, and a ValueError."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


_MAX_HEADER = 100_000_000  # safetensors' MAX_HEADER_SIZE
_U64 = 1 << 64
# Every dtype safetensors knows, and its size in bits.
_BITS = {"BOOL": 8, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8,
         "F8_E8M0": 8, "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8, "I16": 16, "U16": 16, "F16": 16, "BF16": 16,
         "I32": 32, "U32": 32, "F32": 32, "C64": 64, "F64": 64, "I64": 64, "U64": 64}
# The numpy types of those safetensors.numpy maps (it has none for the others);
# safetensors stores little-endian values.
_NUMPY_TYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "U64": "<u8", "I32": "<i4",
                "U32": "<u4", "I16": "<i2", "U16": "<u2", "I8": "i1", "U8": "u1", "BOOL": "?", "C64": "<c8"}

_Entry = Tuple[str, str, Tuple[int, ...], int, int, int]  # name, dtype, shape, elements, start, end


def _is_u64(v: object) -> bool:
    return type(v) is int and 0 <= v < _U64


def _entry(name: str, info: object) -> _Entry:
    def bad(what: str) -> SafetensorsFormatError:
        return SafetensorsFormatError(f"invalid safetensors header: tensor {name!r}: {what}")
    if not isinstance(info, dict):
        raise bad("not a JSON object")
    for key in ("dtype", "shape", "data_offsets"):
        if key not in info:
            raise bad(f"missing field {key!r}")
    dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if not isinstance(dtype, str) or dtype not in _BITS:
        raise bad(f"unknown dtype {dtype!r}")
    if not isinstance(shape, list) or not all(map(_is_u64, shape)):
        raise bad(f"shape {shape!r} is not a list of non-negative integers")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(map(_is_u64, offsets)):
        raise bad(f"data_offsets {offsets!r} is not two non-negative integers")
    elements = 1
    for dim in shape:
        elements *= dim
    if elements * _BITS[dtype] >= _U64:
        raise bad(f"shape {shape!r} overflows")
    return name, dtype, tuple(shape), elements, offsets[0], offsets[1]


def parse_header(data: Union[bytes, bytearray, memoryview], size: Optional[int] = None) -> Tuple[int, List[_Entry]]:
    """(offset of the data section, tensor entries in file order) of a whole
    safetensors file, validated as safetensors does: header length at most
    100 MB and inside the file, a UTF-8 JSON object whose `__metadata__` (if
    any) maps strings to strings, known dtypes, tensors back to back from 0
    in offset order, each exactly as long as its shape and dtype say, the
    last ending at the end of the file.  SafetensorsFormatError otherwise.
    With `size`, `data` may be just the file's first bytes (its header
    included) and `size` the length of the whole file."""
    with memoryview(data) as whole, whole.cast("B") as view:
        if size is None:
            size = len(view)
        if len(view) < 8:
            raise SafetensorsFormatError(f"invalid safetensors file: {size} bytes, too short for the header length")
        length = int.from_bytes(view[:8], "little")
        if length > _MAX_HEADER:
            raise SafetensorsFormatError(f"invalid safetensors file: header length {length} is over {_MAX_HEADER}")
        if 8 + length > size:
            raise SafetensorsFormatError(
                f"invalid safetensors file: header length {length} runs past the end of the {size}-byte file")
        if 8 + length > len(view):
            raise ValueError(f"parse_header needs the first {8 + length} bytes of the file, got {len(view)}")
        raw = bytes(view[8:8 + length])
    try:
        header = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError as e:
        raise SafetensorsFormatError(f"invalid safetensors header: not UTF-8 ({e})") from None
    except ValueError as e:
        raise SafetensorsFormatError(f"invalid safetensors header: not JSON ({e})") from None
    if not isinstance(header, dict):
        raise SafetensorsFormatError("invalid safetensors header: not a JSON object")
    entries = []
    for name, info in header.items():
        if name == "__metadata__":
            if info is not None and not (isinstance(info, dict) and all(isinstance(v, str) for v in info.values())):
                raise SafetensorsFormatError("invalid safetensors header: __metadata__ must map strings to strings")
            continue
        entries.append(_entry(name, info))
    entries.sort(key=lambda e: (e[4], e[5]))
    end = 0
    for name, dtype, shape, elements, start, stop in entries:
        if start != end or stop < start:
            raise SafetensorsFormatError(
                f"invalid safetensors header: tensor {name!r} at data_offsets [{start}, {stop}] "
                f"does not start where the previous one ends ({end})")
        bits = elements * _BITS[dtype]
        if bits % 8:
            raise SafetensorsFormatError(f"invalid safetensors header: tensor {name!r} is not a whole number of bytes")
        if stop - start != bits // 8:
            raise SafetensorsFormatError(
                f"invalid safetensors header: tensor {name!r} of {dtype} {list(shape)} needs {bits // 8} bytes, "
                f"data_offsets give {stop - start}")
        end = stop
    if 8 + length + end != size:
        raise SafetensorsFormatError(
            f"invalid safetensors file: the tensors end at byte {8 + length + end}, the file at {size}")
    return 8 + length, entries


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def tensors_from_buffer(data: Union[bytes, bytearray, memoryview]) -> Dict[str, "numpy.ndarray"]:
    """Every tensor of the safetensors file in `data`, by name (in file
    order): numpy views into `data`, no copy; writable when `data` is.  Equal
    in dtype, shape and values to safetensors.numpy.load(data).  Raises
    SafetensorsFormatError (a ValueError) for a malformed file and
    UnsupportedDtype (a KeyError, as safetensors.numpy.load raises, and a
    ValueError) for a dtype numpy lacks, such as BF16.  The arrays keep all of
    `data` alive, and may be unaligned where the file does not align them."""
    np = _numpy()
    base, entries = parse_header(data)
    for name, dtype, *_ in entries:
        if dtype not in _NUMPY_TYPES:
            raise UnsupportedDtype(f"{dtype} (tensor {name!r}): numpy has no such type")
    return {name: np.frombuffer(data, _NUMPY_TYPES[dtype], elements, base + start).reshape(shape)
            for name, dtype, shape, elements, start, _ in entries}


def _numpy():
    try:
        import numpy
    except ImportError as e:
        raise ImportError("weightcache.tensors needs numpy: pip install 'weightcache[safetensors]'") from e
    return numpy
