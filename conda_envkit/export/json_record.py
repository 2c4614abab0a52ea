"""`--to json`: the record as one stable JSON document (schema `envkit.environment/1`)."""

from __future__ import annotations

import json

from conda_envkit.record import EnvironmentRecord


def render_json(record: EnvironmentRecord) -> str:
    return json.dumps(record.to_json(), indent=2, sort_keys=True) + "\n"
