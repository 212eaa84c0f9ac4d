"""Feast objects for the credit-default features, built from the settings of the environment.

Entity -> Source -> FeatureView -> FeatureService. Schemas come from mlops_common.features, so the
views hold exactly the features, order and dtype that training and serving use. Labels are not
here: the trainer reads TARGET from the raw table, so a label can never leak into serving.
"""

from dataclasses import dataclass
from datetime import timedelta

from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.data_format import ParquetFormat
from feast.types import Float32

from mlops_common.features import (
    CREATED_TIMESTAMP,
    ENTITY_KEY,
    EVENT_TIMESTAMP,
    FEATURE_SERVICE,
    FeatureGroup,
    feature_names,
)
from mlops_common.settings import FeastSettings

# How far back a point-in-time join looks for a feature row. The snapshots are rewritten on every
# pipeline run, so this only has to outlast the longest gap between runs.
FEATURE_TTL = timedelta(days=3650)


def offline_path(settings: FeastSettings, group: FeatureGroup) -> str:
    return f"s3://{settings.offline_bucket}/{settings.offline_prefix}/{group.value}_features.parquet"


@dataclass(frozen=True)
class CreditFeatureRepo:
    applicant: Entity
    application_source: FileSource
    bureau_source: FileSource
    application_fv: FeatureView
    bureau_fv: FeatureView
    credit_default_v1: FeatureService

    def objects(self) -> list:
        return [
            self.applicant,
            self.application_source,
            self.bureau_source,
            self.application_fv,
            self.bureau_fv,
            self.credit_default_v1,
        ]


def _source(settings: FeastSettings, group: FeatureGroup) -> FileSource:
    return FileSource(
        name=f"{group.value}_source",
        path=offline_path(settings, group),
        file_format=ParquetFormat(),
        timestamp_field=EVENT_TIMESTAMP,
        created_timestamp_column=CREATED_TIMESTAMP,
        s3_endpoint_override=settings.s3_endpoint_url,
    )


def _view(group: FeatureGroup, entity: Entity, source: FileSource, description: str) -> FeatureView:
    return FeatureView(
        name=f"{group.value}_fv",
        entities=[entity],
        ttl=FEATURE_TTL,
        schema=[Field(name=name, dtype=Float32) for name in feature_names(group)],
        source=source,
        online=True,
        description=description,
    )


def build(settings: FeastSettings) -> CreditFeatureRepo:
    # The applicant of a Home Credit loan application, keyed like the raw tables.
    applicant = Entity(
        name="applicant", join_keys=[ENTITY_KEY], value_type=ValueType.INT64, description="Loan applicant"
    )
    # Parquet snapshots written by the feature pipeline to the offline store in S3.
    application_source = _source(settings, FeatureGroup.APPLICATION)
    bureau_source = _source(settings, FeatureGroup.BUREAU)
    # Amounts and durations from the application form.
    application_fv = _view(FeatureGroup.APPLICATION, applicant, application_source, "Application form features")
    # Aggregates of the applicant's credit bureau history (zero counts when there is none).
    bureau_fv = _view(FeatureGroup.BUREAU, applicant, bureau_source, "Credit bureau aggregates")
    # The versioned contract of the model: bump the suffix when the feature list changes.
    credit_default_v1 = FeatureService(
        name=FEATURE_SERVICE,
        features=[application_fv, bureau_fv],
        description="Inputs of the credit-default model, for training and serving",
    )
    return CreditFeatureRepo(applicant, application_source, bureau_source, application_fv, bureau_fv, credit_default_v1)
