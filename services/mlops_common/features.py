"""The feature contract: names, order, types and groups of the model's inputs.

Everything that touches features reads this module: the feature pipeline (what it computes and
stores), the Feast definitions (the schema of each feature view), the trainer (column order of the
training matrix), the Triton configuration (input width) and the BFF (request fields and the order
of the tensor it sends). Changing a feature here changes all of them together, which is the point.
"""

from dataclasses import dataclass
from enum import StrEnum

import numpy as np

ENTITY_KEY = "SK_ID_CURR"
# The largest applicant id the API takes: 2^53 - 1, the largest integer every JSON parser (a double)
# keeps exact, well inside the online store's int64 keys.
MAX_ENTITY_ID = 2**53 - 1
LABEL = "TARGET"
EVENT_TIMESTAMP = "event_timestamp"
CREATED_TIMESTAMP = "created_timestamp"

# The versioned Feast FeatureService that training and serving both resolve.
FEATURE_SERVICE = "credit_default_v1"

# One dtype end to end: the offline store, the online store, the training matrix and the Triton
# tensor all hold float32, so serving sees bit-for-bit the values the model was trained on.
FEATURE_DTYPE = np.float32

# Tensor names shared by the ONNX export, both Triton configs and the Triton clients.
MODEL_INPUT = "features"
MODEL_OUTPUT = "probabilities"


class FeatureGroup(StrEnum):
    """Which feature view (and which raw table) a feature comes from."""

    APPLICATION = "application"
    BUREAU = "bureau"


@dataclass(frozen=True)
class Feature:
    name: str
    group: FeatureGroup
    description: str


FEATURES: tuple[Feature, ...] = (
    Feature("AMT_INCOME_TOTAL", FeatureGroup.APPLICATION, "Income of the client"),
    Feature("AMT_CREDIT", FeatureGroup.APPLICATION, "Credit amount of the loan"),
    Feature("AMT_ANNUITY", FeatureGroup.APPLICATION, "Loan annuity"),
    Feature("DAYS_BIRTH", FeatureGroup.APPLICATION, "Client's age in days at application (negative)"),
    Feature(
        "DAYS_EMPLOYED",
        FeatureGroup.APPLICATION,
        "Days the client was employed before the application (negative; 365243 = not employed)",
    ),
    Feature("bureau_credit_count", FeatureGroup.BUREAU, "Number of credits reported by the credit bureau"),
    Feature("bureau_credit_active_count", FeatureGroup.BUREAU, "Number of those credits still active"),
    Feature(
        "bureau_credit_days_enddate_mean",
        FeatureGroup.BUREAU,
        "Mean remaining duration of bureau credits in days (missing when there are none)",
    ),
    Feature("bureau_amt_credit_sum", FeatureGroup.BUREAU, "Total amount of bureau credits"),
    Feature("bureau_amt_credit_sum_overdue", FeatureGroup.BUREAU, "Total overdue amount of bureau credits"),
)

FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES)
N_FEATURES = len(FEATURES)


def feature_names(group: FeatureGroup) -> tuple[str, ...]:
    return tuple(f.name for f in FEATURES if f.group is group)
