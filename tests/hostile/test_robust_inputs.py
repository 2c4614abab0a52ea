"""Input files read once, as UTF-8 within a size cap, and YAML loaded strictly (issue 15)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conda_envkit.inputs import (
    MAX_YAML_DEPTH,
    DuplicateKey,
    InputText,
    InputTooLarge,
    InvalidYaml,
    NotUtf8,
    UnreadableInput,
    YamlLimitExceeded,
    compose_yaml,
    load_yaml,
    read_input,
)
from tests.conftest import run_envkit, write_env


def _bomb() -> str:
    # billion laughs: 9 ** 9 strings from a few hundred bytes
    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    previous = "a"
    for name in "bcdefghi":
        lines.append(f"{name}: &{name} [{', '.join([f'*{previous}'] * 9)}]")
        previous = name
    return "\n".join(lines) + "\n"


def _deep(depth: int) -> str:
    return "x: " + "[" * depth + "]" * depth + "\n"


def text(body: str, name: str = "in.yml") -> InputText:
    return InputText(name, body, None)


# -- read_input ---------------------------------------------------------------------


def test_symlink_to_dev_zero_is_refused(tmp_path: Path) -> None:
    link = tmp_path / "environment.yml"
    link.symlink_to("/dev/zero")
    with pytest.raises(UnreadableInput, match="environment.yml: environment file is not a regular file or a pipe"):
        read_input(link, "environment file")


def test_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UnreadableInput, match="is a directory"):
        read_input(tmp_path, "config file")


def test_size_cap_names_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "big.yml"
    path.write_bytes(b"a" * 2048)
    with pytest.raises(InputTooLarge, match=r"big.yml: file is larger than the 1024 bytes limit"):
        read_input(path, max_bytes=1024)
    assert read_input(path, max_bytes=2048).text == "a" * 2048


def test_non_utf8_names_line_and_offset(tmp_path: Path) -> None:
    path = tmp_path / "environment.yml"
    path.write_bytes(b"channels: [x]\ndependencies:\n  - caf\xe9\n")
    with pytest.raises(NotUtf8, match=r"environment.yml:3: not UTF-8 \(byte 0xe9 at offset 35\)"):
        read_input(path)
    # After a byte-order mark the line and offset still count from the file's first byte.
    path.write_bytes(b"\xef\xbb\xbfchannels: [x]\ndependencies:\n  - caf\xe9\n")
    with pytest.raises(NotUtf8, match=r"environment.yml:3: not UTF-8 \(byte 0xe9 at offset 38\)"):
        read_input(path)


def test_utf8_is_read_whatever_the_locale(tmp_path: Path) -> None:
    path = tmp_path / "environment.yml"
    path.write_bytes("\ufeffname: caf\u00e9\n".encode())
    code = "from pathlib import Path; from conda_envkit.inputs import read_input; print(ascii(read_input(Path('environment.yml')).text))"
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env={**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == ascii("name: caf\u00e9\n")


def test_a_pipe_is_read_and_has_no_path(tmp_path: Path) -> None:
    read, write = os.pipe()
    os.write(write, b"a: 1\n")
    os.close(write)
    try:
        source = read_input(Path(f"/dev/fd/{read}"))
    finally:
        os.close(read)
    assert source.text == "a: 1\n"
    assert source.path is None
    regular = tmp_path / "e.yml"
    regular.write_text("a: 1\n")
    assert read_input(regular).path == regular


def _read_in_thread(path: Path) -> object:
    """read_input(path)'s result or exception; a read still blocked after 30 s fails the test (it would hang)."""
    import threading

    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(read_input(path))
        except UnreadableInput as exc:
            outcome.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(30)
    assert not worker.is_alive(), f"reading {path} hangs"
    return outcome[0]


