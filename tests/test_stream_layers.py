"""A plain package's own layer is written as its archive is read (no staged payload): the same bytes as the
staged path gives, its files in the archive's order, the installed tree, and the staged or linked path
whenever the stream cannot follow the archive (a GNU tar, a file paths.json does not list)."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import logging
import subprocess
import tarfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from rattler.index import index_fs

import conda_envkit.bake as bake_module
import conda_envkit.layer_processes as layer_processes
import conda_envkit.stream_package as stream_package
from conda_envkit.archive_check import NotStreamable, StreamedArchive
from conda_envkit.bake import BakeError
from conda_envkit.install import FetchedPackage
from conda_envkit.testing.hostile_packages import HostilePackage, Member, RawWheel, python_package, write_hostile_package, write_raw_wheel
from conda_envkit.testing.local_channel import PackageFile, PackageSpec, build_channel
from tests.hostile.conftest import PLACEHOLDER, Workspace, _listed, lock_entry, locked_workspace
from tests.test_bake_cache import _tree
from tests.test_tar_headers import _as_tar_bz2

LONG = "lib/python3.11/site-packages/" + "a_rather_deep_package/" * 5 + "module_with_a_long_name.py"  # > 100 bytes

PACKAGES = [
    # Archive order is not path order: the layer keeps the archive's, parents first.
    HostilePackage(
        "ordered",
        (
            Member("lib/zeta.txt", content=b"zeta\n"),
            Member("share", kind="dir", mode=0o755),
            Member("bin/alpha", content=b"#!/bin/sh\necho alpha\n", mode=0o755),
            Member("lib/sub/deep/file.txt", content=b"deep\n" * 5000),
            Member("bin/beta", kind="symlink", target="alpha"),
            Member("share/small", content=b"s"),
            Member("lib/__init__.py", content=b""),  # an empty file (rattler reads its size as None)
        ),
    ),
    # A GNU long-name record: only tarfile reads it, so this package is staged.
    HostilePackage(
        "gnu-long", (Member(LONG, content=b"print('long')\n"), Member("bin/gnu", content=b"gnu\n")), tar_format=tarfile.GNU_FORMAT
    ),
    # A non-empty file whose paths.json entry has no size (read as an empty file's): plain by its info, but the
    # stream finds the archive's size differs, so this package is linked; its file is still all there.
    HostilePackage(
        "no-size",
        (Member("lib/sized.txt", content=b"more than nothing\n"),),
        ({"_path": "lib/sized.txt", "path_type": "hardlink", "sha256": hashlib.sha256(b"more than nothing\n").hexdigest()},),
    ),
    # Hard links, as tar writes a file with several links (a link to a link too): each stands for the file before
    # it. The stream does not reproduce them, so this package is linked; install and image hold the same bytes.
    HostilePackage(
        "hardlinked",
        (
            Member("bin/tool", content=b"#!/bin/sh\necho tool\n", mode=0o755),
            Member("bin/tool-1.0", kind="hardlink", target="bin/tool"),
            Member("bin/tool-1", kind="hardlink", target="bin/tool-1.0"),
        ),
        tuple(
            {"_path": p, "path_type": "hardlink", "sha256": hashlib.sha256(b"#!/bin/sh\necho tool\n").hexdigest(), "size_in_bytes": 20}
            for p in ("bin/tool", "bin/tool-1.0", "bin/tool-1")
        ),
    ),
    # Modes as the archive has them (read-only, private, group-writable): install and image keep them alike.
    HostilePackage(
        "modes",
        (
            Member("share/modes/ro.txt", content=b"read only\n", mode=0o444),
            Member("bin/private", content=b"#!/bin/sh\necho private\n", mode=0o700),
            Member("share/modes/group.txt", content=b"group\n", mode=0o664),
        ),
    ),
    # A file paths.json does not list: not what the stream reproduces, so this package is linked.
    HostilePackage(
        "unlisted",
        (Member("lib/listed.txt", content=b"listed\n"), Member("lib/unlisted.txt", content=b"not listed\n")),
        ({"_path": "lib/listed.txt", "path_type": "hardlink", "sha256": hashlib.sha256(b"listed\n").hexdigest(), "size_in_bytes": 7},),
    ),
]


def _with_placeholders(
    name: str, files: dict[str, tuple[bytes, str]], executable: tuple[str, ...] = (), placeholder: str = PLACEHOLDER
) -> HostilePackage:
    """A package whose files declare a prefix placeholder in the given mode ("" for none), as conda-build writes them."""
    members = tuple(Member(path, content=data, mode=0o755 if path in executable else 0o644) for path, (data, _mode) in files.items())
    declared = {"prefix_placeholder": placeholder}
    paths = tuple(_listed(path, data, **(declared | {"file_mode": mode} if mode else {})) for path, (data, mode) in files.items())
    return HostilePackage(name, members, paths)


PH = PLACEHOLDER.encode()
# conda-build's binary placeholder is long (255 bytes), so that any prefix fits in its place.
LONG_PLACEHOLDER = "/opt/" + "_placehold" * 20
LPH = LONG_PLACEHOLDER.encode()
PLACEHOLDERS = [
    # Replaced while streaming, as rattler replaces them.
    _with_placeholders(
        "texty",
        {
            "bin/tool": (b"#!" + PH + b"/bin/python\nimport sys\nprint('" + PH + b"/lib')\n", "text"),
            "bin/tool-args": (b"#!" + PH + b"/bin/python -E\nprint(1)\n", "text"),
            "lib/pkgconfig/texty.pc": (b"prefix=" + PH + b"\nlibdir=${prefix}/lib\nincludedir=" + PH + b"/include", "text"),
            "etc/texty.conf": (b"a=" + PH + b"\r\nb=" + PH + PH + b"\r\n", "text"),
            "etc/declared-only.conf": (b"no placeholder in here\n", "text"),  # rattler records no sha256_in_prefix
            "share/texty/plain.txt": (b"no placeholder here\n", ""),
        },
        executable=("bin/tool", "bin/tool-args"),
    ),
    _with_placeholders(
        "binny",
        {
            "lib/simple.so": (b"\x7fELF\x00\x01" + LPH + b"/lib\x00tail\x00", "binary"),
            "lib/two-in-one.so": (b"head\x00" + LPH + b"/lib:" + LPH + b"/lib64\x00rest", "binary"),
            "lib/mid-string.so": (b"\x00RPATH=" + LPH + b"/lib\x00", "binary"),
            "lib/at-end.so": (b"\x00\x00" + LPH + b"/share", "binary"),
            "lib/separate.so": (LPH + b"\x00\x00" + LPH + b"/x\x00", "binary"),
            "lib/declared-only.so": (b"\x00nothing here\x00", "binary"),
        },
        placeholder=LONG_PLACEHOLDER,
    ),
    # A shebang rattler rewrites once replaced (too long): left to rattler, so the package is linked.
    _with_placeholders("texty-long", {"bin/long": (b"#!" + PH + b"/" + b"x" * 100 + b"/bin/python\n", "text")}, executable=("bin/long",)),
    # A shebang that is not UTF-8 (latin-1): rattler reads it as UTF-8 and writes U+FFFD instead, whether the placeholder
    # is on it or on a later line; left to rattler too.
    _with_placeholders(
        "texty-latin",
        {"bin/latin": (b"#!" + PH + b"/bin/sh -\xe9\necho hi\n", "text"), "bin/later": (b"#!/bin/sh -\xe9\necho " + PH + b"\n", "text")},
        executable=("bin/latin", "bin/later"),
    ),
]
# A noarch: python package, its files in no sorted order: site-packages/ and python-scripts/ go where rattler links
# them, its entry points become scripts, and a package dir and its dist-info (`pyish/`, `pyish-1.0.dist-info/`) are
# recorded in rattler's order (component by component, not as strings).
PYISH_FILES = {
    "site-packages/pyish-1.0.dist-info/METADATA": b"Name: pyish\nVersion: 1.0\n",
    "share/pyish/data.txt": b"data\n",
    "site-packages/pyish/cli.py": b"def main():\n    return 0\n",
    "python-scripts/pyish-run": b"#!" + PLACEHOLDER.encode() + b"/bin/python\nprint('run')\n",
    "site-packages/pyish/__init__.py": b"",
}
PYISH = HostilePackage(
    "pyish",
    tuple(Member(path, content=data, mode=0o755 if path.startswith("python-scripts/") else 0o644) for path, data in PYISH_FILES.items()),
    tuple(
        _listed(path, data, **({"prefix_placeholder": PLACEHOLDER, "file_mode": "text"} if path.startswith("python-scripts/") else {}))
        for path, data in PYISH_FILES.items()
    ),
    noarch="python",
    link={
        "noarch": {"type": "python", "entry_points": ["pyish = pyish.cli:main", " pyish-two=pyish.cli : main "]},
        "package_metadata_version": 1,
    },
)
# A plain package whose paths sort differently as strings and as paths.
SIBLINGS = HostilePackage(
    "siblings",
    tuple(Member(path, content=path.encode()) for path in ("lib/sib/a.txt", "lib/sib-1.0/b.txt", "lib/sib.txt", "lib/sib/c/d.txt")),
)
NAMES = [
    "ordered",
    "gnu-long",
    "unlisted",
    "no-size",
    "hardlinked",
    "modes",
    "honest",
    "texty",
    "binny",
    "texty-long",
    "texty-latin",
    "python",
    "pyish",
    "siblings",
]
# Wheels, streamed as installer installs them: a package, a `#!python` script and a data file in the wheel's .data,
# a console script; and one whose RECORD declares another hash than its file has (read, found out, installed in
# a staging prefix instead).
WHEELS = [
    RawWheel(
        "wheely",
        "1.0",
        (
            ("wheely/__init__.py", b"def main():\n    return 0\n"),
            ("wheely-1.0.data/scripts/wheely-fix", b"#!python\nprint('fixed')\n"),
            ("wheely-1.0.data/data/share/wheely/x.txt", b"x\n"),
            ("wheely-1.0.dist-info/entry_points.txt", b"[console_scripts]\nwheely = wheely:main\n"),
        ),
    ),
    RawWheel("liar", "1.0", (("liar.py", b"real\n"),)),  # its RECORD then made to lie (`_lying_record`)
]


@pytest.fixture(scope="module")
def stream_channel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    channel = tmp_path_factory.mktemp("channels") / "stream"
    honest = PackageSpec("honest", "1.0", "0", files=(PackageFile("bin/honest", b"#!/bin/sh\necho honest\n", executable=True),))
    build_channel(channel, [honest, python_package()], subdirs=("linux-64",))
    for package in (*PACKAGES, *PLACEHOLDERS, PYISH, SIBLINGS):
        write_hostile_package(package, channel)
    # A .tar.bz2 (the stream reads .conda only): staged, in a layer of its own with its archive's order too.
    conda = write_hostile_package(
        HostilePackage("bzipped", (Member("lib/b.txt", content=b"b\n"), Member("bin/a", content=b"a\n"))), channel
    )
    _as_tar_bz2(conda, conda.with_name("bzipped-1.0-0.tar.bz2"))
    conda.unlink()
    for wheel in WHEELS:
        written = write_raw_wheel(wheel, channel / "wheels")
        if wheel.name == "liar":
            _lying_record(written, "liar.py", b"fake\n")
    asyncio.run(index_fs(channel, write_zst=False, write_shards=False, force=True))
    return channel


def _lying_record(wheel: Path, path: str, content: bytes) -> None:
    """Rewrite `wheel`'s RECORD to declare the hash of `content` (of the same size) for `path`."""
    import base64
    import zipfile

    with zipfile.ZipFile(wheel) as z:
        members = [(info, z.read(info)) for info in z.infolist()]
    digest = base64.urlsafe_b64encode(hashlib.sha256(content).digest()).rstrip(b"=").decode()
    with zipfile.ZipFile(wheel, "w") as z:
        for info, data in members:
            if info.filename.endswith("/RECORD"):
                lines = [
                    f"{path},sha256={digest},{len(content)}" if line.startswith(f"{path},") else line for line in data.decode().splitlines()
                ]
                data = ("\n".join(lines) + "\n").encode()
            z.writestr(info, data)


