"""Test-wide settings: a persistent XLA compilation cache, so identical programs compile once per run."""

import os
from pathlib import Path

import jax
import pytest

_CACHE = Path(__file__).resolve().parents[1] / ".pytest_cache" / "jax_compilation"
_CACHE.mkdir(parents=True, exist_ok=True)
jax.config.update("jax_compilation_cache_dir", str(_CACHE))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
# The same cache for the processes tests start (the CLIs, notebook kernels, multi-process runs, benches):
# JAX reads these at import, so a program compiled by one test is loaded, not compiled again, by the others.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(_CACHE))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")


def outside_checkout_env() -> dict[str, str]:
    """The environment of a user's shell elsewhere: no PYTHONPATH, so only the installed `pkd_jax` is
    importable (the checkout's `configs` and `tests` folders are not)."""
    import os

    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


@pytest.fixture(scope="session")
def mtcnn_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MTCNN's weights converted from the facenet-pytorch wheel (fetched once into .venv through pip)."""
    from pkd_jax.testing.facenet_reference import facenet_wheel
    from pkd_jax.weights.mtcnn import import_mtcnn

    out = tmp_path_factory.mktemp("mtcnn") / "mtcnn.npz"
    import_mtcnn(facenet_wheel(), out)
    return out
