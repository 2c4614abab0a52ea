"""Outputs built from lock values (issue 14 item 12, output part): a newline, a pipe or a
backtick in a lock value cannot forge an @EXPLICIT line, a markdown row or a step output.
Records are built directly where the lock parser would already refuse the value."""

from __future__ import annotations

from pathlib import Path

import pytest

from conda_envkit.errors import EnvkitError
from conda_envkit.lockdiff import PackageChange, render_markdown
from conda_envkit.lockfile import read_lockfile, render_explicit
from conda_envkit.output_safety import github_output
from tests.hostile.conftest import locked_workspace, with_package

EVIL = "https://evil.example/trojan-1.0-0.conda"


@pytest.mark.parametrize(
    "field,value,kind",
    [
        ("url", f"file:///x/honest-1.0-0.conda#0\n{EVIL}", "md5"),
        ("url", f"file:///x/honest-1.0-0.conda {EVIL}", "md5"),
        ("url", f"file:///x/honest-1.0-0.conda\r{EVIL}", "sha256"),
        ("md5", f"0123456789abcdef0123456789abcdef\n{EVIL}#0123456789abcdef0123456789abcdef", "md5"),
        ("md5", "not-hex", "md5"),
        ("sha256", "a" * 64 + f"\n{EVIL}", "sha256"),
    ],
)
def test_explicit_render_cannot_gain_a_package_line(tmp_path: Path, hostile_channel: Path, field: str, value: str, kind: str) -> None:
    ws = locked_workspace(tmp_path / "work", hostile_channel, ["honest"])
    lock = with_package(read_lockfile(ws.lock), "honest", **{field: value})
    with pytest.raises(EnvkitError) as info:
        render_explicit(lock, "linux-64", kind)
    assert "honest" in str(info.value)


def test_explicit_render_of_a_crafted_lock_file_writes_no_forged_line(tmp_path: Path, hostile_channel: Path) -> None:
    ws = locked_workspace(tmp_path / "work", hostile_channel, ["honest"])
    ws.rewrite(lambda d: d["package"][0].update(url=d["package"][0]["url"] + f"#{'0' * 32}\n{EVIL}"))
    result = ws.envkit("render", "--kind", "explicit", "-p", "linux-64")
    assert result.returncode == 2, result.output
    assert EVIL not in result.stdout


def test_explicit_render_of_a_lock_chaining_thousands_of_packages_lists_each_after_its_dependencies(tmp_path: Path) -> None:
    # Before: RecursionError: maximum recursion depth exceeded, a traceback (the order was a recursive walk).
    import yaml

    from tests.conftest import run_envkit

    names = [f"p{i:05d}" for i in range(3000)]
    entries = [
        {
            "name": name,
            "version": "1.0",
            "manager": "conda",
            "platform": "linux-64",
            "dependencies": {names[(i + 1) % len(names)]: ">=1"},  # and the last on the first: a cycle
            "url": f"https://conda.example/c/linux-64/{name}-1.0-0.conda",
            "hash": {"md5": "0" * 32, "sha256": "0" * 64},
            "build": "0",
            "category": "main",
            "optional": False,
        }
        for i, name in enumerate(names)
    ]
    metadata = {"content_hash": {"linux-64": "0" * 64}, "channels": [{"url": "https://conda.example/c", "used_env_vars": []}]}
    metadata |= {"platforms": ["linux-64"], "sources": ["environment.yml"]}
    (tmp_path / "conda-lock.yml").write_text(yaml.safe_dump({"version": 1, "metadata": metadata, "package": entries}))
    result = run_envkit("render", "-p", "linux-64", cwd=tmp_path)
    assert result.returncode == 0, result.output
    listed = [line.rpartition("/")[2].partition("-")[0] for line in result.stdout.splitlines() if line.startswith("https://")]
    assert listed == names[::-1]  # the walk from p00000 ends where the cycle comes back to it


