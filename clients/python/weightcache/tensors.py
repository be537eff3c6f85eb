"""safetensors helpers (optional extra: `pip install weightcache[safetensors]`)."""
from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING, Dict, Iterator

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
    """Every tensor of a safetensors file, by name.  via="open" maps the
    descriptor from client.open; via="read" fetches the bytes with read_file."""
    st = _safetensors()
    if via == "open":
        with open_safetensors(client, model, path) as handle:
            return {name: handle.get_tensor(name) for name in handle.keys()}
    if via == "read":
        return st.numpy.load(client.read_file(model, path))
    raise ValueError(f"via must be 'open' or 'read', not {via!r}")
