"""Every command over every malformed input file (issue 15, "done when").

Each command that reads a file the user names gets each malformed file in turn and
must: exit 2 (the README's code for bad input), print exactly one `error:` line that
names the file, print no traceback, and write nothing (no output, no temp file).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import run_envkit, write_env


def _bomb() -> bytes:
    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for previous, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [{', '.join([f'*{previous}'] * 9)}]")
    return ("\n".join(lines) + "\n").encode()


MALFORMED: dict[str, Callable[[Path], None]] = {
    "non-utf8": lambda p: p.write_bytes(b"version: 1\nname: caf\xe9\n"),
    "duplicate-keys": lambda p: p.write_bytes(b"version: 1\nchannels: [a]\nchannels: [b]\ndependencies: [x]\n"),
    "deep": lambda p: p.write_bytes(b"x: " + b"[" * 50_000 + b"]" * 50_000 + b"\n"),
    "alias-bomb": lambda p: p.write_bytes(_bomb()),
    "dev-zero": lambda p: p.symlink_to("/dev/zero"),
    "directory": lambda p: p.mkdir(),
    "empty": lambda p: p.write_bytes(b""),
    "scalar": lambda p: p.write_bytes(b"just a string\n"),
    "list": lambda p: p.write_bytes(b"- a\n- b\n"),
    "binary": lambda p: p.write_bytes(bytes(range(256)) * 4),
    "two-documents": lambda p: p.write_bytes(b"version: 1\n---\nversion: 2\n"),
    "bad-syntax": lambda p: p.write_bytes(b"version: [1\nchannels: {\n"),
}

GOOD_ENV = "channels: [conda-forge]\ndependencies:\n  - python\n"

# (command line with F for the malformed file, whether a good environment.yml is present)
COMMANDS: dict[str, tuple[str, ...]] = {
    "lock -f": ("lock", "-f", "F"),
    "lock --config": ("lock", "--config", "F"),
    "lock --virtual-package-spec": ("lock", "--virtual-package-spec", "F"),
    "lock --check": ("lock", "--check", "--lockfile", "F"),
    "hash": ("hash", "--lockfile", "F"),
    "render": ("render", "--lockfile", "F", "-p", "linux-64", "-o", "out.txt"),
    "install": ("install", "--lockfile", "F", "-p", "linux-64", "--prefix", "env"),
    "verify": ("verify", "--lockfile", "F", "-p", "linux-64", "--prefix", "."),
    "export": ("export", "--lockfile", "F", "--to", "json", "-o", "out.json"),
    "diff": ("diff", "F", "F"),
    "dockerfile": ("dockerfile", "--lockfile", "F", "--recipe", "scratch", "-o", "ctx"),
    "bake": ("bake", "--lockfile", "F", "--oci", "img"),
    "recipes": ("recipes", "--recipe-dir", "recipes"),
}


# An empty config or recipe is a valid one (every key is optional).
VALID = {("lock --config", "empty"), ("recipes", "empty")}


@pytest.mark.parametrize("kind", sorted(MALFORMED))
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_refuses_every_malformed_file(tmp_path: Path, command: str, kind: str) -> None:
    if (command, kind) in VALID:
        pytest.skip("an empty file is a valid one here")
    work = tmp_path / "work"
    write_env(work, GOOD_ENV)
    bad = work / "bad.yml"
    if command == "recipes":
        (work / "recipes" / "broken").mkdir(parents=True)
        bad = work / "recipes" / "broken" / "recipe.yml"
    MALFORMED[kind](bad)
    before = sorted(p.relative_to(work) for p in work.rglob("*"))
    args = [bad.name if a == "F" else a for a in COMMANDS[command]]
    result = run_envkit(*args, cwd=work, env={"ENVKIT_CACHE_DIR": str(tmp_path / "cache")})  # asserts no traceback
    assert result.returncode == 2, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    assert bad.name in errors[0], errors[0]
    assert sorted(p.relative_to(work) for p in work.rglob("*")) == before  # nothing written, no temp file
