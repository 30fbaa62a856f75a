"""Slice values in Spark (monitoring) name rows exactly as the pandas path (training, evaluation) does."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import functions as F

from lakehouse_ml.modeling.metrics import slice_values
from lakehouse_ml.monitoring.baseline import slice_value

TENURE = {"column": "tenure_days", "edges": [0.0, 90.0, 180.0, 365.0]}


@pytest.mark.parametrize("spec", [TENURE, {"column": "tenure_days"}, "tenure_days"])
def test_spark_slice_values_equal_the_pandas_ones(spark, spec):
    values = [0.0, 89.9, 90.0, 180.0, 364.99, 365.0, 1000.0, -5.0, None]
    frame = spark.createDataFrame(pd.DataFrame({"i": range(len(values)), "tenure_days": values}))
    got = frame.select("i", slice_value(spec).alias("v")).orderBy("i").toPandas()["v"].tolist()
    expected = slice_values(pd.DataFrame({"tenure_days": values}), spec).tolist()
    if isinstance(spec, dict) and "edges" in spec:
        assert expected == ["0_90", "0_90", "90_180", "180_365", "180_365", "365_plus", "365_plus", "0_90", "unknown"]
    else:  # a plain numeric column is named by its text, which only the pandas path formats as "0.0"
        expected = ["unknown" if v is None or np.isnan(v) else str(v) for v in values]
    assert got == expected


def test_a_slice_value_read_from_served_json_is_bucketed_like_the_column(spark):
    served = spark.createDataFrame([('{"tenure_days": 120}',), ('{"tenure_days": null}',), ("{}",)], ["features"])
    got = served.select(slice_value(TENURE, F.get_json_object("features", "$.tenure_days")).alias("v")).toPandas()["v"]
    assert got.tolist() == ["90_180", "unknown", "unknown"]