@pytest.mark.parametrize("writer", ["none", "never-closes"])
def test_a_stuck_fifo_is_an_error_not_a_hang(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, writer: str) -> None:
    monkeypatch.setattr("conda_envkit.inputs.PIPE_IDLE_SECONDS", 0.5)
    fifo = tmp_path / "environment.yml"
    os.mkfifo(fifo)
    held = os.open(fifo, os.O_RDWR) if writer == "never-closes" else None  # a writer that keeps it open, silent
    try:
        if held is not None:
            os.write(held, b"channels: [conda-forge]\n")
        outcome = _read_in_thread(fifo)
    finally:
        if held is not None:
            os.close(held)
    assert isinstance(outcome, UnreadableInput), outcome
    assert f"{fifo}: the pipe sent nothing for 0.5 s and did not close" in outcome.message


def test_a_fifo_whose_writer_finishes_is_read(tmp_path: Path) -> None:
    fifo = tmp_path / "environment.yml"
    os.mkfifo(fifo)
    writer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import time; f = open({str(fifo)!r}, 'w'); f.write('a: 1\\n'); f.flush(); time.sleep(0.5); f.write('b: 2\\n')",
        ]
    )
    try:
        outcome = _read_in_thread(fifo)
    finally:
        writer.wait(timeout=30)
    assert isinstance(outcome, InputText) and outcome.text == "a: 1\nb: 2\n" and outcome.path is None


# -- strict YAML ----------------------------------------------------------------------


def test_duplicate_key_names_both_lines() -> None:
    with pytest.raises(DuplicateKey, match=r"in.yml:4: duplicate key `dependencies` \(first at line 2\)"):
        load_yaml(text("channels: [x]\ndependencies:\n  - a\ndependencies:\n  - b\n"))


def test_duplicate_keys_are_found_in_nested_and_flow_mappings() -> None:
    with pytest.raises(DuplicateKey, match="in.yml:2: duplicate key `cuda`"):
        compose_yaml(text("envkit:\n  variants: {cpu: {cuda: none, cuda: '12'}}\n"))


def test_merge_keys_and_distinct_types_are_not_duplicates() -> None:
    data = load_yaml(text("base: &b {k: 1}\nother:\n  <<: *b\n  k: 2\nn: {1: a, '1': b}\n"))
    assert data == {"base": {"k": 1}, "other": {"k": 2}, "n": {1: "a", "1": "b"}}


def test_depth_limit() -> None:
    assert load_yaml(text(_deep(MAX_YAML_DEPTH - 2))) is not None
    with pytest.raises(YamlLimitExceeded, match=f"in.yml:1: YAML nested deeper than {MAX_YAML_DEPTH} levels"):
        load_yaml(text(_deep(100_000)))  # libyaml's composer would overflow the C stack here


def test_alias_bomb_is_refused() -> None:
    with pytest.raises(YamlLimitExceeded, match="aliases expand to more than"):
        load_yaml(text(_bomb()))


def test_small_aliases_are_fine() -> None:
    assert load_yaml(text("a: &x [1, 2]\nb: *x\n")) == {"a": [1, 2], "b": [1, 2]}


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ("a: [1\n", "in.yml:1: invalid YAML"),  # noticed at the end: the last line, never one past it
        ("a: *nope\n", "in.yml:1: invalid YAML: found undefined alias"),
        ("a: 1\nb: \x00\n", "in.yml:2: invalid YAML: character U+0000"),
        ("a: 1\n---\nb: 2\n", "in.yml:2: invalid YAML"),
        ("a: b: c\n", "in.yml:1: invalid YAML"),
    ],
)
def test_syntax_errors_name_file_and_line(body: str, where: str) -> None:
    with pytest.raises(InvalidYaml) as info:
        load_yaml(text(body))
    assert str(info.value).startswith(where), str(info.value)


def test_strict_loader_matches_safe_load_on_valid_input() -> None:
    body = "a: 1\nb: [x, 'y', 2.5, true, null, 2024-01-01]\nc: {d: [e, {f: g}]}\n"
    assert load_yaml(text(body)) == yaml.safe_load(body)