@contextmanager
def _streams_seen(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The archives the bake read to their end as streams."""
    seen: list[str] = []
    real = layer_processes.stream_package_archive
    real_wheel = bake_module._stream_wheel

    @contextmanager
    def spy(archive: Path, label: str, hashed: bool = True) -> Iterator[StreamedArchive]:
        with real(archive, label, hashed) as streamed:
            yield streamed
        seen.append(archive.name.rsplit("-", 2)[0])

    def spy_wheel(fetched: FetchedPackage, *args: Any) -> Any:
        written = real_wheel(fetched, *args)
        seen.append(f"pip:{fetched.locked.name}")
        return written

    monkeypatch.setattr(layer_processes, "stream_package_archive", spy)
    monkeypatch.setattr(bake_module, "_stream_wheel", spy_wheel)
    yield seen


def _workspace(root: Path, channel: Path, names: list[str]) -> Workspace:
    """A lock of `names`, the .tar.bz2 package and the wheels."""
    ws = locked_workspace(root, channel, names)
    bzipped = lock_entry(channel / "noarch" / "bzipped-1.0-0.tar.bz2", "bzipped")
    ws.rewrite(lambda document: document["package"].append(bzipped))
    for wheel in WHEELS:
        ws.add_wheel(channel / "wheels" / wheel.file_name, wheel.name, wheel.version)
    return ws


def _bake(ws: Workspace, *args: str, large_mb: str = "0") -> dict:
    """Baked with every package in a layer of its own (`large_mb` 0), or all in group layers (a large `large_mb`)."""
    result = ws.envkit("bake", "-q", "-p", "linux-64", "--large-package-mb", large_mb, "--record", ws.root / "bake.json", *args)
    assert result.returncode == 0, result.output
    return json.loads((ws.root / "bake.json").read_text())


def _layer_names(image: Path, digest: str) -> list[str]:
    blob = image / "blobs" / "sha256" / digest.split(":")[1]
    with tarfile.open(blob, mode="r:gz") as tar:
        return tar.getnames()


@pytest.mark.parametrize("large_mb", ["0", "1000"], ids=["own-layers", "group-layers"])
def test_streamed_layers_are_the_staged_layers_and_the_installed_tree(
    tmp_path: Path, stream_channel: Path, monkeypatch: pytest.MonkeyPatch, large_mb: str
) -> None:
    # Streamed into a layer of its own, or (group packages) into its fragment, which the group layer copies.
    installed = tmp_path / "envs" / "stream"  # baked for the prefix install writes: the records say the same
    prefix = str(installed)
    ws = _workspace(tmp_path / "streamed", stream_channel, NAMES)
    with _streams_seen(monkeypatch) as seen:
        streamed = _bake(ws, "--oci", ws.root / "image", "--prefix", prefix, large_mb=large_mb)
    monkeypatch.undo()
    # gnu-long was staged; unlisted, no-size and texty-long linked, and the lying wheel installed in a staging prefix
    assert sorted(seen) == ["binny", "honest", "modes", "ordered", "pip:wheely", "pyish", "python", "siblings", "texty"]

    # The same lock with every archive staged (the path a stream falls back to): the same image.
    def refuse(*_: object, **__: object) -> None:
        raise NotStreamable

    staged_ws = _workspace(tmp_path / "staged", stream_channel, NAMES)
    monkeypatch.setattr(layer_processes, "stream_package_archive", refuse)
    staged = _bake(staged_ws, "--oci", staged_ws.root / "image", "--prefix", prefix, large_mb=large_mb)
    monkeypatch.undo()
    assert streamed["image"]["digest"] == staged["image"]["digest"]
    assert not list((ws.cache / "fragments").rglob(".*"))  # no temporary fragment left

    layers = {tuple(layer["packages"]): layer["digest"] for layer in streamed["platforms"]["linux-64"]["layers"]}
    env = prefix.strip("/")
    if large_mb == "0":
        _assert_archive_order(ws.root / "image", layers, env)

    _assert_image_is_installed_tree(ws, streamed, installed)
    # verify reads the image as it unpacks: a hard link is the file it names
    verified = ws.envkit("verify", "--image", f"oci:{ws.root / 'image'}:{streamed['tags'][0]}")
    assert verified.returncode == 0, verified.output


def _assert_image_is_installed_tree(ws: Workspace, baked: dict, installed: Path) -> None:
    """The image's environment is byte for byte what `envkit install` writes into `installed` (the prefix it was
    baked for), every package and conda-meta record included."""
    result = ws.envkit("install", "-q", "--prefix", installed, "-p", "linux-64")
    assert result.returncode == 0, result.output
    bundle = ws.root / "bundle"
    tag = baked["tags"][0]
    subprocess.run(["umoci", "unpack", "--rootless", "--image", f"{ws.root / 'image'}:{tag}", str(bundle)], check=True, capture_output=True)
    in_image = _tree(bundle / "rootfs" / str(installed).strip("/"))
    on_disk = _tree(installed)
    on_disk.pop("conda-meta/envkit/installed.json")
    in_image.pop("conda-meta/envkit/environment.json")
    assert in_image == on_disk  # conda-meta records included
    assert _hard_links(bundle / "rootfs" / str(installed).strip("/")) == _hard_links(installed)  # the same files one inode


def _hard_links(root: Path) -> list[list[str]]:
    """The files under `root` that are one inode (several names), each group sorted."""
    inodes: dict[tuple[int, int], list[str]] = {}
    for path in root.rglob("*"):
        st = path.lstat()
        if path.is_file() and not path.is_symlink() and st.st_nlink > 1:
            inodes.setdefault((st.st_dev, st.st_ino), []).append(path.relative_to(root).as_posix())
    return sorted(sorted(group) for group in inodes.values() if len(group) > 1)


def _assert_archive_order(image: Path, layers: dict[tuple[str, ...], str], env: str) -> None:
    """The files of `ordered` (and of the staged .tar.bz2) are in their archive's order, each after its parent directories."""
    bzipped = _layer_names(image, layers[("bzipped-1.0-0",)])
    assert [n.split(env)[-1] for n in bzipped if "/lib/" in n or "/bin/" in n] == ["/lib/b.txt", "/bin/a"]
    names = _layer_names(image, layers[("ordered-1.0-0",)])
    parents = ["/".join(env.split("/")[:i]) for i in range(1, env.count("/") + 2)]
    assert names == [
        *parents,
        f"{env}/lib",
        f"{env}/lib/zeta.txt",
        f"{env}/bin",
        f"{env}/bin/alpha",
        f"{env}/lib/sub",
        f"{env}/lib/sub/deep",
        f"{env}/lib/sub/deep/file.txt",
        f"{env}/bin/beta",
        f"{env}/share",
        f"{env}/share/small",
        f"{env}/lib/__init__.py",
        f"{env}/conda-meta",
        f"{env}/conda-meta/ordered-1.0-0.json",
    ]


