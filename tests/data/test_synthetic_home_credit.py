import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split

from mlops_common.raw_tables import APPLICATION_TEST, APPLICATION_TRAIN, BUREAU, read_raw_table
from synthetic_home_credit import TABLE_FILES, generate, main


@pytest.fixture(scope="module")
def tables():
    return generate(4000, seed=3)


def test_same_seed_same_tables_other_seed_other_tables(tables):
    again = generate(4000, seed=3)
    pd.testing.assert_frame_equal(tables.application_train, again.application_train)
    pd.testing.assert_frame_equal(tables.bureau, again.bureau)
    assert not generate(4000, seed=4).application_train.equals(tables.application_train)


def test_kaggle_columns_and_imbalance(tables):
    train, test, bureau = tables.application_train, tables.application_test, tables.bureau
    assert {"SK_ID_CURR", "TARGET", "AMT_INCOME_TOTAL", "DAYS_EMPLOYED"} <= set(train.columns)
    assert "TARGET" not in test.columns
    assert {"SK_ID_BUREAU", "CREDIT_ACTIVE", "DAYS_CREDIT_ENDDATE", "AMT_CREDIT_SUM_OVERDUE"} <= set(bureau.columns)
    assert len(train) + len(test) == 4000
    assert set(train.SK_ID_CURR).isdisjoint(test.SK_ID_CURR)
    assert set(bureau.SK_ID_CURR) <= set(train.SK_ID_CURR) | set(test.SK_ID_CURR)
    assert 0.05 < train.TARGET.mean() < 0.11


def test_written_files_pass_the_platform_reader(tables, tmp_path):
    tables.write(tmp_path)
    for table in (APPLICATION_TRAIN, APPLICATION_TEST, BUREAU):
        frame = read_raw_table(table, str(tmp_path / table.filename))
        assert len(frame) > 0


def test_signal_is_learnable(tables):
    train = tables.application_train
    x = train[["AMT_INCOME_TOTAL", "AMT_CREDIT", "AMT_ANNUITY", "DAYS_BIRTH", "DAYS_EMPLOYED"]].to_numpy()
    y = train.TARGET.to_numpy()
    x_fit, x_test, y_fit, y_test = train_test_split(x, y, test_size=0.3, stratify=y, random_state=0)
    model = HistGradientBoostingClassifier(max_iter=50, random_state=0).fit(x_fit, y_fit)
    assert roc_auc_score(y_test, model.predict_proba(x_test)[:, 1]) > 0.65


def test_cli_keeps_existing_files_unless_forced(tmp_path):
    (tmp_path / "application_train.csv").write_text("real kaggle file")
    assert main(["--applicants", "50", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "application_train.csv").read_text() == "real kaggle file"
    assert main(["--applicants", "50", "--out", str(tmp_path), "--force"]) == 0
    assert all((tmp_path / name).stat().st_size > 100 for name in TABLE_FILES)
    assert not np.isnan(pd.read_csv(tmp_path / "application_train.csv").TARGET).any()
