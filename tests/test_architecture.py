"""docs/architecture.md stays true: every module the layer contract places is named there, and
every module of the package is placed (the contract itself is checked by `lint-imports` in .ci/run)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _layers() -> list[list[tuple[str, bool]]]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["importlinter"]
    (layers,) = [c for c in config["contracts"] if c["id"] == "layers"]
    out = []
    for layer in layers["layers"]:
        names = [n.strip() for n in re.split(r"[:|]", layer)]
        out.append([(n.strip("()"), n.startswith("(")) for n in names])
    return out


def test_every_module_of_the_package_has_a_layer() -> None:
    placed = {name for layer in _layers() for name, _ in layer}
    package = ROOT / "conda_envkit"
    modules = {p.stem for p in package.glob("*.py") if p.stem != "__init__"}
    modules |= {p.parent.name for p in package.glob("*/__init__.py")}
    assert modules - {"testing"} <= placed, f"modules without a layer in pyproject.toml: {sorted(modules - {'testing'} - placed)}"


def test_architecture_doc_names_every_present_layer_module() -> None:
    doc = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    package = ROOT / "conda_envkit"
    missing = []
    for layer in _layers():
        for name, optional in layer:
            present = (package / f"{name}.py").exists() or (package / name).is_dir()
            if present and f"`{name}`" not in doc and f"`{name}/`" not in doc:
                missing.append(name)
            assert present or optional, f"pyproject.toml places {name}, which does not exist (mark it optional or remove it)"
    assert not missing, f"docs/architecture.md does not name: {missing}"