# -- the commands -------------------------------------------------------------------

GOOD_ENV = "channels: [conda-forge]\ndependencies:\n  - python\n"


def _bad_files(tmp_path: Path) -> dict[str, Path]:
    files = {}
    for kind, body in {
        "non-utf8": b"channels: [conda-forge]\ndependencies:\n  - caf\xe9\n",
        "duplicate": b"channels: [conda-forge]\ndependencies:\n  - a\ndependencies:\n  - b\n",
        "deep": _deep(100_000).encode(),
        "bomb": _bomb().encode(),
    }.items():
        path = tmp_path / f"{kind}.yml"
        path.write_bytes(body)
        files[kind] = path
    link = tmp_path / "zero.yml"
    link.symlink_to("/dev/zero")
    files["dev-zero"] = link
    return files


EXPECTED = {
    "non-utf8": ":3: not UTF-8",
    "duplicate": ":4: duplicate key `dependencies`",
    "deep": ":1: YAML nested deeper than",
    "bomb": "aliases expand to more than",
    "dev-zero": "is not a regular file or a pipe",
}


@pytest.mark.parametrize("kind", sorted(EXPECTED))
@pytest.mark.parametrize("option", ["-f", "--config", "--virtual-package-spec"])
def test_lock_refuses_bad_input_files(tmp_path: Path, kind: str, option: str) -> None:
    bad = _bad_files(tmp_path)[kind]
    write_env(tmp_path, GOOD_ENV)
    before = sorted(tmp_path.iterdir())
    result = run_envkit("lock", option, bad.name, cwd=tmp_path)  # run_envkit asserts no traceback
    assert result.returncode == 2, result.output
    first = result.stderr.splitlines()[0]
    assert first.startswith(f"error: {bad.name}"), result.stderr
    assert EXPECTED[kind] in first
    assert sorted(tmp_path.iterdir()) == before  # no lock, no temp file


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_recipes_refuse_bad_recipe_files(tmp_path: Path, kind: str) -> None:
    bad = _bad_files(tmp_path)[kind]
    recipe = tmp_path / "recipes" / "broken"
    recipe.mkdir(parents=True)
    (recipe / "recipe.yml").symlink_to(bad)
    result = run_envkit("recipes", "--recipe-dir", tmp_path / "recipes", cwd=tmp_path)
    assert result.returncode == 2, result.output
    assert "recipe.yml" in result.stderr.splitlines()[0]
    assert EXPECTED[kind] in result.stderr


