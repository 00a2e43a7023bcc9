"""The scoring stream's two threads (modeling/scoring.py): rows read ahead, predictions sent, neither able to
leave the scoring thread blocked or an error unseen."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import closing

import pyarrow as pa
import pytest

from nightly_ml.modeling.scoring import _blas_threads, _read_ahead, _Sender

SCHEMA = pa.schema([pa.field("n", pa.int64())])


def batches(count: int, fail_at: int | None = None) -> Iterator[pa.RecordBatch]:
    for n in range(count):
        if n == fail_at:
            raise RuntimeError(f"the stream broke at batch {n}")
        yield pa.record_batch([pa.array([n])], schema=SCHEMA)


def threads_named(prefix: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(prefix)]


def test_read_ahead_yields_every_batch_in_order() -> None:
    assert [b.column(0)[0].as_py() for b in _read_ahead(batches(7))] == list(range(7))
    assert threads_named("nightly_ml-rows-fetch") == []


def test_read_ahead_closed_early_stops_its_thread() -> None:
    with closing(_read_ahead(batches(100))) as ahead:
        assert next(ahead).column(0)[0].as_py() == 0
    assert threads_named("nightly_ml-rows-fetch") == []


def test_read_ahead_raises_the_sources_error_after_what_came_before() -> None:
    seen = []
    with pytest.raises(RuntimeError, match="broke at batch 3"):
        seen.extend(b.column(0)[0].as_py() for b in _read_ahead(batches(10, fail_at=3)))
    assert seen == [0, 1, 2]


def test_the_sender_hands_every_batch_to_one_stream() -> None:
    received: list[int] = []
    sender = _Sender(SCHEMA, lambda stream: received.extend(b.column(0)[0].as_py() for b in stream))
    for batch in batches(9):
        sender.put(batch)
    assert sender.finish() is None
    assert received == list(range(9))


def test_a_failing_send_never_blocks_the_caller_and_its_error_comes_back() -> None:
    def send(stream: pa.RecordBatchReader) -> None:
        stream.read_next_batch()
        raise RuntimeError("the COPY was refused")

    sender = _Sender(SCHEMA, send)
    raised = None
    try:
        for batch in batches(50):  # far more than the queue holds
            sender.put(batch)
    except RuntimeError as error:
        raised = error
    error = sender.finish()
    assert isinstance(error, RuntimeError) and "refused" in str(error)
    assert raised is None or raised is error
    assert threads_named("nightly_ml-send") == []


def test_the_streamed_feature_frame_equals_the_training_one_with_missing_values() -> None:
    """What the model sees when scoring (Arrow chunks, categories through their distinct values) is what it
    saw in training (frames.feature_frame), missing values and all."""
    import numpy as np
    import pandas as pd

    from nightly_ml.modeling import chunk_scores, frames
    from nightly_ml.spec import load_spec

    spec = load_spec("churn")
    rows = 6
    columns: dict[str, pa.Array] = {}
    for n, feature in enumerate(spec.features):
        if feature.is_numeric:
            integer = feature.type == "integer"
            values = [None if (i + n) % 4 == 0 else (i * 3 if integer else i * 1.25) for i in range(rows)]
            columns[feature.name] = pa.array(values, pa.int64() if integer else pa.float64())
        elif feature.type == "boolean":  # read as booleans: the model knows them as 'true'/'false'
            columns[feature.name] = pa.array([None if (i + n) % 3 == 0 else i % 2 == 0 for i in range(rows)])
        else:
            words = ["basic", "premium", "standard"]
            columns[feature.name] = pa.array([None if (i + n) % 3 == 0 else words[i % len(words)] for i in range(rows)])
    table = pa.table(columns)
    streamed = chunk_scores.feature_frame(spec, pa.Table.from_batches(table.to_batches(max_chunksize=4)))
    trained = frames.feature_frame(spec, table.to_pandas())
    pd.testing.assert_frame_equal(streamed, trained)
    assert any(streamed[f.name].isna().any() for f in spec.features if not f.is_numeric)
    assert all(streamed[f.name].dtype == np.float64 for f in spec.features if f.is_numeric)


def blas_threads() -> list[int]:
    from threadpoolctl import threadpool_info

    return [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]


def openmp_threads() -> list[int]:
    from threadpoolctl import threadpool_info

    return [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "openmp"]


def test_scoring_holds_the_blas_pools_to_the_setting_and_gives_them_back() -> None:
    import numpy  # noqa: F401 - loads the BLAS pool threadpoolctl looks for
    import sklearn.ensemble  # noqa: F401 - loads an OpenMP pool
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=2):
        before_blas, before_openmp = blas_threads(), openmp_threads()
        assert before_blas and set(before_blas) == {2}
        with _blas_threads(1):
            assert set(blas_threads()) == {1}
            assert openmp_threads() == before_openmp  # tree ensembles keep their threads
        assert blas_threads() == before_blas
        with _blas_threads(0):  # 0: the libraries' own count
            assert blas_threads() == before_blas


def test_the_blas_thread_setting_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from nightly_ml.config import settings

    monkeypatch.delenv("NIGHTLY_ML_SCORING_BLAS_THREADS", raising=False)
    settings.cache_clear()
    try:
        assert settings().scoring_blas_threads == 1
        monkeypatch.setenv("NIGHTLY_ML_SCORING_BLAS_THREADS", "0")
        settings.cache_clear()
        assert settings().scoring_blas_threads == 0
    finally:
        settings.cache_clear()


@pytest.mark.parametrize("one_interval", [True, False])
def test_the_interval_start_travels_only_when_the_rows_are_of_several_intervals(one_interval: bool) -> None:
    """Rows of one interval leave it out both ways (the incoming table's default gives it); rows of several
    carry it there and back."""
    from datetime import UTC, datetime, timedelta

    import numpy as np

    from nightly_ml.modeling import scoring
    from nightly_ml.spec import load_spec

    spec = load_spec("churn")
    start = datetime(2024, 6, 5, tzinfo=UTC)
    select = scoring._rows_select(spec, start, start + timedelta(days=1), one_interval=one_interval)
    selected = select[: select.index("FROM")]
    assert ('"_interval_start"' in selected) is not one_interval
    assert f'"{spec.key.name}"' in selected and f'"{spec.event_time}"' in selected

    read = {spec.key.name: pa.array(["a", "b"]), spec.event_time: pa.array([start, start], pa.timestamp("us", "UTC"))}
    if not one_interval:
        read["_interval_start"] = pa.array([start, start], pa.timestamp("us", "UTC"))
    chunk = pa.table(read)
    schema = scoring._predictions_schema(spec, chunk.schema)
    assert ("_interval_start" in schema.names) is not one_interval
    sent = scoring._predictions_table(spec, chunk, np.array([0.2, 0.7]), schema)
    assert sent.column("predicted_label").to_pylist() == [0, 1]
    assert sent.column(spec.key.name).to_pylist() == ["a", "b"]
