"""The `pip:` section of a solved platform -> pinned wheels (URL + sha256), resolved by uv.

uv resolves for the locked platform, not the machine running `envkit lock`: the
locked CPython version, the platform's wheel tags (`__glibc` / `__osx` from the
lock's virtual packages), wheels only. Python packages the conda solve already
installs are handed to uv as fixed, dependency-free stand-ins (`name @ file://stub`
constraints), so a pip requirement that needs another version fails loudly, and
nothing conda installs is installed twice.

Index URLs may carry credentials as `${VAR}`: envkit's index proxy (index_proxy) gets them
expanded and uv only the proxy's URLs; the lock records only the `${VAR}` template.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import os
import re
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version
from rattler import RepoDataRecord

from conda_envkit.cache import uv_dir
from conda_envkit.channels import expand_credentials, expand_env_vars, missing_env_vars, refuse_variable_in_path
from conda_envkit.errors import EnvkitError
from conda_envkit.network import PAGE_CAP_ENV_VAR, TIMEOUT_ENV_VAR, network_timeout, size_text
from conda_envkit.redact import strip_userinfo
from conda_envkit.spec import PipRequirement
from conda_envkit.wheel_targets import WheelTarget, wheel_rank

if TYPE_CHECKING:
    from conda_envkit.index_proxy import IndexProxy

_ENV_VAR = re.compile(r"\$\{(\w+)\}")
# conda-forge packages whose PyPI distribution has another name. The rest are matched
# by their normalized name, which holds for nearly all Python packages on conda-forge.
CONDA_TO_PYPI = {
    "pytorch": "torch",
    "matplotlib-base": "matplotlib",
    "tensorflow-base": "tensorflow",
    "msgpack-python": "msgpack",
    "py-xgboost": "xgboost",
    "py-opencv": "opencv-python",
    "pytables": "tables",
    "ruamel.yaml": "ruamel-yaml",
}
_RESOLUTION_ENV = frozenset(
    f"UV_{name}"
    for name in (
        "INDEX", "DEFAULT_INDEX", "INDEX_URL", "EXTRA_INDEX_URL", "FIND_LINKS", "NO_INDEX", "INDEX_STRATEGY",
        "CONSTRAINT", "OVERRIDE", "EXCLUDE", "BUILD_CONSTRAINT", "PRERELEASE", "RESOLUTION", "EXCLUDE_NEWER",
        "NO_BINARY", "ONLY_BINARY", "NO_BUILD", "PYTHON", "TORCH_BACKEND", "CONFIG_FILE", "NO_SOURCES",
    )
)  # fmt: skip
PYPI = "https://pypi.org/simple"  # uv's default index, proxied like any other
_UNLOCKABLE_HINT = (
    "publish it as a wheel on an index (--extra-index-url) and require it by name and version, or install it after `envkit install`"
)


class PipLockError(EnvkitError):
    """A `pip:` section that cannot be locked (`platform`; `blamed`: the requirements uv's explanation names,
    as (name, source line))."""

    def __init__(self, message: str, hint: str = "", platform: str = "", blamed: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(message, hint)
        self.platform, self.blamed = platform, blamed


_REQUIREMENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def _uv_failure_line(stderr: str, *words: str) -> str:
    """The first line of uv's output that says one of `words` (shortened), else the first of `words`."""
    line = next((line.strip() for line in stderr.splitlines() if any(w in line for w in words)), words[0])
    return line if len(line) <= 300 else line[:299] + "…"


def blamed_requirements(inputs: PipInputs, explanation: str) -> tuple[tuple[str, str], ...]:
    """The requirements (name, source line) that uv's failure `explanation` names."""
    found = []
    for requirement in inputs.requirements:
        match = _REQUIREMENT_NAME.match(requirement.line.strip())
        if match and not requirement.line.lstrip().startswith("-"):
            name = match.group(0)
            spelled = "[-_.]+".join(re.escape(part) for part in re.split(r"[-_.]+", name))  # PEP 503: - _ . are one
            if re.search(rf"(?<![\w.-]){spelled}(?![\w-])", explanation, re.IGNORECASE):
                found.append((name, requirement.source))
    return tuple(found)


