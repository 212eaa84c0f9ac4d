"""Training profiles (services/trainer/profiles.yaml): the file validates, `default` is today's recipe, mistakes
are named (profile and field), and the trainer's command line starts from the profile it is given."""

import re
from pathlib import Path

import pytest
import yaml
from sklearn.ensemble import HistGradientBoostingClassifier

import trainer.__main__ as trainer_cli
from mlops_common.training_profiles import (
    Hyperparameters,
    TrainingProfileError,
    load_training_profiles,
    training_profile,
)
from trainer.model import DEFAULT_HYPERPARAMETERS, build_classifier
from trainer.train import TrainingRequest

PROFILES_FILE = trainer_cli.PROFILES_FILE
SHIPPED = yaml.safe_load(PROFILES_FILE.read_text())


def _write(tmp_path: Path, content: object) -> Path:
    path = tmp_path / "profiles.yaml"
    path.write_text(content if isinstance(content, str) else yaml.safe_dump(content))
    return path


def _with(profile: str, **changes: object) -> dict:
    """The shipped file with `changes` (dotted paths into `profile`; None deletes the key)."""
    content = yaml.safe_load(PROFILES_FILE.read_text())
    for dotted, value in changes.items():
        *parents, leaf = dotted.split(".")
        node = content["profiles"][profile]
        for key in parents:
            node = node[key]
        if value is None:
            del node[leaf]
        else:
            node[leaf] = value
    return content


def test_the_shipped_profiles_validate_and_build_a_classifier() -> None:
    profiles = load_training_profiles(PROFILES_FILE)
    assert {"default", "small", "large"} <= set(profiles)
    for name, profile in profiles.items():
        classifier = build_classifier(profile.hyperparameters.as_dict(), profile.seed)
        assert classifier.get_params()["max_iter"] == SHIPPED["profiles"][name]["hyperparameters"]["max_iter"]


def test_the_default_profile_is_todays_recipe() -> None:
    """Nothing changes for whoever passes no --profile (and for the chart's default trainer.profile)."""
    default = training_profile(PROFILES_FILE, "default")
    assert default.hyperparameters.as_dict() == DEFAULT_HYPERPARAMETERS
    assert (default.holdout_fraction, default.seed) == (TrainingRequest().holdout_fraction, TrainingRequest().seed)
    assert default.gpu is None
    assert default.node_selector == {}


def test_profile_hyperparameters_are_parameters_of_the_classifier() -> None:
    """The loader cannot import scikit-learn (it serves the API too): its list of names is checked here."""
    settable = set(HistGradientBoostingClassifier().get_params()) - {"random_state"}
    assert set(Hyperparameters.model_fields) <= settable


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        (
            {"hyperparameters.n_estimators": 10},
            r"profile 'large': hyperparameters.n_estimators: unknown hyperparameter; "
            r"a profile may set learning_rate, max_iter, .*",
        ),
        ({"hyperparameters.max_iter": "300"}, r"profile 'large': hyperparameters.max_iter: Input should be .*integer"),
        ({"hyperparameters.learning_rate": 0}, r"profile 'large': hyperparameters.learning_rate: .*greater than 0"),
        ({"holdout_fraction": 1.5}, r"profile 'large': holdout_fraction: Input should be less than 1"),
        ({"seed": None}, r"profile 'large': seed: Field required"),
        ({"resources.limits.memory": "lots"}, r"profile 'large': resources.limits.memory: String should match"),
        (
            {"resources.requests.cpu": "16"},
            r"profile 'large': resources: Value error, requests.cpu 16 exceeds limits.cpu 8",
        ),
        ({"gpu": {"count": 0}}, r"profile 'large': gpu.count: Input should be greater than or equal to 1"),
        ({"nodeSelector": {"pool": 1}}, r"profile 'large': nodeSelector.pool: Input should be a valid string"),
        ({"node_selector": {"pool": "x"}}, r"profile 'large': node_selector: unknown field"),
    ],
    ids=[
        "unknown-hyperparameter",
        "quoted-number",
        "zero-learning-rate",
        "holdout-past-1",
        "missing-seed",
        "bad-quantity",
        "request-over-limit",
        "zero-gpus",
        "node-selector-value",
        "misspelt-field",
    ],
)
def test_a_mistake_names_the_profile_and_the_field(tmp_path: Path, changes: dict, expected: str) -> None:
    path = _write(tmp_path, _with("large", **changes))
    with pytest.raises(TrainingProfileError, match=expected) as failure:
        load_training_profiles(path)
    assert str(failure.value).startswith(f"{path}: ")


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("profiles: [default\n", r"not valid YAML"),
        ({"profiles": {"small": SHIPPED["profiles"]["small"]}}, r"no profile named 'default'"),
        (
            {"profiles": {"Big_One": SHIPPED["profiles"]["default"]}},
            r"profile 'Big_One': name: lowercase letters, digits and '-'",
        ),
        ({"presets": SHIPPED["profiles"]}, r"presets: unknown field"),
    ],
    ids=["not-yaml", "no-default", "bad-name", "misspelt-top-level"],
)
def test_a_broken_file_is_named(tmp_path: Path, content: object, expected: str) -> None:
    with pytest.raises(TrainingProfileError, match=expected):
        load_training_profiles(_write(tmp_path, content))


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(TrainingProfileError, match=r"missing.yaml: cannot read the training profiles"):
        load_training_profiles(tmp_path / "missing.yaml")


