"""The lock writer's scalars are exactly what PyYAML (and so conda-lock's writer) emits."""

from __future__ import annotations

import random

import yaml

from conda_envkit.lock_yaml import scalar

TRICKY = [
    "3.11", "1.10", "0.1", "01", "12.4", ">=1.2,<2", ">=4.5 *_llvm", "*_llvm", "*", "=", "<<", "~", "", "null", "yes", "No",
    "on", "OFF", "0x1F", "1e3", ".inf", "NaN", "+1", "1_000", "2021-01-01", "- a", "a: b", "a:b", "x:", "#x", "a #b",
    " lead", "trail ", "'q'", 'd"q', "!tag", "&a", "@x", "`x", "%x", "?x", "? x", "-x", ",x", "[x", "x]", "{x}", "a,b",
    "|x", ">x", "=1.0", "!=2", "~=1.2", "a  b", "tab\there", "line\nbreak", "naïve", "γ", "\x07",
]  # fmt: skip


def _pyyaml(value: str) -> str:
    text = yaml.dump(value, Dumper=yaml.SafeDumper, width=1000, allow_unicode=False)
    return text[: -len("\n...\n")] if text.endswith("\n...\n") else text.rstrip("\n")


def test_scalars_match_pyyaml() -> None:
    rnd = random.Random(17)
    alphabet = "ab01.:-_ ,*<>=!#'\"?[]{}&|@%`~+/\t"
    generated = ["".join(rnd.choice(alphabet) for _ in range(rnd.randint(1, 9))) for _ in range(20_000)]
    mismatches = [(v, scalar(v), _pyyaml(v)) for v in TRICKY + generated if scalar(v) != _pyyaml(v)]
    assert not mismatches, mismatches[:10]


def test_version_and_spec_shaped_scalars_match_pyyaml() -> None:
    # The writer's shortcuts for digit-led words (versions, md5s, builds) and `>`-led specs: numbers,
    # dates, octal/hex/sexagesimal forms and every indicator they may contain, against PyYAML.
    rnd = random.Random(23)
    digit_led = [
        "".join([rnd.choice("0123456789"), *(rnd.choice("0123456789eE._+-xobT:tZ") for _ in range(rnd.randint(0, 9)))])
        for _ in range(15_000)
    ]
    spec_led = [">" + "".join(rnd.choice("0123456789._,<>=!*+|-ab #'") for _ in range(rnd.randint(0, 9))) for _ in range(15_000)]
    forms = ["1_000", "0o17", "0x_1f", "190:20:30", "1:0", "2001-12-14", "2001-12-14t21:59:43.10-05:00", "6.02e+23", "1.", "09.5", "08"]
    mismatches = [(v, scalar(v), _pyyaml(v)) for v in forms + digit_led + spec_led if scalar(v) != _pyyaml(v)]
    assert not mismatches, mismatches[:10]