@dataclass(frozen=True)
class FindLinks:
    """One `--find-links` value as written (`source` is its file:line), and what a relative path in it is relative to."""

    location: str
    source: str
    base_dir: Path

    def for_uv(self) -> str:
        """The value uv is given: `${VAR}` expanded in a URL's credentials, a relative directory made absolute against
        `base_dir`; a variable in a local path is refused (uv's errors print the path)."""
        if "://" not in self.location and "${" in self.location:
            try:
                refuse_variable_in_path(self.location, f"{self.source}: --find-links {self.location}")
            except EnvkitError as exc:
                raise PipLockError(exc.message, hint=exc.hint) from None
        link = expand_env(self.location, self.source)
        return link if "://" in link else str((self.base_dir / link).resolve())


@dataclass(frozen=True)
class PipInputs:
    """One platform's `pip:` section: requirements and index options, as written."""

    requirements: tuple[PipRequirement, ...]
    index_url: str | None = None
    extra_index_urls: tuple[str, ...] = ()
    find_links: tuple[FindLinks, ...] = ()
    pre: bool = False
    no_index: bool = False
    index_sources: tuple[tuple[str, str], ...] = ()  # (index URL as written, its file:line), for errors only

    def source_of(self, url: str, default: str) -> str:
        """The file:line an index URL was written at."""
        return next((source for written, source in self.index_sources if written == url), default)

    def index_templates(self) -> tuple[str, ...]:
        """The index URLs as the lock may record them: `${VAR}` kept, literal secrets removed."""
        urls = ([self.index_url] if self.index_url else []) + list(self.extra_index_urls) + [f.location for f in self.find_links]
        return tuple(public_index_url(u) for u in urls)

    def hash_input(self, as_written: bool = False) -> list[str]:
        """What the lock's input hash covers: requirement lines and index templates. The requirements are taken as pip
        reads them (`requirement_key`: spacing, name spelling and order change nothing), or `as_written` (what envkit
        hashed before, so that those locks stay fresh)."""
        flags = (["--pre"] if self.pre else []) + (["--no-index"] if self.no_index else [])
        lines = [r.line for r in self.requirements] if as_written else sorted(requirement_key(r.line) for r in self.requirements)
        return lines + [f"index {u}" for u in self.index_templates()] + flags


def requirement_key(line: str) -> str:
    """A `pip:` line as pip reads it: a PEP 508 requirement with its name normalized (PEP 503), its extras and
    specifiers sorted and no spacing (`Hello_ML >= 0.3` -> `hello-ml>=0.3`); any other line (an option, a path)
    with its spacing collapsed."""
    text = " ".join(line.split())
    if text.startswith("-"):
        return text
    try:
        requirement = Requirement(text)
    except InvalidRequirement:
        return text
    extras = f"[{','.join(sorted(canonicalize_name(e) for e in requirement.extras))}]" if requirement.extras else ""
    key = canonicalize_name(requirement.name) + extras + (f" @ {requirement.url}" if requirement.url else str(requirement.specifier))
    return key + (f"; {requirement.marker}" if requirement.marker else "")


@dataclass(frozen=True)
class PipPin:
    """One locked pip package for one platform: the wheel to install."""

    name: str
    version: str
    url: str
    sha256: str


def public_index_url(url: str) -> str:
    """An index URL fit for the lock: `${VAR}` credentials kept as written, literal ones removed."""
    parts = urlsplit(url)
    userinfo, at, host = parts.netloc.rpartition("@")
    if at and not all(_ENV_VAR.fullmatch(piece) for piece in userinfo.split(":") if piece):
        return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
    return url


