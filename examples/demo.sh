#!/usr/bin/env bash
# The demo: set up .venv, build a local conda channel (offline), lock examples/ml-demo for
# five platforms (plus a CPU variant), check the lock, print its hash, render one platform, then
# bake linux-64 into an OCI image layout (no Docker daemon) and install it into a local prefix.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv || { echo "error: python3 -m venv failed; on Debian: apt-get install python3-venv" >&2; exit 1; }
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e .
envkit=.venv/bin/envkit
demo=examples/ml-demo
.venv/bin/python -m conda_envkit.testing.toy_channel "$demo/channel"
.venv/bin/python -m conda_envkit.testing.local_index "$demo/wheels" --flat
( cd "$demo" && "../../$envkit" lock )
( cd "$demo" && "../../$envkit" lock --check )
( cd "$demo" && "../../$envkit" hash )
( cd "$demo" && "../../$envkit" render -p linux-64 --kind explicit )
export ENVKIT_CACHE_DIR="$PWD/$demo/.cache"
( cd "$demo" && "../../$envkit" bake -p linux-64 --oci image --cmd hello )
rm -rf "$demo/env"
( cd "$demo" && "../../$envkit" install --prefix env )
"$demo/env/bin/hello"
( cd "$demo" && "../../$envkit" verify --prefix env )
echo "demo: wrote $demo/conda-lock.yml, $demo/conda-lock.cpu.yml, the image layout $demo/image (record: $demo/bake.json) and the environment $demo/env"