def test_a_stream_that_breaks_off_keeps_no_layer_and_the_bake_goes_on(
    tmp_path: Path, stream_channel: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A read failing half-way through a streamed archive: the layer being written is dropped and the package
    # staged instead; the image is the one a bake with nothing failing gives.
    ws = locked_workspace(tmp_path / "broken", stream_channel, ["ordered", "honest"])
    real = layer_processes.streamed_members

    def breaks_off(*args: object, **kwargs: object) -> Iterator[object]:
        members = real(*args, **kwargs)  # type: ignore[arg-type]
        yield next(members)
        raise NotStreamable

    monkeypatch.setattr(layer_processes, "streamed_members", breaks_off)
    broken = _bake(ws, "--oci", ws.root / "image")
    monkeypatch.undo()
    clean_ws = locked_workspace(tmp_path / "clean", stream_channel, ["ordered", "honest"])
    clean = _bake(clean_ws, "--oci", clean_ws.root / "image")
    assert broken["image"]["digest"] == clean["image"]["digest"]
    blobs = {p.name for p in (ws.cache / "blobs").rglob("*") if p.is_file()}
    expected = {layer["digest"].split(":")[1] for layer in broken["platforms"]["linux-64"]["layers"]}
    assert expected <= blobs
    assert not [p for p in (ws.cache / "blobs").rglob("*") if p.name.startswith(".")]  # no temporary blob left


def test_a_failed_read_while_the_next_is_being_read_ends_the_bake_cleanly(
    tmp_path: Path, stream_channel: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # The first group package's read fails; the bake stops while the stager is still reading the next one, which
    # then fails too. The bake's error is the first, and the stager's thread ends without an error of its own (it
    # once died on InvalidStateError, with a traceback). The stager usually starts the next read before the bake
    # stops, but not always (then it is cancelled): the bake is repeated until it did, and each bake must end cleanly.
    calls: list[str] = []

    def fails(fetched: object, *_: object) -> None:
        calls.append(str(fetched))
        if len(calls) > 1:
            time.sleep(0.5)  # still reading when the writer has given up
        raise BakeError(f"read {len(calls)} failed", hint="free space")

    monkeypatch.setattr(bake_module, "_stream_plain", fails)  # how the stager reads a group package's .conda
    for attempt in range(5):
        calls.clear()
        caplog.clear()
        ws = locked_workspace(tmp_path / f"failing-{attempt}", stream_channel, ["honest", "ordered"])
        with caplog.at_level(logging.DEBUG):
            result = ws.envkit("bake", "-q", "-p", "linux-64", "--oci", ws.root / "image")
        assert result.returncode == 2, result.output
        assert "read 1 failed" in result.output
        assert [r.getMessage() for r in caplog.records if r.name.startswith("concurrent")] == []
        assert not (ws.root / "image").exists()
        if len(calls) == 2:
            break
    assert len(calls) == 2, "the second read never started before the bake stopped"


@pytest.mark.parametrize(
    ("entry", "data"),
    [
        # A placeholder of binary mode, or with anything besides what rattler's plain replacement reads: left to rattler.
        ({"prefix_placeholder": "/short", "file_mode": "binary"}, b"/short\x00"),  # shorter than the prefix: rattler refuses
        ({"prefix_placeholder": "/" + "p" * 60, "file_mode": "binary"}, b"#!/" + b"p" * 60 + b"/bin/sh\n"),  # a script marked binary
        ({"prefix_placeholder": "/" + "p" * 30 + "\0" + "p" * 30, "file_mode": "binary"}, b"/" + b"p" * 30),  # a NUL in it
        ({"prefix_placeholder": PLACEHOLDER}, PLACEHOLDER.encode()),
        ({"prefix_placeholder": PLACEHOLDER, "file_mode": "text", "offsets": [0]}, PLACEHOLDER.encode()),
        ({"prefix_placeholder": PLACEHOLDER, "file_mode": "unknown"}, PLACEHOLDER.encode()),
        ({"prefix_placeholder": ["not", "text"], "file_mode": "text"}, b"x"),
        ({"prefix_placeholder": "", "file_mode": "text"}, b"x"),
        # A file that would grow past what is read into memory once replaced (a one-byte placeholder).
        ({"prefix_placeholder": "/", "file_mode": "text"}, b"/" * (2 << 20)),
        # A shebang rattler rewrites: naming a prefix with a space.
        ({"prefix_placeholder": PLACEHOLDER, "file_mode": "text"}, f"#!{PLACEHOLDER}/bin/python\n".encode()),
    ],
    ids=[
        *("binary-too-short", "binary-script", "binary-nul", "no-file-mode", "offsets", "unknown-mode"),
        *("not-a-string", "empty", "growth", "space-in-shebang"),
    ],
)
@pytest.mark.parametrize("big", [False, True], ids=["read-whole", "too-big-to-read-whole"])
def test_a_placeholder_the_stream_does_not_replace_is_left_to_rattler(
    entry: dict, data: bytes, big: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A file too big to read whole: a binary one is replaced as it is read (NotPlain then comes as it is read), a
    # text one is linked.
    from conda_envkit.archive_check import ArchiveEntry
    from conda_envkit.stream_package import NotPlain, _PlainPayload

    if big:
        monkeypatch.setattr(stream_package, "MAX_REPLACED_BYTES", 0)
    paths_json = json.dumps({"paths": [_listed("bin/x", data, **entry)]}).encode()
    in_image = "opt/conda/envs/with space" if data.startswith(b"#!") else "opt/conda/envs/env"
    with pytest.raises(NotPlain):
        payload = _PlainPayload("pkg", paths_json, in_image)
        member = payload.member(ArchiveEntry("bin/x", "file", "", len(data), mode=0o755), stream=io.BytesIO(data))
        assert member is not None and member.stream is not None
        member.stream.readinto(memoryview(bytearray(len(data))))


def _replaced_as_read(data: bytes, old: bytes, new: bytes, reads: int, chunk: int, given: int) -> tuple[bytes, str]:
    """`data` read through a _ReplacingStream: the source gives at most `reads` bytes a time, the stream replaces
    `chunk` bytes a time, and its reader takes `given` bytes a time; what it gave, and its sha256_in_prefix."""

    class Source(io.BytesIO):
        def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
            return super().readinto(buffer[:reads])

    stream = stream_package._ReplacingStream("pkg", "lib/x.so", Source(data), len(data), old, new, chunk)
    out, buffer = bytearray(), memoryview(bytearray(given))
    while got := stream.readinto(buffer):
        out += buffer[:got]
    return bytes(out), stream.sha256_in_prefix()


def test_a_binary_placeholder_replaced_as_it_is_read_is_replaced_as_in_the_whole_file() -> None:
    # Strings split across reads, held until their NUL, passed on before any occurrence: whatever the read sizes,
    # the bytes of the whole-file replacement (itself compared with rattler's, below), and its size.
    import random

    old, new = LPH[:40], b"/opt/env"
    pieces = [b"\0", b"\0\0", old, old[:7], old[5:], b"/lib", b"x" * 33, new, b"tail"]
    rng = random.Random(18)
    changed = 0
    for _ in range(2000):
        data = b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 12)))
        if data.startswith(b"#!"):
            continue
        want = stream_package._cstrings_replaced(data, old, new)
        got, in_prefix = _replaced_as_read(data, old, new, rng.randint(1, 50), rng.randint(1, 60), rng.randint(1, 40))
        assert got == want and len(got) == len(data), data
        assert in_prefix == (hashlib.sha256(want).hexdigest() if want != data else "")
        changed += want != data
    assert changed > 500