def expand_env(value: str, where: str) -> str:
    """`${VAR}` replaced from the environment, or an error naming the line and the variable."""
    missing = missing_env_vars(value)
    if missing:
        raise PipLockError(
            f"{where}: needs environment variable(s) {', '.join(missing)}", hint="export them; they are never written to the lock"
        )
    if "://" in value:  # in an index URL, a variable may only stand for a credential
        try:
            return expand_credentials(value, None, where)
        except EnvkitError as exc:
            raise PipLockError(exc.message, hint=exc.hint) from None
    return expand_env_vars(value)


def _option(line: str) -> tuple[str, str]:
    option, _, value = line.partition("=") if "=" in line.split()[0] else line.partition(" ")
    return option.strip(), value.strip()


def parse_pip_section(lines: tuple[PipRequirement, ...]) -> PipInputs:
    """Check every line of a `pip:` section and sort requirements from index options."""
    requirements: list[PipRequirement] = []
    index_url: str | None = None
    extra: list[str] = []
    find_links: list[FindLinks] = []
    sources: list[tuple[str, str]] = []
    pre = no_index = False
    for req in lines:
        text = req.line.strip()
        if text.startswith("-"):
            option, value = _option(text)
            if option in ("-i", "--index-url"):
                index_url = value
                sources.append((value, req.source))
            elif option == "--extra-index-url":
                extra.append(value)
                sources.append((value, req.source))
            elif option in ("-f", "--find-links"):
                find_links.append(FindLinks(value, req.source, req.base_dir))
            elif option == "--pre":
                pre = True
            elif option == "--no-index":
                no_index = True
            elif option in ("-e", "--editable"):
                raise PipLockError(f"{req.source}: `{text}` is an editable install, which a lock cannot pin", hint=_UNLOCKABLE_HINT)
            elif option in ("-r", "--requirement", "-c", "--constraint"):
                raise PipLockError(
                    f"{req.source}: `{text}`: envkit does not follow requirement files",
                    hint="list the requirements in the pip: section itself",
                )
            else:
                raise PipLockError(
                    f"{req.source}: unsupported pip option {option!r}",
                    hint="envkit understands --index-url, --extra-index-url, --find-links, --no-index and --pre",
                )
            if option not in ("--pre", "--no-index") and not value:
                raise PipLockError(f"{req.source}: {option} needs a URL", hint=f"write `{option} https://...`")
            continue
        bare_url = "://" in text.split(";")[0] and " @ " not in text and not re.match(r"^[A-Za-z0-9._-]+\s*@", text)
        if text.startswith((".", "/", "~")) or bare_url:
            raise PipLockError(f"{req.source}: `{text}` is a local path or URL, which a lock cannot pin", hint=_UNLOCKABLE_HINT)
        try:
            parsed = Requirement(text)
        except InvalidRequirement as exc:
            raise PipLockError(
                f"{req.source}: invalid pip requirement {text!r}: {exc}", hint="write e.g. `transformers>=4.40,<5`"
            ) from None
        if parsed.url:
            kind = "a VCS URL" if parsed.url.startswith(("git+", "hg+", "svn+", "bzr+")) else "a direct URL"
            raise PipLockError(
                f"{req.source}: `{text}` is {kind}; envkit locks packages from indexes only",
                hint=_UNLOCKABLE_HINT,
            )
        requirements.append(req)
    return PipInputs(tuple(requirements), index_url, tuple(extra), tuple(find_links), pre, no_index, tuple(sources))


def _is_python_package(record: RepoDataRecord) -> bool:
    if str(record.noarch) == "python" or getattr(record.noarch, "python", False):
        return True
    return any(d.split()[0] in ("python", "python_abi") for d in record.depends)


def conda_python_packages(records: tuple[RepoDataRecord, ...]) -> dict[str, str]:
    """PyPI name -> version of every Python package the conda solution installs."""
    provided = {}
    for record in records:
        name = record.name.normalized
        if name == "python" or not _is_python_package(record):
            continue
        provided[str(canonicalize_name(CONDA_TO_PYPI.get(name, name)))] = str(record.version)
    return provided


def python_version(records: tuple[RepoDataRecord, ...]) -> str | None:
    for record in records:
        if record.name.normalized == "python":
            return str(record.version)
    return None