def test_a_spec_from_a_pipe_is_read_once(tmp_path: Path, toy_channel: Path) -> None:
    spec = f"channels: [{toy_channel.as_uri()}]\nplatforms: [linux-64]\ndependencies:\n  - hello\n"
    for how in ("/dev/stdin", "-", "process-substitution"):
        work = tmp_path / how.strip("/-").replace("/", "-") if how != "-" else tmp_path / "dash"
        work.mkdir()
        if how != "process-substitution":
            argv = [sys.executable, "-m", "conda_envkit", "lock", "-f", how]
            proc = subprocess.run(argv, cwd=work, input=spec, capture_output=True, text=True, timeout=300)
        else:
            (work / "spec.txt").write_text(spec)
            script = f"'{sys.executable}' -m conda_envkit lock -f <(cat spec.txt)"
            proc = subprocess.run(["bash", "-c", script], cwd=work, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        assert "Traceback" not in proc.stderr
        lock = yaml.safe_load((work / "conda-lock.yml").read_text())
        assert lock["metadata"]["sources"] == []  # a pipe has no path to record, not ../../proc/<pid>/fd/..
        assert "hello" in {p["name"] for p in lock["package"]}


LAYOUT_FILES = {
    "layout-a-list": ("oci-layout", lambda p: p.write_text("[1]\n"), "oci-layout is a JSON list, not an object"),
    "index-a-list": ("index.json", lambda p: p.write_text("[1]\n"), "index.json is a JSON list, not an object"),
    "index-a-directory": ("index.json", lambda p: p.mkdir(), "OCI layout file is a directory"),
    "index-dev-zero": ("index.json", lambda p: p.symlink_to("/dev/zero"), "is not a regular file or a pipe"),
    "index-not-utf8": ("index.json", lambda p: p.write_bytes(b'{"manifests": "\xe9"}'), "not UTF-8"),
}


@pytest.mark.parametrize("case", sorted(LAYOUT_FILES))
def test_a_malformed_base_layout_is_an_error_naming_its_file(tmp_path: Path, toy_channel: Path, case: str) -> None:
    # `--base oci:DIR:tag` reads a layout from elsewhere: a list or a directory was a traceback.
    write_env(tmp_path, f"channels: [{toy_channel.as_uri()}]\nplatforms: [linux-64]\ndependencies:\n  - hello\n")
    assert run_envkit("lock", "-q", cwd=tmp_path).returncode == 0
    layout = tmp_path / "base"
    layout.mkdir()
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}\n')
    (layout / "index.json").write_text('{"schemaVersion": 2, "manifests": []}\n')
    name, spoil, expected = LAYOUT_FILES[case]
    (layout / name).unlink()
    spoil(layout / name)
    result = run_envkit("bake", "--base", "oci:base:t", "--oci", "img", cwd=tmp_path, env={"ENVKIT_CACHE_DIR": str(tmp_path / "cache")})
    assert result.returncode == 2, result.output
    error = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert error and error[0].startswith(f"error: base/{name}") and expected in error[0], result.stderr
    assert not (tmp_path / "img").exists()


@pytest.mark.parametrize(("spoil", "expected"), [("directory", "bake record is a directory"), ("list", "not an envkit bake record")])
def test_a_malformed_bake_record_is_an_error_naming_it(tmp_path: Path, spoil: str, expected: str) -> None:
    record = tmp_path / "bake.json"
    record.mkdir() if spoil == "directory" else record.write_text("[1]\n")
    result = run_envkit("export", "--record", "bake.json", "--to", "json", cwd=tmp_path)
    assert result.returncode == 2, result.output
    assert result.stderr.startswith("error: bake.json: ") and expected in result.stderr, result.stderr


def test_a_prefix_path_that_is_not_utf8_is_refused_before_any_download(tmp_path: Path, toy_channel: Path) -> None:
    # It failed at link time, after the downloads, with "check free disk space and permissions" and a `\udce9` shown.
    import os

    write_env(tmp_path, f"channels: [{toy_channel.as_uri()}]\nplatforms: [linux-64]\ndependencies:\n  - hello\n")
    assert run_envkit("lock", "-q", cwd=tmp_path).returncode == 0
    prefix = os.fsdecode(os.fsencode(str(tmp_path)) + b"/pre\xe9fix")
    result = run_envkit("install", "--prefix", prefix, cwd=tmp_path, env={"ENVKIT_CACHE_DIR": str(tmp_path / "cache"), "LC_ALL": "C"})
    assert result.returncode == 2, result.output
    assert "pre\\xe9fix: the prefix path is not UTF-8" in result.stderr and "disk space" not in result.stderr, result.stderr
    assert not (tmp_path / "cache" / "pkgs").exists()  # (nothing fetched)
    assert not os.path.lexists(os.fsencode(prefix))
    # Brought to the lock (sync, into an empty directory that exists): the same.
    os.mkdir(os.fsencode(prefix))
    synced = run_envkit("install", "--prefix", prefix, cwd=tmp_path, env={"ENVKIT_CACHE_DIR": str(tmp_path / "cache"), "LC_ALL": "C"})
    assert synced.returncode == 2 and "the prefix path is not UTF-8" in synced.stderr, synced.output
