"""The model's scores of one Arrow chunk of warehouse rows, as ``predict_proba`` (or ``predict``) gives them.

A fitted pipeline of :func:`nightly_ml.modeling.training.build_pipeline`'s shape (a ``ColumnTransformer``,
then the estimator) transforms every row on its own: the categorical branch's output for a row is a function
of that row's categories alone. A chunk of 50k rows holds a few dozen distinct combinations of them, so the
branch transforms each combination once and every row takes its combination's output row (numpy indexing),
which is the very same floats the branch gives row by row. The combinations come from Arrow's dictionary
encoding of each text column, in C++; the numeric branch and the estimator run on the chunk as they would.
The one-hot encoder's per-value lookups in Python were two thirds of ``predict_proba`` on the churn model:
1M rows in chunks of 50k, frame and scores 0.69-0.73 s -> 0.23-0.26 s, equal to the last bit.

A model of another shape (one a caller built by hand, a branch passed through, sparse or DataFrame output, an
estimator fitted on named columns) is scored by :func:`evaluation.predict_scores` on the chunk's feature
frame, as before.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from sklearn.compose import ColumnTransformer
from sklearn.pipeline import Pipeline

from nightly_ml.modeling import evaluation
from nightly_ml.spec import DatasetSpec

# A branch's combinations are numbered in one int64; beyond this many possible ones (columns of thousands of
# values each) the branch transforms the chunk's rows instead.
_MAX_COMBINATIONS = 2**62


def feature_frame(spec: DatasetSpec, table: pa.Table) -> pd.DataFrame:
    """The model's input from a typed Arrow chunk, equal to :func:`frames.feature_frame` of the same rows:
    numeric features float64 (NaN = missing), categories and booleans ('true'/'false') as strings in
    object columns (NaN = missing)."""
    return pd.DataFrame({f.name: _feature_values(table, f.name, f.is_numeric) for f in spec.features})


def _feature_values(table: pa.Table, name: str, numeric: bool) -> Any:
    values = table.column(name)
    if numeric:
        return values.cast(pa.float64()).to_numpy()
    distinct, codes = _dictionary(values)
    return pd.Series(distinct[codes], dtype=object)


def _dictionary(values: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """A text or boolean column's distinct values as one Python string each (a boolean's as 'true'/'false'),
    NaN last (for missing), and each row's position among them.

    Arrow finds the distinct values in C++ and a row takes a reference to its value's one string, so no
    string is made per row; and the encoder's lookups (a dict per value) hash each string once, as a str
    caches its hash (1M churn rows: frame and predict_proba 1.41-1.65 s -> 1.05-1.31 s)."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    encoded = pc.dictionary_encode(values)
    dictionary = encoded.dictionary
    if pa.types.is_boolean(dictionary.type):
        dictionary = dictionary.cast(pa.string())  # 'true'/'false', as the model saw them in training
    distinct = np.append(dictionary.to_numpy(zero_copy_only=False).astype(object), np.nan)
    return distinct, encoded.indices.fill_null(len(dictionary)).to_numpy().astype(np.int64)


@dataclass(frozen=True)
class _Branch:
    transformer: Any
    numeric: dict[str, bool]  # the branch's columns, in its order: numeric or not

    @property
    def categorical(self) -> bool:
        return not any(self.numeric.values())


@dataclass(frozen=True)
class Scorer:
    """How one model scores chunks: branch by branch (``branches``), each distinct combination of categories
    transformed once, or, when it is of another shape, whole."""

    spec: DatasetSpec
    model: Any
    branches: tuple[_Branch, ...] | None

    @property
    def by_branches(self) -> bool:
        return self.branches is not None


def scorer(spec: DatasetSpec, model: Any) -> Scorer:
    """The model's :class:`Scorer`; it transforms each distinct combination of categories once when the model
    is a fitted ``ColumnTransformer`` of named spec features, dense and dropping nothing else, then an
    estimator fitted on its unnamed output."""
    return Scorer(spec, model, _branches(spec, model))


def _branches(spec: DatasetSpec, model: Any) -> tuple[_Branch, ...] | None:
    if not isinstance(model, Pipeline) or len(model.steps) != 2:
        return None
    (_, preprocess), (_, estimator) = model.steps
    if not isinstance(preprocess, ColumnTransformer) or not hasattr(preprocess, "transformers_"):
        return None
    features = {f.name: f for f in spec.features}
    if getattr(preprocess, "sparse_output_", True) or hasattr(estimator, "feature_names_in_"):
        return None
    if list(getattr(preprocess, "feature_names_in_", [])) != list(features):
        return None
    branches = []
    for _, transformer, columns in preprocess.transformers_:
        if isinstance(transformer, str):
            if transformer == "drop":
                continue
            return None  # one sklearn left unfitted: ColumnTransformer handles it its own way
        if not isinstance(columns, list) or not all(isinstance(c, str) and c in features for c in columns):
            return None
        if columns:
            branches.append(_Branch(transformer, {c: features[c].is_numeric for c in columns}))
    return tuple(branches) if branches else None


def scores(scorer_: Scorer, table: pa.Table) -> np.ndarray:
    """Float64 scores of the chunk's rows: regression values, or the probability of class 1."""
    spec, model = scorer_.spec, scorer_.model
    if scorer_.branches is None:
        result = evaluation.predict_scores(spec, model, feature_frame(spec, table))
    else:
        blocks = [_branch_output(branch, table) for branch in scorer_.branches]
        result = evaluation.predict_scores(spec, model.steps[-1][1], np.hstack(blocks))
    return np.asarray(result, dtype="float64")


def _branch_output(branch: _Branch, table: pa.Table) -> np.ndarray:
    if not branch.categorical:
        return _rows_output(branch, table)
    dictionaries = {c: _dictionary(table.column(c)) for c in branch.numeric}
    possible = 1
    for distinct, _ in dictionaries.values():
        possible *= len(distinct)
    if possible > _MAX_COMBINATIONS:
        return _rows_output(branch, table)
    # Each row's combination as one number, the first column's position varying fastest.
    combination = np.zeros(table.num_rows, dtype=np.int64)
    strides: dict[str, int] = {}
    stride = 1
    for c, (distinct, codes) in dictionaries.items():
        combination += codes * stride
        strides[c], stride = stride, stride * len(distinct)
    present, row_of_combination = _distinct(combination, possible)
    combinations = pd.DataFrame(
        {
            c: pd.Series(distinct[(present // strides[c]) % len(distinct)], dtype=object)
            for c, (distinct, _) in dictionaries.items()
        }
    )
    return branch.transformer.transform(combinations)[row_of_combination]


def _rows_output(branch: _Branch, table: pa.Table) -> np.ndarray:
    """The branch's output of every row of the chunk, row by row (the model's own way)."""
    return branch.transformer.transform(
        pd.DataFrame({c: _feature_values(table, c, numeric) for c, numeric in branch.numeric.items()})
    )


def _distinct(numbers: np.ndarray, bound: int) -> tuple[np.ndarray, np.ndarray]:
    """The distinct values of non-negative ``numbers`` below ``bound``, ascending, and each number's position
    among them: by a table of the bound's size when that is small (one pass), else by sorting."""
    if bound <= 4 * len(numbers) + 1024:
        seen = np.zeros(bound, dtype=bool)
        seen[numbers] = True
        position = np.cumsum(seen) - 1
        return np.flatnonzero(seen), position[numbers]
    present, inverse = np.unique(numbers, return_inverse=True)
    return present, inverse.reshape(-1)
