"""Hostile lock files: every field is checked against its grammar when the lock is read.

A lock comes from a pull request, an image or a download as often as from `envkit lock`. Each
mutation below must be refused by a command that only reads the lock (`envkit hash`) with exit
2, naming the file, the line and the entry, before anything is fetched or trusted; and
`lock --check` must judge a lock by its content, never by its `content_hash` alone.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import run_envkit, write_env


@pytest.fixture(scope="module")
def locked(tmp_path_factory: pytest.TempPathFactory, toy_channel: Path) -> Path:
    work = tmp_path_factory.mktemp("hostile-lock")
    deps = "dependencies:\n  - python=3.11\n  - numpy=2.0\n  - hello\n"
    write_env(work, f"channels: [{toy_channel.as_uri()}]\nplatforms: [linux-64]\n{deps}")
    result = run_envkit("lock", "-q", cwd=work)
    assert result.returncode == 0, result.output
    return work


def _line_of(text: str, needle: str) -> int:
    return text[: text.index(needle)].count("\n") + 1


def _entry(text: str, name: str) -> tuple[int, int]:
    """(start, end) offsets of package `name`'s entry."""
    start = text.index(f"- name: {name}\n")
    nxt = text.find("\n- name: ", start + 1)
    return start, (nxt + 1 if nxt != -1 else len(text))


def _edit_entry(text: str, name: str, old: str, new: str) -> str:
    start, end = _entry(text, name)
    block = text[start:end]
    assert old in block, (old, block)
    return text[:start] + block.replace(old, new, 1) + text[end:]


def _refused(work: Path, text: str | bytes, *needles: str) -> str:
    lock = work / "hostile.yml"
    lock.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    result = run_envkit("hash", "--lockfile", lock.name, cwd=work)
    assert result.returncode == 2, result.output
    assert result.stderr.startswith(f"error: {lock.name}:"), result.stderr
    for needle in needles:
        assert needle in result.stderr, (needle, result.stderr)
    return result.stderr


def _numpy_sha(text: str) -> str:
    start, end = _entry(text, "numpy")
    return re.search(r"sha256: ([0-9a-f]{64})", text[start:end]).group(1)  # type: ignore[union-attr]


def test_the_lock_itself_reads(locked: Path) -> None:
    assert run_envkit("hash", cwd=locked).returncode == 0


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("manager: conda", "manager: npm", "manager 'npm' is neither conda nor pip"),
        ("name: numpy", "name: 'numpy; rm -rf /'", "invalid conda package name"),
        ("version: 2.0.1", "version: 2.0.1 || true", "invalid version"),
        ("version: 2.0.1", "version: 2.0.2", "is not numpy 2.0.2"),
        ("build: py311_0", "build: py312_0", "build 'py312_0' differs from the URL's 'py311_0'"),
        ("md5: ", "md5: zz", "is not 32 hex digits"),
        ("sha256: ", "sha256: 00", "is not 64 hex digits"),
        ("url: file://", "url: ftp://", "has scheme 'ftp'"),
        ("url: file://", "url: data:text/plain,", "has scheme 'data'"),
        ("url: file://", "url: //server/share", "has scheme 'none'"),  # a UNC-like path, no scheme
        ("url: file://", "url: javascript://x", "has scheme 'javascript'"),
        ("url: file://", "url: https://${HOST}.example", "outside a credential position"),
        (".conda\n", ".conda?x=../../a\n", "has a query or fragment"),  # (bake took the file name 'a': a traceback)
        ("url: file://", "url: https://u@evil.example\\@", "holds a backslash"),  # (judged for one host, sent to another)
        ("platform: linux-64", "platform: linux-65", "is not in metadata.platforms"),
        ("  category: main\n", "  category: main\n  evil: true\n", "unknown key 'evil'"),
    ],
)
def test_a_field_outside_its_grammar_is_refused(locked: Path, old: str, new: str, message: str) -> None:
    text = (locked / "conda-lock.yml").read_text()
    edited = _edit_entry(text, "numpy", old, new)
    stderr = _refused(locked, edited, message)
    assert "numpy" in stderr


