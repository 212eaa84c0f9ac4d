"""Pure logic of the Delta helpers: which row of a repeated key a MERGE source keeps, and S3 options."""

import pyarrow as pa
from pydantic import SecretStr

from mlops_common.delta import delta_storage_options, first_per_key
from mlops_common.settings import S3Settings


def test_first_per_key_keeps_the_first_copy_of_each_key_in_order():
    batch = pa.table({"id": ["x", "y", "x", "z", "y"], "copy": [1, 1, 2, 1, 2]})
    kept = first_per_key(batch, "id")
    assert kept.to_pydict() == {"id": ["x", "y", "z"], "copy": [1, 1, 1]}
    unique = pa.table({"id": ["a", "b"]})
    assert first_per_key(unique, "id") is unique


def test_first_per_key_of_several_columns():
    batch = pa.table({"id": ["x", "x", "x", "y"], "at": [1, 2, 1, 1], "copy": [1, 1, 2, 1]})
    kept = first_per_key(batch, ["id", "at"])
    assert kept.to_pydict() == {"id": ["x", "x", "y"], "at": [1, 2, 1], "copy": [1, 1, 1]}


def test_first_per_key_takes_nulls_for_one_key():
    batch = pa.table({"id": [None, "a", None], "copy": [1, 1, 2]})
    assert first_per_key(batch, "id").to_pydict() == {"id": [None, "a"], "copy": [1, 1]}
    assert first_per_key(batch, ["id", "copy"]).num_rows == 3


def test_storage_options_for_a_local_gateway_and_for_aws():
    local = S3Settings(
        s3_endpoint_url="http://127.0.0.1:8333", aws_access_key_id="key", aws_secret_access_key=SecretStr("secret")
    )
    options = delta_storage_options(local, timeout_s=5)
    assert options["AWS_ENDPOINT_URL"] == "http://127.0.0.1:8333"
    assert options["AWS_ALLOW_HTTP"] == "true"
    assert options["AWS_SECRET_ACCESS_KEY"] == "secret"
    assert options["timeout"] == "5s"
    # On AWS: the default endpoint and the pod's credentials chain (nothing set here).
    aws = delta_storage_options(S3Settings(s3_endpoint_url=None, aws_access_key_id=None, aws_secret_access_key=None))
    assert "AWS_ENDPOINT_URL" not in aws
    assert "AWS_ACCESS_KEY_ID" not in aws
