"""Build a local Python package index: real wheels written from scratch, laid out as a
PEP 503 "simple" index that any static HTTP server (or `file://`) serves.

Used by the pip tests and the offline demo, which cannot reach PyPI. The wheels are
real (zip, `*.dist-info` with METADATA, WHEEL, RECORD and entry points), so that
resolving with uv, hash checks and installing exercise the same paths as with PyPI.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import html
import io
import re
import tarfile
import threading
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class WheelSpec:
    """What to put in one wheel: `files` are (path inside the wheel, text)."""

    name: str
    version: str
    tag: str = "py3-none-any"
    requires: tuple[str, ...] = ()
    requires_python: str | None = None
    files: tuple[tuple[str, str], ...] = ()
    console_scripts: tuple[tuple[str, str], ...] = ()  # (command, "module:function")

    @property
    def distribution(self) -> str:
        return re.sub(r"[-_.]+", "_", self.name).lower()

    @property
    def file_name(self) -> str:
        return f"{self.distribution}-{self.version}-{self.tag}.whl"


def normalized_name(name: str) -> str:
    """PEP 503: lower case, runs of `-_.` as one `-`."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def write_wheel(spec: WheelSpec, directory: Path) -> Path:
    """Write `spec` as a wheel into `directory` and return its path (same bytes every time)."""
    dist_info = f"{spec.distribution}-{spec.version}.dist-info"
    metadata = ["Metadata-Version: 2.1", f"Name: {spec.name}", f"Version: {spec.version}"]
    if spec.requires_python:
        metadata.append(f"Requires-Python: {spec.requires_python}")
    metadata += [f"Requires-Dist: {r}" for r in spec.requires]
    pure = "true" if spec.tag.endswith("-none-any") else "false"
    members: list[tuple[str, bytes]] = [(path, text.encode()) for path, text in spec.files]
    members.append((f"{dist_info}/METADATA", ("\n".join(metadata) + "\n").encode()))
    members.append(
        (f"{dist_info}/WHEEL", f"Wheel-Version: 1.0\nGenerator: envkit-tests\nRoot-Is-Purelib: {pure}\nTag: {spec.tag}\n".encode())
    )
    if spec.console_scripts:
        lines = "".join(f"{cmd} = {target}\n" for cmd, target in spec.console_scripts)
        members.append((f"{dist_info}/entry_points.txt", f"[console_scripts]\n{lines}".encode()))
    record = "".join(f"{path},{_record_hash(data)},{len(data)}\n" for path, data in members)
    record += f"{dist_info}/RECORD,,\n"
    members.append((f"{dist_info}/RECORD", record.encode()))

    out = directory / spec.file_name
    directory.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path, data in members:
            info = zipfile.ZipInfo(path, date_time=_ZIP_DATE)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
    return out


def write_sdist(name: str, version: str, directory: Path) -> Path:
    """Write a minimal source distribution (`name-version.tar.gz` with PKG-INFO)."""
    stem = f"{re.sub(r'[-_.]+', '_', name).lower()}-{version}"
    out = directory / f"{stem}.tar.gz"
    directory.mkdir(parents=True, exist_ok=True)
    pkg_info = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode()
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(f"{stem}/PKG-INFO")
        info.size, info.mtime = len(pkg_info), 0
        tar.addfile(info, io.BytesIO(pkg_info))
    out.write_bytes(gzip.compress(raw.getvalue(), mtime=0))
    return out


def build_index(root: Path, wheels: list[WheelSpec], sdists: tuple[tuple[str, str], ...] = ()) -> Path:
    """Write wheels and sdists under `root/files/` and a PEP 503 index under `root/simple/`; return `root/simple`."""
    files = root / "files"
    by_project: dict[str, list[Path]] = {}
    for spec in wheels:
        path = write_wheel(spec, files)
        by_project.setdefault(normalized_name(spec.name), []).append(path)
    for name, version in sdists:
        by_project.setdefault(normalized_name(name), []).append(write_sdist(name, version, files))
    simple = root / "simple"
    simple.mkdir(parents=True, exist_ok=True)
    projects = []
    for project, paths in sorted(by_project.items()):
        links = []
        for path in sorted(paths):
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            links.append(f'<a href="../../files/{html.escape(path.name)}#sha256={digest}">{html.escape(path.name)}</a><br/>')
        (simple / project).mkdir(exist_ok=True)
        (simple / project / "index.html").write_text(f"<!DOCTYPE html>\n<html><body>\n{chr(10).join(links)}\n</body></html>\n")
        projects.append(f'<a href="{project}/">{project}</a><br/>')
    (simple / "index.html").write_text(f"<!DOCTYPE html>\n<html><body>\n{chr(10).join(projects)}\n</body></html>\n")
    return simple


@contextmanager
def served_in_thread(handler: Callable[..., BaseHTTPRequestHandler]) -> Iterator[str]:
    """`handler` on 127.0.0.1 (a port the OS picks), in a thread of this process while the block runs: its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def demo_wheels() -> list[WheelSpec]:
    """A few ML-shaped wheels: a pure library with a console script, a platform-specific one."""
    hello = WheelSpec(
        "hello-ml",
        "0.3.0",
        requires=("numpy>=1.20", "tiny-tokenizer>=1.0"),
        files=(
            ("hello_ml/__init__.py", "from tiny_tokenizer import split\n\nVERSION = '0.3.0'\n"),
            ("hello_ml/cli.py", "import hello_ml\n\ndef main():\n    print('hello-ml', hello_ml.VERSION)\n"),
        ),
        console_scripts=(("hello-ml", "hello_ml.cli:main"),),
    )
    wheels = [
        hello,
        WheelSpec("hello-ml", "0.2.0", files=(("hello_ml/__init__.py", "VERSION = '0.2.0'\n"),)),
        WheelSpec("tiny-tokenizer", "1.1.0", files=(("tiny_tokenizer.py", "def split(text):\n    return text.split()\n"),)),
        WheelSpec("tiny-tokenizer", "0.9.0", files=(("tiny_tokenizer.py", "def split(text):\n    return [text]\n"),)),
        # numpy from PyPI too: a pip resolution that ignored conda's numpy would pick 2.0.
        WheelSpec("numpy", "2.0.0", files=(("numpy/__init__.py", "__version__ = '2.0.0'\n"),)),
        WheelSpec("needs-numpy3", "1.0", requires=("numpy>=3",), files=(("needs_numpy3.py", ""),)),
    ]
    for tag in ("cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64", "cp311-cp311-macosx_11_0_arm64", "cp311-cp311-win_amd64"):
        wheels.append(WheelSpec("fastmath", "1.2.0", tag=tag, files=(("fastmath.py", f"BUILT_FOR = {tag!r}\n"),)))
    return wheels


DEMO_SDISTS = (("sdist-only-thing", "1.0"),)


def main() -> None:
    """`python -m conda_envkit.testing.local_index DIR [--flat]`: write the demo index (or just the wheels) to DIR."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m conda_envkit.testing.local_index", description=main.__doc__)
    parser.add_argument("dir", nargs="?", default="pypi", help="where to write (default: pypi)")
    parser.add_argument("--flat", action="store_true", help="the wheels alone, for --find-links (else a PEP 503 index)")
    args = parser.parse_args()
    target = Path(args.dir)
    if args.flat:
        for spec in demo_wheels():
            write_wheel(spec, target)
        print(f"wrote {len(demo_wheels())} wheels to {target}")
    else:
        build_index(target, demo_wheels(), DEMO_SDISTS)
        print(f"wrote a PEP 503 index to {target}/simple")


if __name__ == "__main__":
    main()
