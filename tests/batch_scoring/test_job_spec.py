"""A batch-scoring request is checked before anything is read: job id, what to score, a time zone."""

from datetime import UTC, datetime

import pytest

from batch_scoring.__main__ import EXIT_BAD_REQUEST, main
from batch_scoring.inputs import InputError
from batch_scoring.job import JobSpec, output_uri


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"job_id": "../escape", "input": "rows.parquet"}, "job id '../escape'"),
        ({"job_id": "x" * 65, "input": "rows.parquet"}, "1-64 letters"),
        ({"job_id": "nightly"}, "give --input"),
        ({"job_id": "nightly", "as_of": datetime(2026, 11, 1)}, "give a time zone"),
    ],
    ids=["path in the id", "id too long", "nothing to score", "naive time"],
)
def test_a_bad_request_is_refused_naming_what_to_fix(fields, message):
    with pytest.raises(InputError, match=message):
        JobSpec(output="s3://bucket/scores", **fields)


def test_a_good_request_names_its_one_output_object():
    spec = JobSpec("nightly-2026-11-28", "s3://bucket/scores/", as_of=datetime(2026, 11, 1, tzinfo=UTC))
    assert output_uri(spec.output, spec.job_id) == "s3://bucket/scores/nightly-2026-11-28.parquet"


def test_the_cli_answers_a_bad_request_with_exit_code_2_and_one_line(capsys):
    assert main(["--output", "/tmp/scores", "--job-id", "a/b", "--input", "rows.parquet"]) == EXIT_BAD_REQUEST
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("batch_scoring: job id 'a/b'")