def test_a_binary_placeholder_in_a_string_too_long_to_hold_is_left_to_rattler(monkeypatch: pytest.MonkeyPatch) -> None:
    # Replacing waits for a string's NUL once it holds the placeholder: a string longer than the cap is not held.
    monkeypatch.setattr(stream_package, "MAX_HELD_STRING_BYTES", 100)
    old = LPH[:40]
    assert _replaced_as_read(b"\0" + old + b"y" * 58 + b"\0", old, b"/opt/env", 7, 7, 7)[0].startswith(b"\0/opt/env")
    with pytest.raises(stream_package.NotPlain, match="too long"):
        _replaced_as_read(b"\0" + old + b"y" * 80 + b"\0", old, b"/opt/env", 7, 7, 7)
    # One not holding it is passed on as it comes, however long.
    assert _replaced_as_read(b"y" * 1000 + b"\0" + old, old, b"/o", 7, 7, 7)[0] == b"y" * 1000 + b"\0/o" + b"\0" * 38
    with pytest.raises(stream_package.NotPlain, match="cut short"):
        stream = stream_package._ReplacingStream("pkg", "lib/x.so", io.BytesIO(b"abc"), 10, old, b"/o")
        stream.readinto(memoryview(bytearray(10)))


def test_a_package_whose_replaced_files_are_too_big_to_hold_is_left_to_rattler(monkeypatch: pytest.MonkeyPatch) -> None:
    from conda_envkit.archive_check import ArchiveEntry

    monkeypatch.setattr(stream_package, "MAX_REPLACED_PACKAGE_BYTES", 40)
    data = f"prefix={PLACEHOLDER}\n".encode()  # 16 bytes once replaced: the third file passes the cap
    paths = [_listed(f"lib/{i}.pc", data, prefix_placeholder=PLACEHOLDER, file_mode="text") for i in range(3)]
    payload = stream_package._PlainPayload("pkg", json.dumps({"paths": paths}).encode(), "opt/env")
    for i in range(2):
        member = payload.member(ArchiveEntry(f"lib/{i}.pc", "file", "", len(data), mode=0o644), stream=io.BytesIO(data))
        assert member is not None and member.data == b"prefix=/opt/env\n"
    with pytest.raises(stream_package.NotPlain):
        payload.member(ArchiveEntry("lib/2.pc", "file", "", len(data), mode=0o644), stream=io.BytesIO(data))