def _write_stub(name: str, version: str, directory: Path) -> Path:
    """A wheel with only metadata: `name==version`, no dependencies, installs nothing."""
    dist = re.sub(r"[-_.]+", "_", name)
    info = f"{dist}-{version}.dist-info"
    members = {
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: envkit\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(
        f"{path},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},{len(data)}\n"
        for path, data in members.items()
    )
    members[f"{info}/RECORD"] = (record + f"{info}/RECORD,,\n").encode()
    out = directory / f"{dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(out, "w") as archive:
        for path, data in members.items():
            archive.writestr(zipfile.ZipInfo(path, date_time=(1980, 1, 1, 0, 0, 0)), data)
    return out


@functools.cache
def uv_binary() -> str:
    """The uv executable, looked up once per process.

    uv's find_uv_bin reads sysconfig, whose lazy first use is not thread-safe: a thread can be
    answered None for "EXE" while another one (packaging.tags, for wheel ranking) fills the
    table. Callers that resolve in threads call this first, on their own thread.
    """
    try:
        from uv import find_uv_bin
    except ImportError:
        raise PipLockError("locking a pip: section needs uv, which is not installed", hint="pip install uv") from None
    return find_uv_bin()


def _uv_failure(stderr: str, secrets: list[str], provided: dict[str, str]) -> str:
    text = stderr.strip()
    for secret in secrets:
        text = text.replace(secret, "****")
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) > _UV_LINES_SHOWN:  # (cut at a line, and said: uv's explanation may end "we can conclude that all of:")
        lines = [*lines[:_UV_LINES_SHOWN], f"… ({len(lines) - _UV_LINES_SHOWN} more lines of uv's explanation)"]
    named = [f"{name} {version}" for name, version in sorted(provided.items()) if re.search(rf"\b{re.escape(name)}\b", text)]
    if named:
        lines.append(f"note: from conda, fixed for pip: {', '.join(named)}")
    return "\n  ".join(lines)


_UV_LINES_SHOWN = 30


