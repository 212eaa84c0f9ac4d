"""Named training presets (services/trainer/profiles.yaml): what the trainer computes with and what its pod gets.

One file read by the trainer (`python -m trainer --profile NAME`), by the chart (the trainer Job's resources and
inputs) and by whoever lists the profiles; `load_training_profiles` validates it completely, so a mistake is
reported with the profile and the field it is in, before any training starts.
"""

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

DEFAULT_PROFILE = "default"

# Kubernetes quantity: "500m", "2", "1.5", "6Gi", "512M".
_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")
_UNITS = {
    "m": 1e-3,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "P": 1e15,
    "E": 1e18,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
}


class TrainingProfileError(ValueError):
    """The profiles file is missing, not YAML, or a profile in it is invalid; or no profile has that name."""


def _quantity_text(value: Any) -> Any:
    # YAML reads `cpu: 2` as a number; Kubernetes takes it as "2".
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return value


Quantity = Annotated[
    str,
    BeforeValidator(_quantity_text),
    Field(pattern=_QUANTITY.pattern, description='Kubernetes quantity, e.g. "500m", "2", "6Gi"'),
]


def _quantity_value(quantity: str) -> float:
    """A quantity as a plain number (cores, bytes), to compare a request with its limit."""
    number, unit = _QUANTITY.fullmatch(quantity).groups()
    return float(number) * _UNITS.get(unit or "", 1)


class _Strict(BaseModel):
    # strict: YAML already types its scalars, so "300" or `true` where a number belongs is a mistake, not a cast.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Hyperparameters(_Strict):
    """HistGradientBoostingClassifier parameters a profile may set (the trainer's seed sets random_state).

    Unset ones fall back to the trainer's defaults (trainer.model.DEFAULT_HYPERPARAMETERS), then scikit-learn's.
    """

    learning_rate: float = Field(None, gt=0)
    max_iter: int = Field(None, ge=1)
    max_leaf_nodes: int | None = Field(None, ge=2)
    max_depth: int | None = Field(None, ge=1)
    min_samples_leaf: int = Field(None, ge=1)
    l2_regularization: float = Field(None, ge=0)
    max_features: float = Field(None, gt=0, le=1)
    max_bins: int = Field(None, ge=2, le=255)
    early_stopping: Literal["auto"] | bool = None
    scoring: str | None = None
    validation_fraction: float | None = Field(None, gt=0, lt=1)
    n_iter_no_change: int = Field(None, ge=1)
    tol: float = Field(None, ge=0)
    class_weight: Literal["balanced"] | dict[int, float] | None = None

    def as_dict(self) -> dict[str, Any]:
        """The parameters the profile sets, as the trainer's `build_classifier` takes them."""
        return self.model_dump(exclude_unset=True)


class ResourceAmounts(_Strict):
    cpu: Quantity
    memory: Quantity


class Resources(_Strict):
    requests: ResourceAmounts
    limits: ResourceAmounts

    @model_validator(mode="after")
    def _requests_within_limits(self) -> "Resources":
        # Kubernetes rejects such a pod only when the Job is applied; say so while the file is read.
        for name in ("cpu", "memory"):
            request, limit = getattr(self.requests, name), getattr(self.limits, name)
            if _quantity_value(request) > _quantity_value(limit):
                raise ValueError(f"requests.{name} {request} exceeds limits.{name} {limit}")
        return self


class Gpu(_Strict):
    # Rendered as the container's `nvidia.com/gpu` limit.
    count: int = Field(ge=1)


class TrainingProfile(_Strict):
    description: str = Field(min_length=1)
    hyperparameters: Hyperparameters
    holdout_fraction: float = Field(gt=0, lt=1)
    seed: int = Field(ge=0)
    resources: Resources
    gpu: Gpu | None = None
    node_selector: dict[str, str] = Field(default_factory=dict, alias="nodeSelector")


ProfileName = Annotated[str, Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63)]


class TrainingProfiles(_Strict):
    profiles: dict[ProfileName, TrainingProfile]

    @model_validator(mode="after")
    def _has_the_default(self) -> "TrainingProfiles":
        if DEFAULT_PROFILE not in self.profiles:
            raise ValueError(f"no profile named {DEFAULT_PROFILE!r} (the trainer's and the chart's default)")
        return self


def _describe(error: dict[str, Any]) -> str:
    location = [str(part) for part in error["loc"]]
    where = ""
    if location[:1] == ["profiles"] and len(location) >= 2:
        where = f"profile {location[1]!r}: "
        location = location[2:]
    field = ".".join(location)
    message = error["msg"]
    if location == ["[key]"]:
        field, message = "name", "lowercase letters, digits and '-' (it becomes a tag and a value of the chart)"
    elif error["type"] == "extra_forbidden" and location[:1] == ["hyperparameters"]:
        message = f"unknown hyperparameter; a profile may set {', '.join(Hyperparameters.model_fields)}"
    elif error["type"] == "extra_forbidden":
        message = "unknown field"
    return f"{where}{field + ': ' if field else ''}{message}"


def load_training_profiles(path: Path) -> dict[str, TrainingProfile]:
    """Every profile of the file at `path`, by name; raises TrainingProfileError naming the profile and field."""
    try:
        content = yaml.safe_load(path.read_text())
    except OSError as err:
        raise TrainingProfileError(f"{path}: cannot read the training profiles ({err.strerror})") from None
    except yaml.YAMLError as err:
        raise TrainingProfileError(f"{path}: not valid YAML ({err})".replace("\n", " ")) from None
    try:
        return TrainingProfiles.model_validate(content).profiles
    except ValidationError as err:
        problems = "; ".join(_describe(e) for e in err.errors(include_url=False))
        raise TrainingProfileError(f"{path}: {problems}") from None


def training_profile(path: Path, name: str) -> TrainingProfile:
    """The profile `name` of the file at `path`; an unknown name is a TrainingProfileError listing the names."""
    profiles = load_training_profiles(path)
    if name not in profiles:
        raise TrainingProfileError(f"no training profile {name!r} in {path}; profiles: {', '.join(profiles)}")
    return profiles[name]
