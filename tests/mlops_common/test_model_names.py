"""One model, two spellings: MLflow's registered name and the Triton/API name follow one rule."""

from mlops_common.settings import MlflowSettings, TritonSettings, triton_model_name_for


def test_triton_serves_the_registered_model_under_its_mapped_name() -> None:
    # Triton model names become directory and metric label values; MLflow's keep the hyphen.
    assert MlflowSettings().registered_model_name == "credit-default"
    assert TritonSettings().triton_model_name == triton_model_name_for("credit-default") == "credit_default"
