import json

import pytest
from pydantic import ValidationError

from bff.schemas import ENTITY_EXAMPLE, FEATURES_EXAMPLE, PredictRequest
from mlops_common.features import FEATURE_NAMES


def errors(payload: str):
    with pytest.raises(ValidationError) as err:
        PredictRequest.model_validate(json.loads(payload))
    return [(e["type"], e["loc"]) for e in err.value.errors()]


def test_documented_bodies_are_accepted_verbatim():
    full = PredictRequest.model_validate(FEATURES_EXAMPLE)
    assert [getattr(full, n) for n in FEATURE_NAMES] == [float(FEATURES_EXAMPLE[n]) for n in FEATURE_NAMES]
    assert PredictRequest.model_validate(ENTITY_EXAMPLE).SK_ID_CURR == 100002


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ('{"AMT_CREDIT": "200000"}', ("float_type", ("AMT_CREDIT",))),
        ('{"AMT_CREDIT": true}', ("float_type", ("AMT_CREDIT",))),
        ('{"AMT_CREDIT": NaN}', ("finite_number", ("AMT_CREDIT",))),
        ('{"AMT_CREDIT": Infinity}', ("finite_number", ("AMT_CREDIT",))),
        ('{"SK_ID_CURR": 1.5}', ("int_type", ("SK_ID_CURR",))),
        ('{"SK_ID_CURR": -1}', ("greater_than_equal", ("SK_ID_CURR",))),
        ('{"SK_ID_CURR": 1, "AMT_CREDITT": 1}', ("extra_forbidden", ("AMT_CREDITT",))),
    ],
)
def test_bad_values_name_the_field(payload, expected):
    assert expected in errors(payload)
