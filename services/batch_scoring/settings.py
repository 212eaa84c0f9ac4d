from pydantic import Field

from mlops_common.jobs import JobsSettings
from mlops_common.settings import DecisionSettings, FeastSettings, TritonSettings


class Settings(FeastSettings, TritonSettings, DecisionSettings, JobsSettings):
    """Settings of the batch-scoring job; what it scores and where it writes come from its command line
    (run by the job worker, it reports into its job's row: ``JOBS_DATABASE_URL``, ``MLOPS_JOB_ID``)."""

    # Rows read, scored and written at a time: the job holds a few chunks, whatever the input's size.
    batch_scoring_chunk_rows: int = Field(65_536, ge=1)
    # Triton calls under way at once, each of up to the model's max_batch_size rows.
    batch_scoring_in_flight: int = Field(8, ge=1)
    # Attempts of a call Triton answers as unavailable (restarting, overloaded, reloading the model)
    # before the job fails; the waits between them double from 0.1 s up to 2 s.
    batch_scoring_call_attempts: int = Field(5, ge=1)
    triton_timeout_s: float = Field(30.0, gt=0)
