"""Files computed once and reused: content fingerprints and atomic writes.

Every cache of the package (the gate's teacher track, frozen trunks' features, the feature cache's JSON
files) and every file a reader may open while it is rewritten (a workdir's config record and metrics) goes
through here, so they agree on two things:

  * `fingerprint(*parts)`: what a cache depends on, hashed by content. Settings are hashed as canonical
    JSON (`canonical_json`), byte strings and arrays as their bytes (arrays with dtype and shape), a
    parameter tree leaf by leaf (`tree_digest`). Hashing content rather than naming a source (a path, a
    time) keeps a cache valid when its inputs move and invalidates it when they change in place.
  * `write_atomic(path, write)`: the file is written under a hidden temporary name in its directory and
    renamed over `path`, so a reader, or a run that crashed mid-write, never sees half a file (a power
    loss aside: nothing is fsynced, these are caches and logs that can be recomputed).

Only numpy and the standard library at import: `pkd_jax.data` and `pkd_jax.workdir` use this without jax.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "array_digest",
    "canonical_json",
    "fingerprint",
    "save_npy_atomic",
    "save_npz_atomic",
    "tree_digest",
    "write_atomic",
    "write_text_atomic",
]


def canonical_json(value: Any) -> bytes:
    """The canonical bytes of JSON-able settings: keys sorted, `json`'s default separators, UTF-8.

    The preprocessing digest (`PreprocessConfig.digest`) has hashed exactly this since the first caches,
    so its form is fixed. Tuples read as lists; anything `json` cannot write is a TypeError.
    """
    return json.dumps(value, sort_keys=True).encode()


def _array_header(array: np.ndarray) -> bytes:
    # str(dtype) names the byte order when it is not native ('>f4'), and bfloat16 by name.
    return f"{array.dtype}{list(array.shape)}".encode()


def _as_host_array(value: Any) -> np.ndarray:
    """A C-contiguous numpy copy of a numpy or jax array (jax's `__array__` fetches it to the host)."""
    return np.ascontiguousarray(np.asarray(value))


def _frame(h: Any, kind: bytes, data: bytes) -> None:
    """Appends one length-prefixed part, so that no two sequences of parts hash the same bytes."""
    for piece in (kind, data):
        h.update(len(piece).to_bytes(8, "little"))
        h.update(piece)


def _is_array(value: Any) -> bool:
    return isinstance(value, np.ndarray | np.generic) or (
        hasattr(value, "__array__") and hasattr(value, "dtype") and hasattr(value, "shape")
    )


def fingerprint(*parts: Any) -> str:
    """A stable sha256 (64 hex digits) of `parts`, in order, each hashed by content.

    Each part is `bytes` (hashed as is), an array (numpy or jax: dtype, shape and bytes) or JSON-able
    settings (`canonical_json`). Parts are length-prefixed and tagged by kind, so ("ab", "c") and
    ("a", "bc"), or b"[1]" and [1], differ. Fingerprints of a parameter tree or a file go in as the
    digest string of `tree_digest` or the file's bytes.
    """
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, bytes | bytearray | memoryview):
            _frame(h, b"bytes", bytes(part))
        elif _is_array(part):
            array = _as_host_array(part)
            _frame(h, b"array:" + _array_header(array), array.tobytes())
        else:
            _frame(h, b"json", canonical_json(part))
    return h.hexdigest()


def array_digest(array: Any) -> str:
    """sha256 of one array's dtype, shape and bytes (numpy or jax; the same values give the same digest)."""
    return fingerprint(_as_host_array(array))


def tree_digest(tree: Any) -> str:
    """sha256 of a pytree of arrays (e.g. flax variables) by content: every leaf's path, dtype, shape and
    bytes, leaves in the order of their paths, so neither where the tree came from nor the order its
    dicts were built in matters. An empty tree has a digest too."""
    import jax  # here, not at the top: the rest of this module serves jax-free readers

    h = hashlib.sha256()
    leaves = jax.tree_util.tree_leaves_with_path(tree)
    for path, leaf in sorted(leaves, key=lambda item: jax.tree_util.keystr(item[0])):
        array = _as_host_array(jax.device_get(leaf))
        _frame(h, jax.tree_util.keystr(path).encode() + b":" + _array_header(array), array.tobytes())
    return h.hexdigest()


def write_atomic(path: str | os.PathLike[str], write: Callable[[Path], None]) -> None:
    """Creates or replaces `path` all at once: `write(tmp)` writes the content to a temporary file in the
    same directory (hidden, unique per writer), which is then renamed over `path`. If `write` raises, the
    temporary file is removed and `path` is left as it was.

    `write` must write to exactly the path it is given: `np.save` and `np.savez` append a suffix to a file
    name, so give them an open file (`save_npy_atomic`, `save_npz_atomic` do).
    """
    path = Path(path)
    # Not tempfile.mkstemp: its files are private (0600); this one gets the umask's permissions.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Writes `text` to `path` atomically (`write_atomic`)."""

    def write(tmp: Path) -> None:
        tmp.write_text(text)

    write_atomic(path, write)


def save_npy_atomic(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """`np.save` of `array` (no pickles) to exactly `path`, atomically."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.save(f, array, allow_pickle=False)

    write_atomic(path, write)


def save_npz_atomic(path: str | os.PathLike[str], **arrays: Any) -> None:
    """`np.savez` (uncompressed) of `arrays` to exactly `path`, atomically."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    write_atomic(path, write)
