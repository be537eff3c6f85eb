"""Against a real daemon.  Configured by the environment:

    WEIGHTCACHE_SOCKET               the daemon's socket
    WEIGHTCACHE_TEST_MODEL           a published model, not yet preloaded (e.g. tiny@main)
    WEIGHTCACHE_TEST_MODEL_DIR       a folder with that model's original files
    WEIGHTCACHE_TEST_COLD_MODEL      a second published model nothing touches before these tests
    WEIGHTCACHE_TEST_COLD_MODEL_DIR  its original files
    WEIGHTCACHE_TEST_TIMEOUT         seconds per socket operation (default 600)

Without them the tests are skipped, or fail when WEIGHTCACHE_REQUIRE_LIVE=1.
The cold read-through test is first in this file and must run first.
"""
import mmap
import os

import pytest

from weightcache import NVME_STAGED, TIER_NVME, Client, WeightCacheError

VARIABLES = ("WEIGHTCACHE_SOCKET", "WEIGHTCACHE_TEST_MODEL", "WEIGHTCACHE_TEST_MODEL_DIR",
             "WEIGHTCACHE_TEST_COLD_MODEL", "WEIGHTCACHE_TEST_COLD_MODEL_DIR")


def config() -> dict:
    """The live settings; skips (or fails, with WEIGHTCACHE_REQUIRE_LIVE=1) when any is missing."""
    missing = [v for v in VARIABLES if not os.environ.get(v)]
    if missing:
        message = "live daemon tests need " + ", ".join(missing)
        if os.environ.get("WEIGHTCACHE_REQUIRE_LIVE") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return {v: os.environ[v] for v in VARIABLES}


def connect(cfg: dict) -> Client:
    return Client(cfg["WEIGHTCACHE_SOCKET"], timeout=float(os.environ.get("WEIGHTCACHE_TEST_TIMEOUT", "600")))


def local_files(folder: str) -> dict:
    """Relative path ("/"-separated) -> absolute path of every file under folder."""
    out = {}
    for root, _, names in os.walk(folder):
        for name in names:
            full = os.path.join(root, name)
            out[os.path.relpath(full, folder).replace(os.sep, "/")] = full
    assert out, f"no files under {folder}"
    return out


def canonical(model: str) -> str:
    return model if "@" in model else model + "@main"


def original(full: str) -> bytes:
    with open(full, "rb") as f:
        return f.read()


def test_a_cold_read_through_matches_original():
    cfg = config()
    model = cfg["WEIGHTCACHE_TEST_COLD_MODEL"]
    with connect(cfg) as c:
        for rel, full in sorted(local_files(cfg["WEIGHTCACHE_TEST_COLD_MODEL_DIR"]).items()):
            data = original(full)
            size = len(data)
            if size:
                for offset, length in ((0, 4096), (size // 2, 65536), (max(0, size - 16), 16), (size - 1, 100)):
                    got = c.read(model, rel, offset, length)
                    assert got == data[offset:offset + length], f"{rel} at {offset}+{length}"
            assert c.read(model, rel, 0, size) == data, rel


def test_b_preload_with_progress_then_resolve():
    cfg = config()
    model, files = cfg["WEIGHTCACHE_TEST_MODEL"], local_files(cfg["WEIGHTCACHE_TEST_MODEL_DIR"])
    seen = []
    with connect(cfg) as c:
        info = c.preload(model, tier=TIER_NVME, progress=lambda done, total: seen.append((done, total)))
        assert info.model == canonical(model)
        assert seen, "no progress frames"
        assert seen[-1][0] == seen[-1][1]
        resolved = c.resolve(model)
    assert resolved.model == canonical(model)
    assert {f.path for f in resolved.files} == set(files)
    for f in resolved.files:
        assert f.nvme == NVME_STAGED, f
        assert f.size == os.path.getsize(files[f.path]), f


def test_c_safetensors_via_open_and_read_match_original():
    cfg = config()
    import numpy as np
    import safetensors.numpy

    from weightcache.tensors import load_tensors, read_tensor
    model, files = cfg["WEIGHTCACHE_TEST_MODEL"], local_files(cfg["WEIGHTCACHE_TEST_MODEL_DIR"])
    shards = [rel for rel in files if rel.endswith(".safetensors")]
    assert shards, "the test model has no .safetensors file"
    with connect(cfg) as c:
        for rel, full in files.items():
            assert c.read_file(model, rel) == original(full), rel
        for rel in shards:
            expected = safetensors.numpy.load_file(files[rel])
            for via in ("open", "read"):
                got = load_tensors(c, model, rel, via=via)
                assert set(got) == set(expected), (rel, via)
                for name, tensor in expected.items():
                    assert got[name].dtype == tensor.dtype and got[name].shape == tensor.shape, (rel, via, name)
                    assert np.array_equal(got[name], tensor), (rel, via, name)
            # One tensor at a time, by name, without the rest of the file.
            for name, tensor in expected.items():
                one = read_tensor(c, model, rel, name)
                assert one.dtype == tensor.dtype and one.shape == tensor.shape, (rel, name)
                assert np.array_equal(one, tensor), (rel, name)
            with pytest.raises(KeyError):
                read_tensor(c, model, rel, "no such tensor")


def test_d_open_descriptor_matches_original():
    cfg = config()
    model, files = cfg["WEIGHTCACHE_TEST_MODEL"], local_files(cfg["WEIGHTCACHE_TEST_MODEL_DIR"])
    with connect(cfg) as c:
        for rel, full in files.items():
            data = original(full)
            fd, info = c.open(model, rel)
            try:
                assert info.size == len(data) == os.fstat(fd).st_size, rel
                if data:
                    with mmap.mmap(fd, 0, prot=mmap.PROT_READ) as m:
                        assert m[:] == data, rel
            finally:
                os.close(fd)


def test_e_errors():
    cfg = config()
    model, files = cfg["WEIGHTCACHE_TEST_MODEL"], local_files(cfg["WEIGHTCACHE_TEST_MODEL_DIR"])
    rel = sorted(files)[0]
    size = os.path.getsize(files[rel])
    with connect(cfg) as c:
        with pytest.raises(WeightCacheError) as e:
            c.resolve("no-such-model-weightcache-test@main")
        assert e.value.name == "not-found"
        for call in (lambda: c.stat(model, "../etc/passwd"), lambda: c.read(model, "../etc/passwd", 0, 1)):
            with pytest.raises(WeightCacheError) as e:
                call()
            assert e.value.name == "invalid-argument"
        for offset in (size, size + 4096):
            with pytest.raises(WeightCacheError) as e:
                c.read(model, rel, offset, 1)
            assert e.value.name == "invalid-argument"
        assert c.resolve(model).model == canonical(model)  # the connection survives errors


def test_f_stats_and_list():
    cfg = config()
    with connect(cfg) as c:
        stats = c.stats()
        assert isinstance(stats, dict) and "ram" in stats and "nvme" in stats
        assert canonical(cfg["WEIGHTCACHE_TEST_MODEL"]) in {s.model for s in c.list()}