def resolve_pip(
    inputs: PipInputs,
    target: WheelTarget,
    provided: dict[str, str],
    keep: dict[str, str],
    cache_dir: Path,
) -> list[PipPin]:
    """Resolve `inputs` for `target` with uv; every pin is one wheel URL with its sha256.

    `provided` (PyPI name -> version) is what conda installs; `keep` pins packages
    (name -> version) that an `--update` of other packages must not move.
    """
    first = inputs.requirements[0].source if inputs.requirements else "pip:"
    # uv settings that would change what is resolved come from the spec alone; transport
    # settings stay the user's, except that with a remote index uv talks only to envkit's
    # index proxy (its proxy variables point there, and TLS is the proxy's: requests').
    env = {k: v for k, v in os.environ.items() if k not in _RESOLUTION_ENV}
    index = expand_env(inputs.index_url, inputs.source_of(inputs.index_url, first)) if inputs.index_url else None
    extra = [expand_env(u, inputs.source_of(u, first)) for u in inputs.extra_index_urls]
    links = [link.for_uv() for link in inputs.find_links]
    secrets = [urlsplit(u).password or "" for u in [index or "", *extra, *links]]
    if target.macos_version:
        env["MACOSX_DEPLOYMENT_TARGET"] = target.macos_version
    deadline = network_timeout()
    remote = [u for u in [index or ("" if inputs.no_index else PYPI), *extra, *links] if _is_remote(u)]
    with tempfile.TemporaryDirectory(prefix="envkit-pip-") as tmp, _index_proxy(remote) as proxy:
        work = Path(tmp)
        stubs = work / "conda"
        stubs.mkdir()
        constraints, excludes = [], []
        for name, version in sorted(provided.items()):
            try:
                Version(version)
            except InvalidVersion:
                excludes.append(name)  # a conda version PEP 440 cannot express: leave it out of pip's view
                continue
            constraints.append(f"{name} @ {_write_stub(name, version, stubs).as_uri()}")
        constraints += [f"{name}=={version}" for name, version in sorted(keep.items()) if name not in provided]
        (work / "requirements.in").write_text("".join(f"{r.line}\n" for r in inputs.requirements), encoding="utf-8")
        (work / "constraints.txt").write_text("".join(f"{c}\n" for c in constraints), encoding="utf-8")
        (work / "excludes.txt").write_text("".join(f"{e}\n" for e in excludes), encoding="utf-8")
        out = work / "pylock.toml"
        command = [
            uv_binary(), "pip", "compile", str(work / "requirements.in"),
            "--constraints", str(work / "constraints.txt"),
            "--excludes", str(work / "excludes.txt"),
            "--python-version", target.python_version,
            "--python-platform", target.uv_platform,
            "--only-binary", ":all:",
            "--format", "pylock.toml", "--output-file", str(out),
            "--no-header", "--no-config", "--quiet", "--no-progress",
            # Wheels only, so no build runs: any interpreter will do, and uv must not download one.
            "--python", sys.executable, "--no-python-downloads",
            "--cache-dir", str(uv_dir(cache_dir)),
        ]  # fmt: skip
        via = proxy.for_uv if proxy else (lambda url: url)
        if index or (proxy and not inputs.no_index):
            env["UV_INDEX_URL"] = via(index or PYPI)
        if extra:
            env["UV_EXTRA_INDEX_URL"] = " ".join(via(u) for u in extra)
        for link in links:
            command += ["--find-links", via(link)]
        if inputs.no_index:
            command.append("--no-index")
        if inputs.pre:
            command += ["--prerelease", "allow"]
        if proxy:
            env |= proxy.uv_env()
            # envkit's proxy holds uv's page requests to the deadline (and a page to its size cap);
            # uv's own per-read timeout must not end a page the proxy is still reading in time.
            env.setdefault("UV_HTTP_TIMEOUT", str(max(1, round(4 * deadline))))
        else:
            env.setdefault("UV_HTTP_TIMEOUT", str(max(1, round(min(deadline, 60.0)))))
        try:
            proc = subprocess.run(command, capture_output=True, text=True, env=env, cwd=work, timeout=4 * deadline)
        except subprocess.TimeoutExpired:
            _raise_proxy_failure(proxy, target, first)
            indexes = ", ".join(strip_userinfo(u) for u in (inputs.index_url, *inputs.extra_index_urls) if u) or "PyPI"
            reading = proxy.still_reading() if proxy else {}
            pages = "".join(f"; still reading {url} ({size_text(n)} so far)" for url, n in sorted(reading.items()))
            raise PipLockError(
                f"{target.platform}: resolving the pip: section ({first}) against {indexes} took longer than {4 * deadline:g} s"
                f" (4 times the {deadline:g} s network deadline){pages}",
                hint=f"an index is slow, stuck or sends without end; retry, or raise --timeout / {TIMEOUT_ENV_VAR}"
                " (the resolution may take 4 times it)"
                + (f"; lower {PAGE_CAP_ENV_VAR} to stop a page that never ends sooner" if reading else ""),
            ) from None
        _raise_proxy_failure(proxy, target, first)  # even if uv got by without the page: it saw less than the index has
        if proc.returncode != 0:
            stderr = proxy.upstream_text(proc.stderr) if proxy else proc.stderr
            explanation = _uv_failure(stderr, [s for s in secrets if s], provided)
            if "No space left on device" in stderr or "Disk quota exceeded" in stderr:  # the cache's disk, not the spec
                raise PipLockError(
                    f"{target.platform}: resolving the pip: section ({first}) failed: uv could not write its cache "
                    f"({_uv_failure_line(stderr, 'No space left on device', 'Disk quota exceeded')})",
                    hint=f"free space on the filesystem of {uv_dir(cache_dir)} (uv's cache, in envkit's: --cache-dir, $ENVKIT_CACHE_DIR)",
                    platform=target.platform,
                )
            blamed = blamed_requirements(inputs, explanation)
            what = ", ".join(f"{name} ({source})" for name, source in blamed) if blamed else f"the pip: section ({first})"
            hint = "relax the pip requirement, add an index that has a wheel for this platform, or drop the platform"
            if "wheel" in stderr and target.platform.split("-")[0] in ("osx", "linux"):
                # A wheel for a newer macOS or glibc than the lock assumes (scikit-learn's macosx_12_0 arm64 wheels).
                system = "__osx (macOS)" if target.platform.startswith("osx") else "__glibc"
                hint += (
                    f"; the wheels a platform takes follow the {system} version the lock assumes ({target.tags[0].platform}):"
                    " a newer one, given with --virtual-package-spec, admits wheels built for it"
                )
            raise PipLockError(
                f"{target.platform}: {what} cannot be resolved for {target.describe()}:\n  " + explanation,
                hint=hint,
                platform=target.platform,
                blamed=blamed,
            )
        document = tomllib.loads(out.read_text(encoding="utf-8"))
    placeholders = _placeholders([inputs.index_url or "", *inputs.extra_index_urls, *(f.location for f in inputs.find_links)])
    return _pins(document, target, provided, first, placeholders, proxy.upstream_of if proxy else (lambda url: None))


