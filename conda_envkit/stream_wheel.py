"""A verified wheel straight into tar members, as pypa's installer installs it: no file extracted.

`envkit install` installs a wheel with installer (conda_envkit.pip_install): its files where the
wheel's schemes put them, console scripts for its entry points, `#!python` shebangs set to the
prefix's python, INSTALLER, a new RECORD, and envkit's record `conda-meta/envkit/pip/<name>.json`.
Here installer runs the same way, once, against a destination that writes nothing (`plan_wheel`):
what it would write is noted, the wheel's files by their zip member and the hash its RECORD
declares, the few files installer makes itself (scripts, INSTALLER, RECORD) by their bytes. The
layer then reads each zip member as it is written (`wheel_members`), hashing it: a member whose
bytes are not what RECORD declared is NotPlain (the layer is dropped and the wheel installed in a
staging prefix instead, whose installer hashes what it writes). Anything installer would refuse or
do otherwise (a path out of the prefix, one given twice, a file RECORD gives no sha256 for, a name
or version that is not the lock's) is NotPlain too: the staging path says what is wrong.
tests/test_stream_layers.py holds the image to `envkit install`'s tree.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import posixpath
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from conda_envkit.oci.tarstream import FILE, Member
from conda_envkit.pip_install import (
    INSTALLER_NAME,
    PIP_RECORDS,
    WheelToInstall,
    interpreter,
    pip_record,
    record_files,
    record_rows,
    scheme_dict,
    sha256_from_record,
    site_packages,
)
from conda_envkit.safepath import UnsafePathError, check_not_records, relative_path
from conda_envkit.stream_package import NotPlain


@dataclass(frozen=True)
class WheelFile:
    """One file installer would write: where (prefix-relative), and its bytes (`data`) or the zip member holding
    them (`member`, `size` bytes whose sha256 is `digest`)."""

    path: str
    executable: bool
    size: int
    data: bytes | None = None
    member: str = ""
    digest: bytes = b""


@dataclass(frozen=True)
class WheelPlan:
    """What installing a wheel writes, in installer's order, then envkit's record of it."""

    files: tuple[WheelFile, ...]
    record_path: str
    record: bytes


def _declared(wheel: zipfile.ZipFile, record_name: str) -> dict[str, tuple[bytes, int]]:
    """The wheel's RECORD: each file's declared sha256 (bytes) and size, where it gives both."""
    out: dict[str, tuple[bytes, int]] = {}
    for path, hash_field, size in record_rows(wheel.read(record_name).decode("utf-8")):
        try:
            digest = sha256_from_record(hash_field)
        except (binascii.Error, ValueError):
            continue
        if digest is not None and len(digest) == 32 and size.isdigit():
            out[path] = (digest, int(size))
    return out


def _planning_destination() -> type:
    from installer.destinations import SchemeDictionaryDestination
    from installer.records import Hash, RecordEntry
    from installer.scripts import Script

    class PlanningDestination(SchemeDictionaryDestination):
        """installer's destination, writing nothing: it notes each file installer would write."""

        def __init__(self, prefix: str, declared: dict[str, tuple[bytes, int]], infos: dict[str, zipfile.ZipInfo], **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.prefix, self.declared, self.infos = prefix, declared, infos
            self.files: list[WheelFile] = []
            self.taken: set[str] = set()

        def write_to_fs(self, scheme: Any, path: str, stream: IO[bytes], is_executable: bool) -> Any:
            target = self._path_with_destdir(scheme, path).as_posix()  # (installer refuses a path out of its scheme)
            if not target.startswith(self.prefix + "/"):
                raise NotPlain(f"{path} would be installed outside the prefix")
            rel = check_not_records(relative_path(target[len(self.prefix) + 1 :], "wheel file"), f"wheel file {path}")
            if rel in self.taken:
                raise NotPlain(f"{rel} is written twice")
            self.taken.add(rel)
            member = getattr(stream, "name", None)
            if isinstance(stream, io.BytesIO) or member not in self.infos:
                data = stream.read()
                digest = hashlib.sha256(data).digest()
                self.files.append(WheelFile(rel, is_executable, len(data), data=data))
            else:  # a zip member as it is: read (and its hash checked) when the layer is written
                declared = self.declared.get(str(member))
                if declared is None or declared[1] != self.infos[str(member)].file_size:
                    raise NotPlain(f"{member}: the wheel's RECORD gives no sha256 and size for it")
                digest, size = declared
                self.files.append(WheelFile(rel, is_executable, size, member=str(member), digest=digest))
            value = base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")
            return RecordEntry(path, Hash(self.hash_algorithm, value), self.files[-1].size)

        def write_script(self, name: str, module: str, attr: str, section: Any) -> Any:
            script_name, data = Script(name, module, attr, section).generate(self.interpreter, self.script_kind)
            return self.write_to_fs("scripts", script_name, io.BytesIO(data), True)

    return PlanningDestination


def plan_wheel(item: WheelToInstall, in_image: str, platform: str, python_version: str) -> WheelPlan:
    """What installing `item` into `/<in_image>` writes (installer run against a destination that writes nothing);
    NotPlain where the staged install must say what is wrong, or does what this does not."""
    from installer import install
    from installer.sources import WheelFile as WheelSource
    from installer.utils import parse_metadata_file
    from packaging.utils import canonicalize_name

    prefix = "/" + in_image
    site = site_packages(platform, python_version)
    python, kind = interpreter(platform, prefix)
    try:
        with zipfile.ZipFile(item.wheel) as wheel:
            source = WheelSource(wheel)  # (installer's reader over the same zip: its directory is read once)
            metadata = parse_metadata_file(source.read_dist_info("METADATA"))
            if canonicalize_name(str(metadata.get("Name", ""))) != canonicalize_name(item.name):
                raise NotPlain(f"{item.wheel.name} holds another package")
            if str(metadata.get("Version", item.version)) != item.version:
                raise NotPlain(f"{item.wheel.name} holds another version")
            infos = {info.filename: info for info in wheel.infolist()}
            declared = _declared(wheel, posixpath.join(source.dist_info_dir, "RECORD"))
            destination = _planning_destination()(
                prefix,
                declared,
                infos,
                scheme_dict=scheme_dict(Path(prefix), platform, python_version, item.name),
                interpreter=python,
                script_kind=kind,
                bytecode_optimization_levels=(),
            )
            install(source, destination, {"INSTALLER": INSTALLER_NAME})
            dist_info = source.dist_info_dir
    except NotPlain:
        raise
    except Exception as exc:  # installer's, zipfile's and the path checks' errors: the staged install reports them
        raise NotPlain(f"{item.wheel.name}: {exc}") from None
    files: tuple[WheelFile, ...] = tuple(destination.files)
    record_rel = posixpath.join(site, dist_info, "RECORD")
    written = {f.path: f for f in files}
    if record_rel not in written or written[record_rel].data is None:
        raise NotPlain(f"{item.wheel.name}: no RECORD written")
    record_data = written[record_rel].data

    def digest_of(rel: str) -> str:
        if rel != record_rel:
            raise NotPlain(f"{item.wheel.name}: {rel} has no hash in the RECORD written")
        return hashlib.sha256(record_data).hexdigest()  # type: ignore[arg-type]

    try:
        listed = record_files(record_data.decode("utf-8"), site, dist_info, digest_of)  # type: ignore[union-attr]
    except (UnsafePathError, UnicodeDecodeError, ValueError) as exc:
        raise NotPlain(f"{item.wheel.name}: {exc}") from None
    record_path = (PIP_RECORDS / f"{item.name}.json").as_posix()
    relative_path(record_path, "pip record")
    return WheelPlan(files, record_path, pip_record(item, site, dist_info, listed))


class _CheckedMember:
    """A zip member's bytes as the layer writer reads them, hashed: `finish` reads to its end (zipfile checks its
    CRC there) and raises NotPlain if they are not what the wheel's RECORD declared. A member zipfile cannot read
    (cut short, a bad CRC, broken deflate data) is NotPlain as it is read: installer then says what is wrong."""

    def __init__(self, stream: IO[bytes], expected: WheelFile) -> None:
        self.stream, self.expected, self.left = stream, expected, expected.size
        self.hash = hashlib.sha256()

    def readinto(self, buffer: memoryview) -> int:
        try:
            got = int(self.stream.readinto(buffer[: self.left]))  # type: ignore[attr-defined]
        except (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError) as exc:
            raise NotPlain(f"{self.expected.member}: {exc}") from None
        if not got and self.left:
            raise NotPlain(f"{self.expected.member} is cut short")
        self.hash.update(buffer[:got])
        self.left -= got
        return got

    def finish(self) -> None:
        try:
            more = self.stream.read(1)
        except (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError) as exc:
            raise NotPlain(f"{self.expected.member}: {exc}") from None
        if more or self.left or self.hash.digest() != self.expected.digest:
            raise NotPlain(f"{self.expected.member} is not what the wheel's RECORD says")


def wheel_members(plan: WheelPlan, wheel: Path, in_image: str) -> Iterator[Member]:
    """The files of `plan` as layer members in installer's order, each zip member read (and checked) as the layer
    writer copies it, then envkit's record. NotPlain (once its member is written) for a file that is not what
    the wheel declared."""
    with zipfile.ZipFile(wheel) as archive:
        for file in plan.files:
            mode = 0o755 if file.executable else 0o644
            if file.data is not None:
                yield Member(f"{in_image}/{file.path}", FILE, mode, file.size, data=file.data)
                continue
            try:
                with archive.open(file.member) as raw:
                    checked = _CheckedMember(raw, file)
                    yield Member(f"{in_image}/{file.path}", FILE, mode, file.size, stream=checked)  # type: ignore[arg-type]
                    checked.finish()
            except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
                raise NotPlain(f"{wheel.name}: {file.member}: {exc}") from None
    yield Member(f"{in_image}/{plan.record_path}", FILE, 0o644, len(plan.record), data=plan.record)
