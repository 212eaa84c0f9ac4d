from mlops_common.settings import FeastSettings


class Settings(FeastSettings):
    """Settings of the feature pipeline: raw CSV in S3 -> Parquet offline store -> Feast."""
