"""Exceptions shared across stages."""

from __future__ import annotations


class AlreadyAlerted(Exception):
    """A failure that has already mailed ops its own, more specific alert: the task-failure mail is skipped."""


class IntervalOutOfRange(ValueError):
    """A run is about an interval the dataset's spec does not cover (before ``start_date``, or not over yet)."""


class InputPastDeadline(AlreadyAlerted):
    """An interval's input had not arrived by its deadline (interval end + ``source.wait_hours``)."""


class StagingLost(RuntimeError):
    """The staging tables no longer hold what was staged and validated (a database crash empties unlogged
    tables): merging them would replace the interval with less than its batch."""


class ConcurrentRun(RuntimeError):
    """Another run of the same interval replaced or dropped the staging tables this run was using."""


class KeyElsewhere(RuntimeError):
    """A key of the batch is stored under another interval since the batch was validated (a run of another
    interval merged it in between): nothing is merged, a re-run quarantines the row."""