def test_control_characters_and_line_breaks_are_refused_everywhere(locked: Path) -> None:
    text = (locked / "conda-lock.yml").read_text()
    _refused(locked, _edit_entry(text, "numpy", "version: 2.0.1", 'version: "2.0.1\\nrm"'), "control character or line break")
    start, end = _entry(text, "hello")
    url = re.search(r"url: (\S+)", text[start:end]).group(1)  # type: ignore[union-attr]
    _refused(locked, _edit_entry(text, "hello", f"url: {url}", f'url: "{url}\\u0007"'), "control character")
    custom = text.replace("envkit.variant: default", 'envkit.variant: "default\\r\\n"')
    _refused(locked, custom, "metadata.custom_metadata.envkit.variant", "control character")


def test_duplicate_keys_and_entries_are_refused(locked: Path) -> None:
    text = (locked / "conda-lock.yml").read_text()
    sha = _numpy_sha(text)
    twice = _edit_entry(text, "numpy", f"sha256: {sha}\n", f"sha256: {sha}\n    sha256: {'0' * 64}\n")
    line = _line_of(twice, f"    sha256: {'0' * 64}")
    _refused(locked, twice, f"hostile.yml:{line}:", "duplicate key 'sha256'")

    start, end = _entry(text, "numpy")
    doubled = text[:end] + text[start:end] + text[end:]
    _refused(locked, doubled, "package 'numpy' (linux-64, conda) is listed twice")


def test_non_utf8_bytes_and_yaml_tricks_are_refused(locked: Path) -> None:
    text = (locked / "conda-lock.yml").read_text()
    latin1 = text.replace("envkit.variant: default", "envkit.variant: d\xe9faut").encode("latin-1")
    _refused(locked, latin1, "not UTF-8", "hostile.yml:")
    aliased = _edit_entry(text, "hello", "  dependencies:\n", "  dependencies: &deps\n")
    start, end = _entry(aliased, "numpy")
    aliased = aliased[:start] + re.sub(r"  dependencies:\n(    .*\n)+", "  dependencies: *deps\n", aliased[start:end]) + aliased[end:]
    _refused(locked, aliased, "aliases")
    _refused(locked, "version: 2\nmetadata: {}\npackage: []\n", "unsupported lock file version '2'")
    # Deep nesting: PyYAML's composer would recurse in C until the interpreter crashes.
    _refused(locked, "version: 1\nmetadata: " + "[" * 200_000 + "]" * 200_000 + "\n", "nested deeper than 32 levels")
    _refused(locked, "- " * 200_000 + "x\n", "nested deeper than 32 levels")
    _refused(locked, "".join(" " * i + f"k{i}:\n" for i in range(3000)) + " " * 3000 + "x\n", "nested deeper than 32 levels")
    _refused(locked, "version: 1\n---\nversion: 1\n", "another document")
    _refused(locked, "- just\n- a list\n", "not a conda-lock file")


def test_channels_are_names_or_urls(locked: Path) -> None:
    text = (locked / "conda-lock.yml").read_text()
    channel = re.search(r"- url: (\S+)", text).group(1)  # type: ignore[union-attr]
    _refused(locked, text.replace(f"- url: {channel}", "- url: 'gopher://x/y'"), "has scheme 'gopher'")
    _refused(locked, text.replace(f"- url: {channel}", "- url: 'conda forge; curl x'"), "neither a channel name nor a URL")
    _refused(locked, text.replace("used_env_vars: []", "used_env_vars: ['A;B']", 1), "not an environment variable name")


def test_names_and_file_names_have_length_limits(locked: Path) -> None:
    text = (locked / "conda-lock.yml").read_text()
    long_name = "a" * 300
    _refused(locked, _edit_entry(text, "numpy", "name: numpy", f"name: {long_name}"), "invalid conda package name")
    start, end = _entry(text, "numpy")
    url = re.search(r"url: (\S+)", text[start:end]).group(1)  # type: ignore[union-attr]
    long_file = url.rsplit("/", 1)[0] + "/numpy-2.0.1-" + "b" * 300 + ".conda"
    _refused(locked, _edit_entry(text, "numpy", f"url: {url}", f"url: {long_file}"), "no usable file name")


