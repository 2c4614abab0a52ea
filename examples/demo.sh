#!/usr/bin/env bash
# The demo: set up .venv, build a local conda channel (offline), lock examples/ml-demo for
# five platforms (plus a CPU variant), check the lock, print its hash, render one platform, then
# bake linux-64 into an OCI image layout (no Docker daemon), run its CMD (as root: umoci + chroot)
# and install it into a local prefix.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv || { echo "error: python3 -m venv failed; on Debian: apt-get install python3-venv" >&2; exit 1; }
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e .
envkit=.venv/bin/envkit
demo=examples/ml-demo
# The image's `hello` runs on a static busybox taken from the host (Debian's busybox-static):
# a scratch image has no libc for a dynamic one.
static_busybox() {
  # ldd exits non-zero for a static binary: judge by what it says (pipefail would fail a pipe into grep).
  [ -x /bin/busybox ] || return 1
  case "$(ldd /bin/busybox 2>&1 || true)" in
    *"not a dynamic executable"* | *"statically linked"*) return 0 ;;
    *) return 1 ;;
  esac
}
if ! static_busybox; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "demo: installing busybox-static (a static /bin/busybox for the demo image)" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq busybox-static >/dev/null \
      || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq busybox-static >/dev/null; }
  else
    echo "error: the demo image needs a static /bin/busybox; on Debian: sudo apt-get install busybox-static" >&2
    exit 1
  fi
fi
.venv/bin/python -m conda_envkit.testing.demo_channel "$demo/channel"
.venv/bin/python -m conda_envkit.testing.local_index "$demo/wheels" --flat
( cd "$demo" && "../../$envkit" lock )
( cd "$demo" && "../../$envkit" lock --check )
( cd "$demo" && "../../$envkit" hash )
( cd "$demo" && "../../$envkit" render -p linux-64 --kind explicit )
export ENVKIT_CACHE_DIR="$PWD/$demo/.cache"
tag=$( cd "$demo" && "../../$envkit" bake -p linux-64 --oci image --cmd hello | sed -n 's/^oci:image://p' )
[ -n "$tag" ] || { echo "error: envkit bake printed no oci:image:TAG reference" >&2; exit 1; }
digest=$(.venv/bin/python - "$demo/image/index.json" "$tag" <<'EOF'
import json, sys
index = json.load(open(sys.argv[1], encoding="utf-8"))
print(next(m["digest"] for m in index["manifests"] if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == sys.argv[2]))
EOF
)
echo "demo: baked oci:$demo/image:$tag, image digest $digest (the same on every machine for this lock)"
rm -rf "$demo/env"
( cd "$demo" && "../../$envkit" install --prefix env )
"$demo/env/bin/hello"
( cd "$demo" && "../../$envkit" verify --prefix env )
echo "demo: wrote $demo/conda-lock.yml, $demo/conda-lock.cpu.yml, the image layout $demo/image (record: $demo/bake.json) and the environment $demo/env"
# The image's own PATH (its prefix first); chroot is named by its full path, found before env -i clears PATH.
run_umoci="umoci unpack --image $demo/image:$tag /tmp/ml-demo-bundle && env -i PATH=/opt/conda/envs/env/bin /usr/sbin/chroot /tmp/ml-demo-bundle/rootfs hello"
chroot=$(command -v chroot || true)
if [ "$(id -u)" = 0 ] && command -v umoci >/dev/null && [ -n "$chroot" ]; then
  bundle=$(mktemp -d)
  umoci unpack --image "$demo/image:$tag" "$bundle/b" >/dev/null
  said=$(env -i PATH=/opt/conda/envs/env/bin "$chroot" "$bundle/b/rootfs" hello)
  rm -rf "$bundle"
  echo "demo: the image's CMD in a chroot says: $said"
fi
echo "demo: run the image (CMD hello):"
echo "  $run_umoci"
echo "  podman run --rm oci:$demo/image:$tag"
echo "demo: next, the CLI is $envkit (or: source .venv/bin/activate, then envkit --help); try it on your own environment.yml"
