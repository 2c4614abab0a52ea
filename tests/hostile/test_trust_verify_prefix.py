"""envkit verify --prefix against the lock, not conda-meta (issue 14 item 10): every tampering of
an installed prefix is a finding naming the path, including changes that rewrite the records too."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from conda_envkit.testing.hostile_packages import RawWheel, write_raw_wheel
from tests.hostile.conftest import Workspace, locked_workspace

SITE = "lib/python3.11/site-packages"


def _installed(tmp_path: Path, channel: Path) -> Workspace:
    ws = locked_workspace(tmp_path / "work", channel, ["python", "honest", "linky"])
    wheel = write_raw_wheel(RawWheel("goodwheel", "1.0", (("goodwheel/__init__.py", b"GOOD = True\n"),)), tmp_path / "wheels")
    ws.add_wheel(wheel, "goodwheel", "1.0")
    result = ws.install()
    assert result.returncode == 0, result.output
    return ws


def _findings(ws: Workspace) -> tuple[int, list[dict]]:
    result = ws.envkit("verify", "--prefix", "env", "-p", "linux-64", "--json")
    assert result.returncode in (0, 1), result.output
    return result.returncode, json.loads(result.stdout)["findings"]


def _rewrite_record(env: Path, pattern: str, path: str, new_sha: str) -> None:
    record_path = next(env.glob(pattern))
    record = json.loads(record_path.read_text())
    entries = (record.get("paths_data") or {}).get("paths", []) if "paths_data" in record else record["files"]
    for entry in entries:
        if entry["_path"] == path:
            entry["sha256"] = new_sha
            entry.pop("sha256_in_prefix", None)
    record_path.write_text(json.dumps(record))


def _trojan_with_record(env: Path) -> None:
    data = b"#!/bin/sh\necho pwned\n"
    (env / "bin/honest").write_bytes(data)
    _rewrite_record(env, "conda-meta/honest-*.json", "bin/honest", hashlib.sha256(data).hexdigest())


def _trojan_wheel_with_record(env: Path) -> None:
    data = b"GOOD = False\n"
    (env / SITE / "goodwheel/__init__.py").write_bytes(data)
    _rewrite_record(env, "conda-meta/envkit/pip/goodwheel.json", f"{SITE}/goodwheel/__init__.py", hashlib.sha256(data).hexdigest())


def _dir_to_symlink(env: Path) -> None:
    shutil.rmtree(env / SITE / "linky")
    (env / SITE / "linky").symlink_to("/tmp")


def _chmod(path: str, add: int) -> Callable[[Path], None]:
    return lambda env: os.chmod(env / path, stat.S_IMODE(os.lstat(env / path).st_mode) | add)


def _write(path: str, text: str = "import os\n") -> Callable[[Path], None]:
    def tamper(env: Path) -> None:
        (env / path).parent.mkdir(parents=True, exist_ok=True)
        (env / path).write_text(text)

    return tamper


def _retarget(env: Path) -> None:
    (env / "bin/linky").unlink()
    (env / "bin/linky").symlink_to("/bin/sh")


TAMPERING: dict[str, tuple[Callable[[Path], None], str, str]] = {
    "retargeted-symlink": (_retarget, "retargeted-symlink", "bin/linky"),
    "package-dir-replaced-by-symlink": (_dir_to_symlink, "replaced-path", f"{SITE}/linky"),
    "setuid": (_chmod("bin/honest", stat.S_ISUID), "unsafe-mode", "bin/honest"),
    "world-writable": (_chmod("bin/honest", stat.S_IWOTH), "unsafe-mode", "bin/honest"),
    "world-writable-dir": (_chmod("bin", stat.S_IWOTH), "unsafe-mode", "bin"),
    "sitecustomize": (_write(f"{SITE}/sitecustomize.py"), "unowned-file", f"{SITE}/sitecustomize.py"),
    "pth": (_write(f"{SITE}/zzz-evil.pth", "import evil\n"), "unowned-file", f"{SITE}/zzz-evil.pth"),
    "shadowing-package": (_write(f"{SITE}/honest/__init__.py"), "unowned-file", f"{SITE}/honest"),
    "activate-d": (_write("etc/conda/activate.d/evil.sh", "export LD_PRELOAD=/x\n"), "unowned-file", "etc"),
    "condarc": (_write(".condarc", "channels: [evil]\n"), "unowned-file", ".condarc"),
    "extra-binary": (_write("bin/python3", "#!/bin/sh\n"), "unowned-file", "bin/python3"),
    # (named as the distribution pip or another tool installed, its dist-info given)
    "hand-installed-dist": (_write(f"{SITE}/evil-1.0.dist-info/METADATA", "Name: evil\n"), "extra-package", f"{SITE}/evil-1.0.dist-info"),
    "file-and-conda-meta": (_trojan_with_record, "modified-file", "bin/honest"),
    "wheel-file-and-pip-record": (_trojan_wheel_with_record, "modified-file", f"{SITE}/goodwheel/__init__.py"),
    "lock-copy-replaced": (_write("conda-meta/envkit/conda-lock.yml", "version: 1\n"), "modified-file", "conda-meta/envkit/conda-lock.yml"),
    "exec-bit": (_chmod(f"{SITE}/linky/__init__.py", 0o111), "changed-mode", f"{SITE}/linky/__init__.py"),
    "stale-pyc": (_write(f"{SITE}/linky/__pycache__/evil.cpython-311.pyc", "x"), "unowned-file", f"{SITE}/linky/__pycache__"),
}


def test_untouched_prefix_matches_its_lock(tmp_path: Path, hostile_channel: Path) -> None:
    ws = _installed(tmp_path, hostile_channel)
    # Bytecode Python writes next to an owned module is not a finding.
    _write(f"{SITE}/linky/__pycache__/__init__.cpython-311.pyc", "bytecode")(ws.root / "env")
    code, findings = _findings(ws)
    assert (code, findings) == (0, [])


@pytest.mark.parametrize("case", sorted(TAMPERING))
def test_tampered_prefix_is_a_finding(tmp_path: Path, hostile_channel: Path, case: str) -> None:
    tamper, kind, path = TAMPERING[case]
    ws = _installed(tmp_path, hostile_channel)
    tamper(ws.root / "env")
    code, findings = _findings(ws)
    assert code == 1
    assert any(f["kind"] == kind and (f["detail"].startswith(path) or f"({path})" in f["detail"]) for f in findings), findings


def _spoil_conda_record(env: Path, how: str) -> Path:
    record = next(env.glob("conda-meta/honest-*.json"))
    data = json.loads(record.read_text())
    if how == "a-list":
        record.write_text("[1]\n")
    elif how == "a-directory":
        record.unlink()
        record.mkdir()
    elif how == "dev-zero":
        record.unlink()
        record.symlink_to("/dev/zero")
    elif how == "paths-a-string":
        data["paths_data"] = {"paths": "bin/honest"}
        record.write_text(json.dumps(data))
    elif how == "path-climbs":
        data["paths_data"]["paths"][0]["_path"] = "../../../etc/shadow"
        record.write_text(json.dumps(data))
    return record


SPOILED_RECORDS = {
    "a-list": "not a package record",
    "a-directory": "package record is a directory",
    "dev-zero": "package record is not a regular file or a pipe",
    "paths-a-string": "the record's file list is malformed",
    "path-climbs": "'../../../etc/shadow' leaves its root",
}


@pytest.mark.parametrize("how", sorted(SPOILED_RECORDS))
def test_a_spoiled_record_is_an_error_naming_it(tmp_path: Path, hostile_channel: Path, how: str) -> None:
    # The prefix is what is under suspicion: its records are read like hostile input (a traceback,
    # or for /dev/zero all the memory, before).
    ws = _installed(tmp_path, hostile_channel)
    record = _spoil_conda_record(ws.root / "env", how)
    result = ws.envkit("verify", "--prefix", "env", "-p", "linux-64")
    assert result.returncode == 2, result.output
    assert "Traceback" not in result.stderr
    assert f"error: env/conda-meta/{record.name}" in result.stderr and SPOILED_RECORDS[how] in result.stderr, result.stderr
