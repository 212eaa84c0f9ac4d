"""Module-level Feast objects for the `feast` CLI (`feast apply` imports the repository's files).

The platform's own code applies the same objects through credit_features.build(); run the CLI
from the repository root with PYTHONPATH=services:feature_repo and the FEAST_* variables set.
"""

from credit_features import build

from mlops_common.settings import FeastSettings

_repo = build(FeastSettings())

applicant = _repo.applicant
application_source = _repo.application_source
bureau_source = _repo.bureau_source
application_fv = _repo.application_fv
bureau_fv = _repo.bureau_fv
credit_default_v1 = _repo.credit_default_v1
