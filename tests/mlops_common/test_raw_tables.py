import pytest

from mlops_common.raw_tables import APPLICATION_TRAIN, BUREAU, RawDataError, read_raw_table

HEADER = "SK_ID_CURR,TARGET,AMT_INCOME_TOTAL,AMT_CREDIT,AMT_ANNUITY,DAYS_BIRTH,DAYS_EMPLOYED,EXTRA"


def write(tmp_path, text, name="application_train.csv"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_reads_and_types_required_columns(tmp_path):
    path = write(
        tmp_path,
        f"{HEADER}\n100002,1,202500.0,406597.5,,-9461,-637,x\n100003,0,270000,1293502.5,35698.5,-16765,-1188,y\n",
    )
    frame = read_raw_table(APPLICATION_TRAIN, path)
    assert list(frame.columns) == list(APPLICATION_TRAIN.columns)
    assert frame.SK_ID_CURR.dtype == "int64"
    assert frame.TARGET.tolist() == [1, 0]
    assert frame.AMT_ANNUITY.isna().tolist() == [True, False]  # gaps in feature columns are allowed


def test_empty_file_is_named(tmp_path):
    with pytest.raises(RawDataError, match=r"application_train.csv: the file is empty \(no header, 0 rows\)"):
        read_raw_table(APPLICATION_TRAIN, write(tmp_path, ""))


def test_header_only_is_refused(tmp_path):
    with pytest.raises(RawDataError, match=r"application_train.csv: no data rows \(header only, 0 rows\)"):
        read_raw_table(APPLICATION_TRAIN, write(tmp_path, HEADER + "\n"))


def test_missing_column_names_file_column_and_rows(tmp_path):
    text = "SK_ID_CURR,TARGET,AMT_INCOME_TOTAL,AMT_ANNUITY,DAYS_BIRTH,DAYS_EMPLOYED\n1,0,1,1,1,1\n2,1,1,1,1,1\n"
    with pytest.raises(
        RawDataError, match=r"application_train.csv: missing required column\(s\) AMT_CREDIT \(2 rows\)"
    ):
        read_raw_table(APPLICATION_TRAIN, write(tmp_path, text))


def test_unparseable_value_names_column_count_and_first_row(tmp_path):
    text = f"{HEADER}\n1,0,100,200,10,-1,-1,a\n2,0,100,lots,10,-1,-1,b\n3,0,100,12k,10,-1,-1,c\n"
    with pytest.raises(RawDataError) as err:
        read_raw_table(APPLICATION_TRAIN, write(tmp_path, text))
    assert str(err.value) == (
        "application_train.csv: column AMT_CREDIT has 2 unparseable number value(s) of 3 rows "
        "(first at data row 2: 'lots')"
    )


def test_fractional_id_is_unparseable_integer(tmp_path):
    header = "SK_ID_CURR,SK_ID_BUREAU,CREDIT_ACTIVE,DAYS_CREDIT_ENDDATE,AMT_CREDIT_SUM,AMT_CREDIT_SUM_OVERDUE"
    text = f"{header}\n1.5,7,Active,1,1,0\n"
    with pytest.raises(RawDataError, match=r"bureau.csv: column SK_ID_CURR has 1 unparseable integer"):
        read_raw_table(BUREAU, write(tmp_path, text, "bureau.csv"))


def test_empty_key_is_refused(tmp_path):
    text = f"{HEADER}\n1,0,1,1,1,1,1,a\n2,,1,1,1,1,1,b\n"
    with pytest.raises(RawDataError, match=r"application_train.csv: column TARGET is empty in 1 of 2 rows"):
        read_raw_table(APPLICATION_TRAIN, write(tmp_path, text))
