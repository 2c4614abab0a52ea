"""Render a recipe's Dockerfile template, which is someone else's code, in a child process with limits.

jinja2's sandbox stops a template from reaching Python's internals, not from using up the
machine: `'x' * 10**10`, `'%0999999999d' % 1`, a `join` of a `join` or two nested loops of
`range(100000)` each allocate gigabytes or run for hours. So the template renders in a
child Python (`python -I` running this file, which imports nothing of envkit) under
RLIMIT_AS and RLIMIT_CPU, its output capped, and the parent gives up at a wall-clock
deadline. The child reads {"directory", "name", "data"} as JSON on stdin and writes
{"text"} or {"error"} as JSON on stdout.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TEMPLATE_SECONDS = 30
MAX_DOCKERFILE_BYTES = 1 << 20
# Python with jinja2 needs ~50 MiB of address space; a Dockerfile template needs little more.
MEMORY_LIMIT = 512 << 20


@dataclass(frozen=True)
class Rendered:
    """A template's output, or what went wrong (one line, for an error naming the template)."""

    text: str | None
    error: str | None


def render_untrusted(directory: Path, name: str, data: dict[str, Any]) -> Rendered:
    """Render `directory/name` with `data` in a limited child process."""
    request = json.dumps({"directory": str(directory), "name": name, "data": data}, default=str)
    try:
        proc = subprocess.run(
            [sys.executable, "-I", __file__],
            input=request.encode("utf-8"),
            capture_output=True,
            timeout=TEMPLATE_SECONDS,
            env={},  # none of the caller's environment (a CI's secrets) is there for the template to find
        )
    except subprocess.TimeoutExpired:
        return Rendered(None, f"did not render within {TEMPLATE_SECONDS} s")
    try:
        answer = json.loads(proc.stdout.decode("utf-8"))
    except ValueError:
        answer = None
    if proc.returncode != 0 or not isinstance(answer, dict):
        killed = f"killed by signal {-proc.returncode}" if proc.returncode < 0 else f"exit {proc.returncode}"
        return Rendered(None, f"rendering stopped ({killed}): it used more than {TEMPLATE_SECONDS} s of CPU or {MEMORY_LIMIT >> 20} MiB")
    if isinstance(answer.get("text"), str):
        return Rendered(answer["text"], None)
    return Rendered(None, str(answer.get("error") or "rendering failed"))


def _confined_loader(directory: str) -> Any:
    """A jinja2 loader for the files of `directory` alone: a template (or an `include`) whose real path leaves it
    (a committed symlink to /proc/self/environ or ~/.ssh) is refused, as is anything but a regular file (a FIFO
    would block the read) or a file over MAX_DOCKERFILE_BYTES. jinja2's FileSystemLoader follows symlinks."""
    import os
    import stat

    import jinja2
    from jinja2.loaders import split_template_path

    root = os.path.realpath(directory)

    class ConfinedLoader(jinja2.BaseLoader):
        def get_source(self, environment: Any, template: str) -> tuple[str, str, Any]:
            path = os.path.realpath(os.path.join(root, *split_template_path(template)))
            if os.path.commonpath([root, path]) != root:
                raise jinja2.TemplateNotFound(f"{template} (it leaves the recipe directory)")
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
            except OSError:
                raise jinja2.TemplateNotFound(template) from None
            with os.fdopen(fd, "rb") as f:
                st = os.fstat(f.fileno())
                if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_DOCKERFILE_BYTES:
                    raise jinja2.TemplateNotFound(f"{template} (not a regular file of at most {MAX_DOCKERFILE_BYTES >> 20} MiB)")
                text = f.read(MAX_DOCKERFILE_BYTES + 1).decode("utf-8")
            return text, path, lambda: False  # rendered once: never reloaded

    return ConfinedLoader()


def _render(request: dict[str, Any]) -> dict[str, str]:
    import jinja2.sandbox

    environment = jinja2.sandbox.ImmutableSandboxedEnvironment(
        loader=_confined_loader(request["directory"]),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
    parts, size = [], 0
    try:
        for part in environment.get_template(request["name"]).generate(**request["data"]):
            size += len(part.encode("utf-8"))
            if size > MAX_DOCKERFILE_BYTES:
                return {"error": f"renders to more than {MAX_DOCKERFILE_BYTES >> 20} MiB"}
            parts.append(part)
    except (OSError, UnicodeDecodeError) as exc:
        return {"error": f"cannot read the template ({exc})"}
    except MemoryError:
        return {"error": f"MemoryError: it needs more than the {MEMORY_LIMIT >> 20} MiB a template may use"}
    except Exception as exc:  # the template is foreign code: whatever it raises is its fault, reported as such
        detail = str(exc).splitlines()[0][:300] if str(exc) else ""
        return {"error": f"{type(exc).__name__}: {detail}"}
    return {"text": "".join(parts)}


def _child() -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    resource.setrlimit(resource.RLIMIT_CPU, (TEMPLATE_SECONDS, TEMPLATE_SECONDS))
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
    answer = _render(json.loads(sys.stdin.buffer.read().decode("utf-8")))
    sys.stdout.buffer.write(json.dumps(answer).encode("utf-8"))


if __name__ == "__main__":
    _child()
