from datetime import UTC, datetime

import pandas as pd
import pytest

from mlops_common.raw_tables import RawDataError
from trainer.dataset import TrainingDataError, label_rows

T = datetime(2024, 6, 1, tzinfo=UTC)


def test_label_rows_carry_the_label_time():
    rows = label_rows(pd.DataFrame({"SK_ID_CURR": [1, 2], "TARGET": [0, 1]}), T)
    assert rows.columns.tolist() == ["SK_ID_CURR", "TARGET", "event_timestamp"]
    assert (rows.event_timestamp == pd.Timestamp(T)).all()


def test_single_class_is_refused():
    with pytest.raises(TrainingDataError, match=r"TARGET has a single class \(0\) in all 3 rows"):
        label_rows(pd.DataFrame({"SK_ID_CURR": [1, 2, 3], "TARGET": [0, 0, 0]}), T)


def test_empty_label_set_is_refused():
    with pytest.raises(TrainingDataError, match="no labelled rows"):
        label_rows(pd.DataFrame({"SK_ID_CURR": [], "TARGET": []}), T)


def test_non_binary_label_is_named():
    with pytest.raises(RawDataError, match=r"TARGET must be 0 or 1; 1 of 3 rows are not \(e.g. 2\)"):
        label_rows(pd.DataFrame({"SK_ID_CURR": [1, 2, 3], "TARGET": [0, 1, 2]}), T)
