"""Worded batch rejections that need more than one rule's outcome: empty batches and unreadable files.

Each message names the files and says what to change, so that the mail to ops is enough to act on.
"""

from __future__ import annotations

from datetime import datetime

from nightly_ml.etl.staging import BatchRejected, StageResult
from nightly_ml.spec import DatasetSpec

LISTED_NAMES = 20

# What to do about the lines the loader could not read, by the rule they were quarantined with.
UNREADABLE_HINTS = {
    "invalid_utf8": "lines with bytes that are not UTF-8: save the file as UTF-8 (it looks like another "
    "encoding, e.g. latin-1 or Windows-1252)",
    "malformed_line": "lines with the wrong number of fields or broken quoting: check the delimiter and quotes",
    "nul_byte": "lines with NUL bytes: the file looks binary or corrupted",
}


def listed(names: list[str], limit: int = LISTED_NAMES) -> str:
    """A list of names for a message, cut after ``limit`` (a header of 1500 columns stays readable)."""
    if len(names) <= limit:
        return repr(names)
    return f"{names[:limit]!r} and {len(names) - limit} more"


def empty_batch(spec: DatasetSpec, stage: StageResult, start: datetime, end: datetime) -> str:
    per_file = "; ".join(
        f"{f['file']} has a header but no rows" if f["columns"] else f"{f['file']} is empty (no header, no rows)"
        for f in stage.files
    )
    return (
        f"empty batch: no rows for {spec.name} in [{start:%Y-%m-%d %H:%M}, {end:%Y-%m-%d %H:%M}): "
        f"{per_file or 'no row files'}; drop the interval's rows and clear this run"
    )


def check_unreadable_lines(spec: DatasetSpec, stage: StageResult) -> None:
    """Refuse a batch whose share of lines the loader could not read is over the spec's bad-row limit."""
    unreadable = stage.rows_in - stage.rows_staged
    limit = spec.validation.max_bad_row_fraction
    if not stage.rows_in or unreadable / stage.rows_in <= limit:
        return
    by_rule = stage.unreadable_by_rule
    counts = ", ".join(f"{rule}: {count}" for rule, count in sorted(by_rule.items()))
    hints = "; ".join(hint for rule, hint in UNREADABLE_HINTS.items() if rule in by_rule)
    raise BatchRejected(
        f"too many unreadable lines in {stage.file_names}: {unreadable} of {stage.rows_in} "
        f"({unreadable / stage.rows_in:.1%}) could not be loaded ({counts or 'unknown'}), above the spec's limit of "
        f"{limit:.1%}" + (f" — {hints}" if hints else "")
    )
