"""The XLA:CPU flags pkd_jax sets for a compute dtype: only where measured to win, only on the CPU, only
before JAX starts its backend, never over a user's own setting."""

import os
import subprocess
import sys

from pkd_jax.train import cpu_flags


def test_bfloat16_cpu_flags_are_set_only_before_the_backend_and_only_on_the_cpu():
    code = (
        "import os; from pkd_jax.train import cpu_flags as c; "
        "added = c.apply_cpu_flags('{dtype}'); import jax; jax.devices(); "
        "flags = os.environ.pop('XLA_FLAGS', ''); print(added, repr(flags), c.apply_cpu_flags('bfloat16'))"
    )

    def run(dtype: str, **env: str) -> str:
        clean = {
            k: v
            for k, v in os.environ.items()
            if k not in ("XLA_FLAGS", "PKD_JAX_CPU_FLAGS", "JAX_PLATFORMS")
        }
        done = subprocess.run(
            [sys.executable, "-c", code.format(dtype=dtype)],
            env={**clean, **env},
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout.strip()

    flag = "--xla_cpu_experimental_onednn_custom_call=true"
    # bfloat16 on the CPU gets the flag; once JAX runs, nothing more is added.
    assert run("bfloat16", JAX_PLATFORMS="cpu") == f"['{flag}'] '{flag}' []"
    assert run("float32", JAX_PLATFORMS="cpu") == "[] '' []"  # float32 measured slower with it
    assert run("bfloat16", JAX_PLATFORMS="cpu", PKD_JAX_CPU_FLAGS="0") == "[] '' []"
    # A user's own setting of the flag is kept as it is.
    assert run(
        "bfloat16", JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_cpu_experimental_onednn_custom_call=false"
    ).startswith("[] '--xla_cpu_experimental_onednn_custom_call=false'")
    os.environ["JAX_PLATFORMS"], saved = "cuda,cpu", os.environ.get("JAX_PLATFORMS")
    try:
        assert not cpu_flags.runs_on_cpu()  # an accelerator first: no XLA:CPU flag
    finally:
        os.environ.pop("JAX_PLATFORMS") if saved is None else os.environ.__setitem__("JAX_PLATFORMS", saved)
