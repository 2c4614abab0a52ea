#!/bin/sh
# Runs the command with the environment first on PATH (bake already set it; this also works under `docker run --entrypoint`).
set -e
export PATH="$CONDA_PREFIX/bin:$PATH"
exec "$@"
