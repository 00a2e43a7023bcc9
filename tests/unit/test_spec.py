"""The dataset spec loader: good specs load, bad ones fail with an error naming the field."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from nightly_ml.spec import SpecError, load_all_specs, load_spec, load_spec_file, parse_spec

SPEC_DIR = Path(__file__).resolve().parents[2] / "include" / "specs"


@pytest.fixture(scope="module")
def churn() -> dict:
    return yaml.safe_load((SPEC_DIR / "churn.yaml").read_text())


def test_shipped_specs_load() -> None:
    specs = {s.name: s for s in load_all_specs(SPEC_DIR)}
    assert set(specs) == {"churn", "demand"}
    assert specs["churn"].task == "classification"
    assert specs["demand"].task == "regression"
    assert specs["churn"].input_columns[:2] == ["snapshot_id", "event_time"]
    assert specs["churn"].input_columns[-1] == "churned"
    assert specs["demand"].greater_is_better is False


def _with(raw: dict, path: str, value: object) -> dict:
    changed = copy.deepcopy(raw)
    node = changed
    *parents, last = path.split(".")
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    if value is _DELETE:
        del node[last]
    elif last.isdigit():
        node[int(last)] = value
    else:
        node[last] = value
    return changed


_DELETE = object()

BAD_SPECS = [
    ("task", "clustering", "task"),
    ("key", _DELETE, "key"),
    ("features.0.min", 500, "min (500.0) is greater than max"),
    ("features.4.allowed", [], "category column needs a non-empty 'allowed'"),
    ("features.0.type", "complex", "features.0.type"),
    ("features.1.name", "Bad Name!", "features.1.name"),
    ("features.1.name", "tenure_months", "column names must be unique"),
    ("promotion.primary_metric", "rmse", "does not fit a classification task"),
    ("promotion.primary_metric", "accuracyy", "unknown metric"),
    ("promotion.slices", ["no_such_feature"], "unknown feature"),
    ("promotion.slices", ["monthly_charges"], "must be a category or boolean"),
    ("training.candidates.0.estimator", "ridge", "does not fit a classification task"),
    ("training.candidates", [], "training.candidates"),
    ("validation.max_bad_row_fraction", 1.5, "validation.max_bad_row_fraction"),
    ("source.kind", "ftp", "source"),
    ("source.scenario", "sudden_covariate", "needs a drift_start date"),
    ("unexpected_field", 1, "unexpected_field"),
    ("start_date", _DELETE, "start_date"),
    ("start_date", "2999-01-01", "is in the future"),
    ("timezone", "Mars/Olympus_Mons", "unknown time zone"),
    ("schedule", "every night", "neither a cron expression"),
    ("columns", {"rename": {"Tenure": "no_such_column"}}, "maps onto unknown column"),
    ("columns", {"ignore": ["plan"]}, "drops column(s) the spec needs"),
    ("columns", {"ignore": ["x"], "rename": {"x": "plan"}}, "both ignored and renamed"),
    ("columns", {"rename": {"a": "plan", "b": "plan"}}, "several source columns are renamed"),
]


@pytest.mark.parametrize(("path", "value", "message"), BAD_SPECS, ids=[f"{p}={v!r}" for p, v, _ in BAD_SPECS])
def test_bad_specs_are_rejected_with_the_field_named(churn: dict, path: str, value: object, message: str) -> None:
    with pytest.raises(SpecError) as error:
        parse_spec(_with(churn, path, value), origin="churn.yaml")
    assert message in str(error.value)
    assert "churn.yaml" in str(error.value)


def test_spec_name_must_match_file(tmp_path: Path, churn: dict) -> None:
    path = tmp_path / "other.yaml"
    path.write_text(yaml.safe_dump(churn))
    with pytest.raises(SpecError, match="must match the file name 'other'"):
        load_spec_file(path)


def test_invalid_yaml_and_non_mapping(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec_file(broken)
    listing = tmp_path / "listing.yaml"
    listing.write_text("- a\n- b\n")
    with pytest.raises(SpecError, match="top level must be a mapping"):
        load_spec_file(listing)


def test_unknown_spec_name_lists_known_ones() -> None:
    with pytest.raises(SpecError, match=r"no dataset spec named 'nope'.*known: churn, demand"):
        load_spec("nope", SPEC_DIR)


def test_files_and_database_sources_validate(churn: dict) -> None:
    files = parse_spec(_with(churn, "source", {"kind": "files", "path": "drop/churn", "format": "parquet"}))
    assert files.source.kind == "files"
    database = parse_spec(
        _with(churn, "source", {"kind": "database", "url_env": "SOURCE_DB_URL", "table": "public.events"})
    )
    assert database.source.kind == "database"
    with pytest.raises(SpecError, match=r"source\.database\.table"):
        parse_spec(
            _with(churn, "source", {"kind": "database", "url_env": "SOURCE_DB_URL", "table": "events; drop table x"})
        )


def test_schedules_and_zones_of_real_sources_validate(churn: dict) -> None:
    hourly = parse_spec(_with(_with(churn, "schedule", "0 * * * *"), "timezone", "America/New_York"))
    assert (hourly.schedule, hourly.timezone) == ("0 * * * *", "America/New_York")
    assert hourly.start.utcoffset().total_seconds() == -5 * 3600
    assert parse_spec(_with(churn, "schedule", "@hourly")).schedule == "@hourly"
    mapped = parse_spec(_with(churn, "columns", {"ignore": ["notes"], "rename": {"Plan Name": "plan"}}))
    assert mapped.columns.rename == {"Plan Name": "plan"}


def test_a_start_date_after_the_files_on_disk_is_rejected(tmp_path: Path, churn: dict, monkeypatch) -> None:
    from nightly_ml.config import settings

    monkeypatch.setenv("NIGHTLY_ML_DATA_DIR", str(tmp_path))
    settings.cache_clear()
    (tmp_path / "drop" / "ds=2013-01-01").mkdir(parents=True)
    spec_dir = tmp_path / "specs"
    spec_dir.mkdir()
    raw = _with(_with(churn, "source", {"kind": "files", "path": "drop"}), "start_date", "2014-01-01")
    (spec_dir / "churn.yaml").write_text(yaml.safe_dump(raw))
    try:
        with pytest.raises(SpecError, match=r"start_date 2014-01-01 is after its data, which starts on 2013-01-01"):
            load_spec("churn", spec_dir)
        (spec_dir / "churn.yaml").write_text(yaml.safe_dump(_with(raw, "start_date", "2013-01-01")))
        assert load_spec("churn", spec_dir).start_date.isoformat() == "2013-01-01"
    finally:
        settings.cache_clear()