def _is_remote(url: str) -> bool:
    return urlsplit(url).scheme.lower() in ("http", "https")


@contextmanager
def _index_proxy(remote: list[str]) -> Iterator[IndexProxy | None]:
    """envkit's index proxy for the remote indexes and find-links pages (None when all are local)."""
    if not remote:
        yield None
        return
    from conda_envkit.index_proxy import serve_indexes, split_credentials

    with serve_indexes(tuple(split_credentials(url) for url in remote)) as proxy:
        yield proxy


def _raise_proxy_failure(proxy: IndexProxy | None, target: WheelTarget, where: str) -> None:
    """The first page or file the index proxy could not fetch (over a cap, past the deadline), as the lock's error.

    uv only saw a 403 for it; the proxy knows which URL and which limit.
    """
    failures = proxy.failures() if proxy else []
    if failures:
        raise PipLockError(f"{target.platform}: resolving the pip: section ({where}): {failures[0].message}", hint=failures[0].hint)


def _placeholders(templates: list[str]) -> dict[str, str]:
    """Expanded value -> `${VAR}` for every variable the index URLs name: wheel URLs go back to templates."""
    out = {}
    for template in templates:
        for var in _ENV_VAR.findall(template):
            value = os.environ.get(var, "")
            if len(value) >= 2:
                out[value] = "${" + var + "}"
    return out


def _public_wheel_url(url: str, placeholders: dict[str, str]) -> str:
    """A wheel URL fit for the lock: credentials removed, any expanded index variable put back as `${VAR}`."""
    url = strip_userinfo(url)
    for value in sorted(placeholders, key=len, reverse=True):
        url = url.replace(value, placeholders[value])
    return url


def _pins(
    document: dict[str, Any],
    target: WheelTarget,
    provided: dict[str, str],
    where: str,
    placeholders: dict[str, str],
    upstream_of: Callable[[str], str | None],
) -> list[PipPin]:
    pins = []
    for package in document.get("packages", []):
        name = str(canonicalize_name(package["name"]))
        if name in provided:
            continue
        ranked = []
        for wheel in package.get("wheels", []):
            url = wheel.get("url", "")
            url = upstream_of(url) or url  # uv saw the index proxy's URL; the lock records the index's own
            rank = wheel_rank(url.rsplit("/", 1)[-1], target)
            sha256 = wheel.get("hashes", {}).get("sha256")
            if rank is not None and url and sha256:
                ranked.append((rank, url, sha256))
        if not ranked:
            raise PipLockError(
                f"{target.platform}: pip package {name} {package.get('version')} ({where}) has no wheel with a URL and sha256 "
                f"for {target.describe()}",
                hint="envkit installs wheels only: publish a wheel for this platform, or drop the platform",
            )
        _rank, url, sha256 = min(ranked)
        pins.append(PipPin(name, str(package["version"]), _public_wheel_url(url, placeholders), sha256))
    return sorted(pins, key=lambda p: p.name)