def test_an_unknown_profile_lists_the_names() -> None:
    with pytest.raises(
        TrainingProfileError, match=r"no training profile 'huge' in .*; profiles: default, small, large"
    ):
        training_profile(PROFILES_FILE, "huge")


def _request(*argv: str) -> TrainingRequest:
    return trainer_cli._request(trainer_cli._parser().parse_args(list(argv)))


def test_no_options_train_todays_recipe_tagged_with_the_default_profile() -> None:
    request = _request()
    assert request.hyperparameters == DEFAULT_HYPERPARAMETERS
    assert (request.holdout_fraction, request.seed) == (0.2, 7)
    assert request.tags == {"training_profile": "default"}


def test_the_profile_gives_the_recipe_and_the_tag() -> None:
    large = training_profile(PROFILES_FILE, "large")
    request = _request("--profile", "large", "--tag", "reason=test")
    assert request.hyperparameters == large.hyperparameters.as_dict()
    assert request.hyperparameters != DEFAULT_HYPERPARAMETERS
    assert request.tags == {"reason": "test", "training_profile": "large"}


def test_explicit_options_override_the_profile(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("max_iter: 500\nlearning_rate: 0.2\n")
    request = _request(
        "--profile", "small", "--config", str(config), "--param", "learning_rate=0.3", "--seed", "1",
        "--holdout-fraction", "0.25", "--tag", "training_profile=forged",
    )  # fmt: skip
    small = training_profile(PROFILES_FILE, "small").hyperparameters.as_dict()
    assert request.hyperparameters == {**small, "max_iter": 500, "learning_rate": 0.3}
    assert (request.holdout_fraction, request.seed) == (0.25, 1)
    assert request.tags == {"training_profile": "small"}


def test_list_profiles_prints_names_descriptions_and_resources(capsys: pytest.CaptureFixture[str]) -> None:
    assert trainer_cli.main(["--list-profiles"]) == 0
    out = capsys.readouterr().out
    for name, profile in load_training_profiles(PROFILES_FILE).items():
        assert re.search(rf"^{name} +{re.escape(profile.description)}$", out, re.MULTILINE)
    assert "cpu 4-8, memory 8Gi-16Gi, nodes mlops.platform/node-pool=training" in out


def test_an_unknown_profile_exits_2_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert trainer_cli.main(["--profile", "huge"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("trainer: no training profile 'huge'")
    assert "profiles: default, small, large" in err


def test_a_broken_profiles_file_exits_2_naming_the_field(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(trainer_cli, "PROFILES_FILE", _write(tmp_path, _with("default", **{"hyperparameters.lr": 1})))
    for argv in (["--list-profiles"], []):
        assert trainer_cli.main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1
        assert "profile 'default': hyperparameters.lr: unknown hyperparameter" in err


def test_an_unquoted_number_is_a_quantity(tmp_path: Path) -> None:
    """YAML reads `cpu: 8` as a number; Kubernetes and the loader take it as "8"."""
    path = _write(tmp_path, _with("large", **{"resources.limits.cpu": 8, "resources.requests.cpu": 0.5}))
    resources = load_training_profiles(path)["large"].resources
    assert (resources.requests.cpu, resources.limits.cpu) == ("0.5", "8")
