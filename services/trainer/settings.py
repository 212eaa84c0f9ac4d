from pydantic import Field

from mlops_common.jobs import JobsSettings
from mlops_common.settings import FeastSettings, MlflowSettings


class Settings(FeastSettings, MlflowSettings, JobsSettings):
    """Settings of the training job; hyperparameters come from the command line or a config file (run by the
    job worker, it reports the registered version into its job's row: ``JOBS_DATABASE_URL``, ``MLOPS_JOB_ID``)."""

    mlflow_experiment_name: str = "credit-default"
    # Absolute floor of the quality gate: below it a model is never made champion.
    min_holdout_auc: float = Field(0.6, ge=0.0, le=1.0)
    # ONNX and scikit-learn probabilities may differ by at most this on the holdout.
    onnx_parity_tolerance: float = Field(1e-5, gt=0)
