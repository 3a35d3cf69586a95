#!/usr/bin/env sh
# Prints the path of a Python 3.12 or 3.13 that runs, for the Makefile to build .venv with.
# Order: $PYTHON if set, python3.12 / python3.13 / python3 on PATH, then pyenv's installed versions.
# pyenv puts shims for every version on PATH that fail unless that version is selected, so each
# candidate is run, not just looked up.
ok() { "$1" -c 'import sys; sys.exit(not ((3, 12) <= sys.version_info[:2] <= (3, 13)))' >/dev/null 2>&1; }
if [ -n "${PYTHON:-}" ]; then
  if ok "$PYTHON"; then command -v "$PYTHON"; exit 0; fi
  echo "PYTHON=$PYTHON is not a Python 3.12 or 3.13 that runs" >&2; exit 1
fi
for candidate in python3.12 python3.13 python3; do
  if ok "$candidate"; then
    "$candidate" -c 'import sys; print(sys.executable)'; exit 0
  fi
done
root=$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")
for candidate in "$root"/versions/3.12*/bin/python3 "$root"/versions/3.13*/bin/python3; do
  if [ -x "$candidate" ] && ok "$candidate"; then echo "$candidate"; exit 0; fi
done
cat >&2 <<'MSG'
pkd_jax needs Python 3.12 or 3.13 (its locked stack, jax 0.12, has no release for older Pythons).
Install one, e.g. `pyenv install 3.12` or your system's python3.12 package (with venv), or point
the Makefile at one: `make test PYTHON=/path/to/python3.12`.
MSG
exit 1