def _table_rows(markdown: str) -> list[str]:
    return [line for line in markdown.splitlines() if line.startswith("|")]


@pytest.mark.parametrize(
    "name",
    [
        "x | upgraded | 1 | 2 | yes |\n| `numpy` | removed | 1.26 |  |  |",
        "x` | forged | row | here |`",
        "[click me](https://evil.example)",
        "<img src=x onerror=alert(1)>",
        "a\r\n| b | c | d | e | f |",
    ],
)
def test_diff_markdown_cannot_gain_a_row(name: str) -> None:
    change = PackageChange("linux-64", "conda", name, "upgraded", "1.0 0", "2.0 0", False)
    text = render_markdown([change], "old.yml", "new.yml")
    rows = _table_rows(text)
    assert len(rows) == 3, text  # header, separator, one package
    assert rows[2].count(" | ") == 4, rows[2]  # five cells
    assert "<img" not in text and "](" not in text


def _parse_github_output(text: str) -> dict[str, str]:
    """GitHub's reading of $GITHUB_OUTPUT: `k=v` lines and `k<<DELIM` … `DELIM` blocks."""
    out, lines = {}, text.split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            key, delimiter = line.split("<<", 1)
            end = lines.index(delimiter, i + 1)
            out[key] = "\n".join(lines[i + 1 : end])
            i = end + 1
            continue
        if "=" in line:
            key, value = line.split("=", 1)
            out[key] = value
        i += 1
    return out


def test_github_output_value_cannot_add_an_output(tmp_path: Path, hostile_channel: Path) -> None:
    ws = locked_workspace(tmp_path / "work", hostile_channel, ["honest"])
    forged = "none\nimage_digest=sha256:" + "f" * 64
    ws.rewrite(lambda d: d["metadata"]["custom_metadata"].update({"envkit.linux-64.cuda": forged}))
    target = tmp_path / "github_output"
    result = ws.envkit("export", "--lockfile", ws.lock, "--to", "github", env={"GITHUB_OUTPUT": str(target)})
    if result.returncode == 0:
        outputs = _parse_github_output(target.read_text())
        assert "image_digest" not in outputs
        assert outputs["cuda"] == forged
    else:
        assert result.returncode == 2 and not (target.exists() and "image_digest" in target.read_text())


@pytest.mark.parametrize("key", ["a=b", "a\nb", "a<<b", ""])
def test_github_output_names_are_plain(key: str) -> None:
    with pytest.raises(EnvkitError):
        github_output(key, "v")


@pytest.mark.parametrize("where", ["a directory", "in a missing directory", "under a file", "a FIFO nobody reads", "a full disk"])
def test_a_github_output_that_cannot_be_written_is_an_error_naming_it(tmp_path: Path, hostile_channel: Path, where: str) -> None:
    # A stale $GITHUB_OUTPUT (a self-hosted runner, `act`): one error line naming it, exit 2 (it was a traceback, or a hang).
    import os

    from tests.hostile.conftest import assert_refused

    ws = locked_workspace(tmp_path / "work", hostile_channel, ["honest"])
    (tmp_path / "file").write_text("")
    target = {
        "a directory": tmp_path,
        "in a missing directory": tmp_path / "missing" / "out",
        "under a file": tmp_path / "file" / "out",
        "a FIFO nobody reads": tmp_path / "fifo",
        "a full disk": Path("/dev/full"),  # (its write fails as the file is flushed on closing: it named no file)
    }[where]
    if where.endswith("nobody reads"):
        os.mkfifo(target)
    result = ws.envkit("export", "--lockfile", ws.lock, "--to", "github", env={"GITHUB_OUTPUT": str(target)})
    assert_refused(result, f"{target}: ")
    if where == "a full disk":
        assert "cannot write step outputs file (No space left on device)" in result.stderr, result.stderr
    else:
        assert "$GITHUB_OUTPUT" in result.stderr or where.endswith("nobody reads"), result.stderr
