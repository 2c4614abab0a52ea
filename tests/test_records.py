"""The typed records round-trip through their JSON, and spell "no CUDA" one way in Python."""

from __future__ import annotations

from pathlib import Path

import pytest

from conda_envkit.labels import ImageLabels
from conda_envkit.record import BakeRecord, EnvironmentRecord, RecordError, record_from_labels


def test_image_labels_round_trip_and_none_is_none() -> None:
    cpu = ImageLabels("sha256:" + "a" * 64, "sha256:" + "b" * 64, "linux-64", "/opt/conda/envs/env", None, None, "openblas", True, "1.0")
    written = cpu.to_json()
    assert written["dev.envkit.cuda"] == "none" and written["dev.envkit.cuda-version"] == "none"
    assert written["dev.envkit.blas"] == "openblas"
    assert ImageLabels.from_json(written) == cpu

    unknown = ImageLabels.from_json(
        {**written, "dev.envkit.cuda": "unknown", "dev.envkit.cuda-version": "unknown", "dev.envkit.blas": "unknown"}
    )
    assert unknown is not None and not unknown.recorded and unknown.cuda is None and unknown.blas is None
    assert unknown.to_json()["dev.envkit.cuda"] == "unknown"
    assert ImageLabels.from_json({"org.opencontainers.image.title": "x"}) is None


def test_record_from_labels_keeps_the_records_spelling() -> None:
    labels = ImageLabels("sha256:" + "a" * 64, None, "linux-64", None, "12.4", "12.6", None, True).to_json()
    record = record_from_labels(labels, "image", None, None)
    assert (record.cuda, record.cuda_version, record.blas) == ("12.4", "12.6", "none")
    with pytest.raises(RecordError, match="lock-hash"):
        record_from_labels({"dev.envkit.platform": "linux-64"}, "image", None, None)


def test_bake_record_round_trip_and_refusals() -> None:
    record = BakeRecord(
        lockfile="conda-lock.yml",
        lock_hash="sha256:" + "c" * 64,
        image={"digest": "sha256:" + "d" * 64, "media_type": "application/vnd.oci.image.manifest.v1+json", "size": 1},
        prefix="/opt/conda/envs/env",
        tags=("t",),
        references=("r",),
        outputs={},
        platforms={"linux-64": {"labels": {}, "manifest_digest": "sha256:" + "e" * 64}},
        push={"uploaded_blobs": 1, "skipped_blobs": 0, "mounted_blobs": 0, "bytes_uploaded": 3},
        envkit_version="1.0",
    )
    data = record.to_json()
    assert data["schema"] == "envkit.bake/1"
    assert BakeRecord.from_json(data, "bake.json") == record
    with pytest.raises(RecordError, match="not an envkit bake record"):
        BakeRecord.from_json({**data, "schema": "envkit.bake/0"}, "bake.json")
    with pytest.raises(RecordError, match="missing field 'platforms'"):
        BakeRecord.from_json({k: v for k, v in data.items() if k != "platforms"}, "bake.json")


def test_environment_record_round_trip() -> None:
    record = EnvironmentRecord("lock", "sha256:" + "e" * 64, platform="linux-64", cuda="none", packages=("python=3.11=h0",))
    assert EnvironmentRecord.from_json(record.to_json()) == record


def test_the_step_summary_is_a_table_whose_cells_hold_their_values() -> None:
    from conda_envkit.export.github import summary_markdown
    from conda_envkit.record import EnvironmentRecord

    record = EnvironmentRecord("lock", "sha256:" + "a" * 64, platform="linux-64", image="reg.io/a|b`c:1")
    text = summary_markdown(record)
    assert text.startswith("### envkit environment\n\n| | |\n|---|---|\n")
    assert "| lock_hash | `sha256:" + "a" * 64 + "` |\n" in text
    assert "| image | `reg.io/a\\|b'c:1` |\n" in text  # (a pipe does not end its cell, a backtick does not end its span)


def test_an_image_records_the_envkit_that_baked_it() -> None:
    from conda_envkit.labels import label_key
    from conda_envkit.record import record_from_labels

    labels = {label_key("lock-hash"): "sha256:" + "b" * 64, label_key("version"): "0.0.9"}
    assert record_from_labels(labels, "image", None, None).envkit_version == "0.0.9"


def test_a_launchers_variable_that_does_not_fit_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from conda_envkit.record import RecordError
    from conda_envkit.tracking import environment_info

    monkeypatch.setenv("ENVKIT_LOCK_FILE", str(tmp_path / "gone" / "conda-lock.yml"))
    with pytest.raises(RecordError) as refused:
        environment_info()
    assert refused.value.message.startswith("$ENVKIT_LOCK_FILE names ") and "run `envkit lock`" not in refused.value.hint
