"""The bad-input corpus and its manifest agree: every file listed, every listed file there, outcomes complete."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from nightly_ml.spec import load_spec_file

CORPUS = Path(__file__).resolve().parents[1] / "corpus"
MANIFEST = yaml.safe_load((CORPUS / "manifest.yaml").read_text())
ENTRIES: list[dict[str, Any]] = MANIFEST["entries"]
OUTCOME_KEYS = {
    "accepted": {"merged"},
    "quarantine": {"rules", "quarantined", "merged"},
    "rejected": {"error"},
}


def stored_entries() -> list[dict[str, Any]]:
    return [e for e in ENTRIES if "generator" not in e]


def test_every_file_in_the_corpus_is_in_the_manifest_and_back() -> None:
    on_disk = {p.name for p in CORPUS.iterdir() if p.is_file()}
    support = {"manifest.yaml", MANIFEST["spec"]}
    listed = {e["file"] for e in stored_entries()}
    assert on_disk - support - listed == set(), "files in tests/corpus/ missing from the manifest"
    assert listed - on_disk == set(), "manifest entries whose file is not in tests/corpus/"
    generated = {e["file"] for e in ENTRIES if "generator" in e}
    assert generated & on_disk == set(), "a generated entry must not also be stored"
    assert not [p for p in CORPUS.iterdir() if p.is_dir()], "tests/corpus/ is flat: no sub-folders"


def test_entries_are_unique_and_enough() -> None:
    names = [e["file"] for e in ENTRIES]
    assert len(names) == len(set(names))
    assert len(names) >= 30


def test_the_stored_corpus_stays_small() -> None:
    assert sum(p.stat().st_size for p in CORPUS.iterdir()) < 1_000_000


def test_the_corpus_spec_loads() -> None:
    spec = load_spec_file(CORPUS / MANIFEST["spec"])
    assert spec.source.kind == "files"


@pytest.mark.parametrize("entry", ENTRIES, ids=[e["file"] for e in ENTRIES])
def test_each_entry_says_what_it_exercises_and_expects(entry: dict[str, Any]) -> None:
    assert set(entry) <= {"file", "generator", "exercises", "expect", "day", "preload"}
    assert all((CORPUS / file).is_file() for file in entry.get("preload", []))
    assert entry["exercises"].strip()
    expect = entry["expect"]
    outcome = expect["outcome"]
    assert OUTCOME_KEYS[outcome] <= set(expect), f"{outcome} needs {sorted(OUTCOME_KEYS[outcome])}"
    assert set(expect) <= {"outcome", "merged", "rules", "quarantined", "error", "stored"}
    if outcome == "quarantine":
        rules = expect["rules"]
        assert rules and all(count > 0 for count in rules.values())
        # a row that broke two rules is quarantined once, under both rules
        assert expect["quarantined"] <= sum(rules.values())
    if outcome == "rejected":
        assert "merged" not in expect and "stored" not in expect, "a rejected batch merges nothing"
    recipe = entry.get("generator")
    if recipe:
        assert recipe["name"] in MANIFEST["generators"]
