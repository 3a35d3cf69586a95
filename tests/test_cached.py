"""The cache helpers: fingerprints stable and sensitive to content only, writes that are all or nothing."""

import json

import jax.numpy as jnp
import numpy as np
import pytest

from pkd_jax import cached


def test_fingerprints_are_stable_and_change_with_content_only():
    settings = {"b": [1, 2], "a": "x"}
    array = np.arange(6, dtype=np.float32).reshape(2, 3)
    key = cached.fingerprint("track", settings, b"manifest", array)
    # Stable: the same content in another dict order, or as a jax array, gives the same key.
    assert cached.fingerprint("track", {"a": "x", "b": (1, 2)}, b"manifest", jnp.asarray(array)) == key
    assert len(key) == 64 and int(key, 16) >= 0
    changed = [
        cached.fingerprint("track", {**settings, "a": "y"}, b"manifest", array),
        cached.fingerprint("track", settings, b"manifesto", array),
        cached.fingerprint("track", settings, b"manifest", array.reshape(3, 2)),  # same bytes, other shape
        cached.fingerprint("track", settings, b"manifest", array.astype(np.float64)),
        cached.fingerprint("track", settings, b"manifest", array + 1),
        cached.fingerprint("track", settings, b"manifest"),
    ]
    assert len({key, *changed}) == 1 + len(changed)
    # Parts are framed: no two sequences of parts hash the same stream.
    assert cached.fingerprint(b"ab", b"c") != cached.fingerprint(b"a", b"bc")
    assert cached.fingerprint(b"[1]") != cached.fingerprint([1])
    # The preprocessing digest's canonical form, fixed since its first caches.
    assert cached.canonical_json(settings) == json.dumps(settings, sort_keys=True).encode()
    with pytest.raises(TypeError):
        cached.fingerprint({"not json": object()})


def test_tree_digest_hashes_parameters_by_content_whatever_their_order_or_device():
    tree = {"params": {"dense": {"kernel": np.ones((2, 3), np.float32), "bias": np.zeros(3, np.float32)}}}
    digest = cached.tree_digest(tree)
    reordered = {"params": {"dense": {"bias": jnp.zeros(3), "kernel": jnp.ones((2, 3))}}}
    assert cached.tree_digest(reordered) == digest
    retrained = {
        "params": {"dense": {"kernel": np.ones((2, 3), np.float32), "bias": np.full(3, 1e-7, np.float32)}}
    }
    renamed = {"params": {"dense_1": tree["params"]["dense"]}}
    assert len({digest, cached.tree_digest(retrained), cached.tree_digest(renamed)}) == 3
    assert cached.array_digest(jnp.ones(3)) == cached.array_digest(np.ones(3, np.float32))


def test_atomic_writes_leave_the_old_file_or_the_new_one_and_no_temporary(tmp_path):
    path = tmp_path / "manifest.json"
    cached.write_text_atomic(path, "old")

    def fails_halfway(tmp):
        tmp.write_text("half of the new")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        cached.write_atomic(path, fails_halfway)
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json"]
    cached.write_text_atomic(path, "new")
    assert path.read_text() == "new"
    # numpy writers land on exactly the name given (np.save would append ".npy" to a file name).
    cached.save_npy_atomic(tmp_path / "features", np.arange(4, dtype=np.float32))
    cached.save_npz_atomic(tmp_path / "track.npz", a=np.ones(2), key=np.asarray("k"))
    assert np.array_equal(np.load(tmp_path / "features"), np.arange(4, dtype=np.float32))
    with np.load(tmp_path / "track.npz") as stored:
        assert str(stored["key"]) == "k" and stored["a"].tolist() == [1.0, 1.0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["features", "manifest.json", "track.npz"]
