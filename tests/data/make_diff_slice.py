"""Regenerate tests/data/conda-forge-diff/ from the full snapshot in ../shared/data/channels.

Locks the two specs of tests/test_diff.py against the full conda-forge snapshot and keeps,
per subdir, exactly the records either lock selected. Run from the repository root:

    python tests/data/make_diff_slice.py
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.conftest import SHARED_CHANNELS, run_envkit, write_env  # noqa: E402
from tests.test_diff import NEW_SPEC, OLD_SPEC, SLICE  # noqa: E402


def main() -> None:
    source = SHARED_CHANNELS / "conda-forge"
    if not source.is_dir():
        sys.exit(f"the full snapshot is missing at {source}")
    wanted: dict[str, set[str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name, spec in (("old", OLD_SPEC), ("new", NEW_SPEC)):
            write_env(work, spec.format(channel=source.as_uri()), name=f"{name}.yml")
            result = run_envkit("lock", "-q", "-f", f"{name}.yml", "--lockfile", f"{name}.lock.yml", cwd=work)
            if result.returncode != 0:
                sys.exit(result.output)
            for package in yaml.safe_load((work / f"{name}.lock.yml").read_text(encoding="utf-8"))["package"]:
                if package["manager"] == "conda":
                    subdir, file_name = package["url"].split("/")[-2:]
                    wanted.setdefault(subdir, set()).add(file_name)
    for subdir, file_names in sorted(wanted.items()):
        full = json.loads((source / subdir / "repodata.json").read_text(encoding="utf-8"))
        sliced = {"info": {"subdir": subdir}, "packages": {}, "packages.conda": {}, "repodata_version": 1}
        for key in ("packages", "packages.conda"):
            sliced[key] = {name: record for name, record in full.get(key, {}).items() if name in file_names}
        (SLICE / subdir).mkdir(parents=True, exist_ok=True)
        (SLICE / subdir / "repodata.json").write_text(json.dumps(sliced, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        print(f"{subdir}: {len(sliced['packages']) + len(sliced['packages.conda'])} records")


if __name__ == "__main__":
    main()