def test_a_huge_value_makes_a_short_error(locked: Path) -> None:
    # A 20 MB build string: refused naming the entry, in a message a terminal or CI log can show.
    text = (locked / "conda-lock.yml").read_text()
    start, end = _entry(text, "numpy")
    build = re.search(r"build: (\S+)", text[start:end]).group(1)  # type: ignore[union-attr]
    stderr = _refused(locked, _edit_entry(text, "numpy", f"build: {build}", f"build: {build}{'x' * 20_000_000}"), "package 'numpy'")
    assert len(stderr) < 20_000, len(stderr)
    assert "characters left out" in stderr


def test_check_does_not_trust_the_content_hash(locked: Path, toy_channel: Path) -> None:
    """A PR that swaps a package but keeps `content_hash` is stale."""
    text = (locked / "conda-lock.yml").read_text()
    # numpy 1.26.4 instead of 2.0.1: a real file of the channel, with its real hashes.
    other = next((toy_channel / "linux-64").glob("numpy-1.26.4-py311_0.conda"))
    import hashlib

    data = other.read_bytes()
    start, end = _entry(text, "numpy")
    block = text[start:end]
    block = re.sub(r"version: \S+", "version: 1.26.4", block, count=1)
    block = re.sub(r"numpy-2\.0\.1-py311_0\.conda", "numpy-1.26.4-py311_0.conda", block)
    block = re.sub(r"md5: \S+", f"md5: {hashlib.md5(data).hexdigest()}", block)
    block = re.sub(r"sha256: \S+", f"sha256: {hashlib.sha256(data).hexdigest()}", block)
    work = locked / "swap"
    work.mkdir(exist_ok=True)
    (work / "environment.yml").write_text((locked / "environment.yml").read_text())
    (work / "conda-lock.yml").write_text(text[:start] + block + text[end:])
    result = run_envkit("lock", "--check", cwd=work)
    assert result.returncode == 1, result.output
    assert "'numpy=2.0' (environment.yml:5) is not satisfied by locked numpy 1.26.4" in result.stderr

    # The same file from somewhere else (same name, version, build and hashes): stale too.
    moved_text = _edit_entry(text, "numpy", f"url: {toy_channel.as_uri()}/", "url: https://evil.example/toy/")
    (work / "conda-lock.yml").write_text(moved_text)
    moved = run_envkit("lock", "--check", cwd=work)
    assert moved.returncode == 1, moved.output
    assert "which is not under a locked channel" in moved.stderr


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        # A relock solves again under what the lock records: a package passed off as a virtual one removed openssl
        # from the next solve; values no BLAS or version has crashed it (tracebacks) or were written back.
        (lambda t: re.sub(r"(envkit\.linux-64\.virtual-packages: )", r"\1openssl=3.9.0=0 ", t), "virtual-packages: 'openssl=3.9.0=0"),
        (lambda t: re.sub(r"(envkit\.linux-64\.virtual-packages: )", r"\1__glibc ", t), "virtual-packages: '__glibc"),
        (lambda t: re.sub(r"envkit\.linux-64\.blas-requested: \w+", "envkit.linux-64.blas-requested: foo", t), "blas-requested: 'foo'"),
        (lambda t: re.sub(r"envkit\.linux-64\.cuda: \S+", "envkit.linux-64.cuda: abc", t), "envkit.linux-64.cuda: 'abc'"),
        # A content_hash without a listed platform: `lock -p` kept it and wrote a lock it could not read again.
        (lambda t: re.sub(r"content_hash:\n    linux-64: \w+\n", "content_hash: {}\n", t), "metadata.content_hash names no platform"),
    ],
)
def test_what_a_relock_solves_under_is_in_the_form_envkit_writes(locked: Path, edit, message: str) -> None:  # type: ignore[no-untyped-def]
    text = (locked / "conda-lock.yml").read_text()
    edited = edit(text)
    assert edited != text
    _refused(locked, edited, message)


def test_the_blas_a_lock_may_record_are_the_ones_envkit_knows() -> None:
    from conda_envkit.lockmodel import _FACT_FORMS
    from conda_envkit.platforms import Blas

    assert {b.value for b in Blas if re.fullmatch(_FACT_FORMS["blas"], b.value)} == {b.value for b in Blas} - {"any"}
    assert all(re.fullmatch(_FACT_FORMS["blas-requested"], b.value) for b in Blas)