def test_a_prefix_longer_than_a_binary_placeholder_is_a_clear_error(tmp_path: Path, stream_channel: Path) -> None:
    # The stream leaves such a file to rattler, which refuses it; the error says what to change.
    ws = locked_workspace(tmp_path / "long", stream_channel, ["binny"])
    prefix = "/" + "p" * (len(LONG_PLACEHOLDER) + 10)
    result = ws.envkit("bake", "-q", "-p", "linux-64", "--prefix", prefix, "--oci", ws.root / "image")
    assert result.returncode == 2, result.output
    assert "longer than the placeholder prefix" in result.output
    assert f"use a shorter prefix than {prefix}" in result.output
    assert f"linux-64: installing into {prefix} failed" in result.output  # the image's prefix, not a staging directory
    assert str(ws.cache) not in result.output
    assert "Traceback" not in result.output
    assert not (ws.root / "image").exists()


@pytest.mark.parametrize("large_mb", ["0", "1000"], ids=["own-layers", "group-layers"])
def test_binary_placeholder_files_too_big_to_read_whole_are_replaced_as_they_are_streamed(
    tmp_path: Path, stream_channel: Path, monkeypatch: pytest.MonkeyPatch, large_mb: str
) -> None:
    # Every binary-placeholder file counts as too big to read whole here, and is replaced 7 bytes a time as its
    # archive is read: the image is the one read-whole replacement gives (compared with `envkit install`'s tree
    # above).
    whole_ws = locked_workspace(tmp_path / "whole", stream_channel, ["binny", "honest"])
    whole = _bake(whole_ws, "--oci", whole_ws.root / "image", large_mb=large_mb)
    monkeypatch.setattr(stream_package, "MAX_REPLACED_BYTES", 0)
    monkeypatch.setattr(stream_package, "_REPLACING_CHUNK", 7)
    ws = locked_workspace(tmp_path / "streamed", stream_channel, ["binny", "honest"])
    with _streams_seen(monkeypatch) as seen:
        streamed = _bake(ws, "--oci", ws.root / "image", large_mb=large_mb)
    assert sorted(seen) == ["binny", "honest"]
    assert streamed["image"]["digest"] == whole["image"]["digest"]


def test_a_binary_placeholder_string_too_long_to_hold_while_streaming_links_its_package(
    tmp_path: Path, stream_channel: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # binny's lib/at-end.so runs from its placeholder to its end without a NUL: longer than the cap, the stream
    # gives up half-way (its layer dropped) and the package is linked, as it is when it is not streamed at all.
    monkeypatch.setattr(stream_package, "MAX_REPLACED_BYTES", 0)
    monkeypatch.setattr(stream_package, "MAX_HELD_STRING_BYTES", 64)
    monkeypatch.setattr(stream_package, "_REPLACING_CHUNK", 7)
    ws = locked_workspace(tmp_path / "capped", stream_channel, ["binny", "honest"])
    with _streams_seen(monkeypatch) as seen:
        capped = _bake(ws, "--oci", ws.root / "image")
    assert seen == ["honest"]

    def refuse(*_: object, **__: object) -> None:
        raise NotStreamable

    monkeypatch.setattr(layer_processes, "stream_package_archive", refuse)
    linked_ws = locked_workspace(tmp_path / "linked", stream_channel, ["binny", "honest"])
    linked = _bake(linked_ws, "--oci", linked_ws.root / "image")
    assert capped["image"]["digest"] == linked["image"]["digest"]
    assert not [p for p in (ws.cache / "blobs").rglob("*") if p.name.startswith(".")]  # no temporary blob left


def test_a_noarch_python_entry_point_whose_shebang_rattler_rewrites_links_its_package(
    tmp_path: Path, stream_channel: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A prefix long enough for rattler to write its entry points' `/bin/sh` exec line: pyish is linked, not
    # streamed, and the image is still `envkit install`'s tree.
    installed = tmp_path / ("p" * (110 - len(str(tmp_path)))) / "env"
    ws = locked_workspace(tmp_path / "long", stream_channel, ["python", "pyish"])
    with _streams_seen(monkeypatch) as seen:
        baked = _bake(ws, "--oci", ws.root / "image", "--prefix", str(installed))
    assert seen == ["python"]
    _assert_image_is_installed_tree(ws, baked, installed)
    assert (installed / "bin" / "pyish").read_bytes().startswith(b"#!/bin/sh\n")


def test_a_noarch_python_package_without_its_python_is_left_to_rattler(tmp_path: Path, stream_channel: Path) -> None:
    # No python in the lock: the stream does not guess where site-packages is; rattler says what is wrong.
    ws = locked_workspace(tmp_path / "nopython", stream_channel, ["pyish"])
    result = ws.envkit("bake", "-q", "-p", "linux-64", "--oci", ws.root / "image")
    assert result.returncode == 2, result.output
    assert "pyish" in result.output and "Traceback" not in result.output
    assert not (ws.root / "image").exists()


def test_a_linked_package_before_big_staged_ones_does_not_wait_for_them(tmp_path: Path) -> None:
    """Layers of their own (--large-package-mb 0): the smallest package must be linked (a hard link), and three bigger
    `.tar.bz2`s are staged after it, at most two ahead of the layer writer. Linking the first must not wait for the
    third to be staged (which waits for the writer): the bake hung there for ever. The image is the installed tree."""
    import os
    import sys

    channel = tmp_path / "channel"
    hard = HostilePackage(
        "hard",
        (Member("bin/tool", content=b"#!/bin/sh\n", mode=0o755), Member("bin/tool2", kind="hardlink", target="bin/tool")),
        tuple(
            {"_path": p, "path_type": "hardlink", "sha256": hashlib.sha256(b"#!/bin/sh\n").hexdigest(), "size_in_bytes": 10}
            for p in ("bin/tool", "bin/tool2")
        ),
    )
    big = [HostilePackage(f"plain-{n}", (Member(f"share/{n}.bin", content=bytes([i]) * (20000 * (i + 1))),)) for i, n in enumerate("abc")]
    names = []
    for package in (hard, *big):
        conda = write_hostile_package(package, channel)
        _as_tar_bz2(conda, conda.with_name(conda.name.removesuffix(".conda") + ".tar.bz2"))
        conda.unlink()
        names.append(package.name)
    asyncio.run(index_fs(channel, write_zst=False, write_shards=False, force=True))
    ws = locked_workspace(tmp_path / "work", channel, [])
    ws.rewrite(lambda document: document["package"].extend(lock_entry(channel / "noarch" / f"{n}-1.0-0.tar.bz2", n) for n in names))
    installed = tmp_path / "envs" / "linked"
    assert ws.envkit("install", "-q", "--prefix", installed, "-p", "linux-64").returncode == 0  # (its archives and infos cached)
    command = [sys.executable, "-m", "conda_envkit", "bake", "-q", "-p", "linux-64", "--oci", "image", "--prefix", str(installed)]
    command += ["--large-package-mb", "0", "--compression", "zstd", "--record", str(ws.root / "bake.json")]
    env = {**os.environ, "ENVKIT_CACHE_DIR": str(ws.cache)}
    # A subprocess with a deadline: a hang is this test's failure, not the suite's.
    baked = subprocess.run(command, cwd=ws.root, env=env, capture_output=True, text=True, timeout=60)
    assert baked.returncode == 0, baked.stderr
    zstd = json.loads((ws.root / "bake.json").read_text())
    assert [layer["packages"] for layer in zstd["platforms"]["linux-64"]["layers"][:4]] == [
        ["hard-1.0-0"],
        ["plain-a-1.0-0"],
        ["plain-b-1.0-0"],
        ["plain-c-1.0-0"],
    ]
    # (umoci reads gzip layers only: the same layers gzipped, whose tars are the zstd ones, are unpacked)
    gzip = _bake(ws, "--oci", ws.root / "image", "--prefix", str(installed), "--compression", "gzip")
    diff_ids = [[layer["diff_id"] for layer in record["platforms"]["linux-64"]["layers"]] for record in (zstd, gzip)]
    assert diff_ids[0] == diff_ids[1]
    _assert_image_is_installed_tree(ws, gzip, installed)
