"""The retraining policy: pure logic over the champion's figures."""

import pytest

from monitor.retraining import Signals, decide, trainer_arguments
from monitor.settings import Settings

QUIET = Signals(
    champion_version="3",
    drifted=False,
    drift_streak=0,
    drifted_features=(),
    score_psi=0.01,
    live_auc=0.75,
    labeled=500,
    new_labels=0,
    seconds_since_last_retraining=None,
)


def policy(**overrides) -> Settings:
    return Settings(retrain_mode="local", retrain_drift_windows=3, retrain_min_live_auc=0.6, **overrides)


def signals(**changes) -> Signals:
    return Signals(**{**QUIET.__dict__, **changes})


def test_nothing_holds_nothing_starts():
    assert decide(QUIET, policy(), running=False).decision == "not_needed"
    assert decide(QUIET, policy(), running=False).reason == "none"


@pytest.mark.parametrize(
    ("changes", "settings", "reason"),
    [
        ({"drifted": True, "drift_streak": 3, "drifted_features": ("AMT_INCOME_TOTAL",)}, {}, "drift"),
        ({"live_auc": 0.55}, {}, "live_auc"),
        ({"new_labels": 1000}, {"retrain_new_labels": 1000}, "new_labels"),
        (
            {"seconds_since_last_retraining": 90_000.0},
            {"retrain_every_s": 86_400.0, "retrain_cooldown_s": 0},
            "schedule",
        ),
        ({}, {"retrain_every_s": 86_400.0}, "schedule"),  # never retrained: the schedule is due
    ],
)
def test_each_condition_triggers(changes, settings, reason):
    decision = decide(signals(**changes), policy(**settings), running=False)
    assert (decision.decision, decision.reason) == ("triggered", reason)


@pytest.mark.parametrize(
    "changes",
    [
        {"drifted": True, "drift_streak": 2},  # one window short
        {"live_auc": 0.6},  # at the floor is not below it
        {"live_auc": None, "labeled": 10},  # too few labels for an AUC: no verdict
        {"new_labels": 999},  # below N (and the condition is off by default)
    ],
)
def test_conditions_just_short_do_not_trigger(changes):
    settings = policy(retrain_new_labels=1000) if "new_labels" in changes else policy()
    assert decide(signals(**changes), settings, running=False).decision == "not_needed"


def test_one_at_a_time_cool_down_and_off():
    drifting = signals(drifted=True, drift_streak=5, seconds_since_last_retraining=600.0)
    assert decide(drifting, policy(retrain_cooldown_s=3600), running=False).decision == "cooling_down"
    assert decide(drifting, policy(retrain_cooldown_s=300), running=False).decision == "triggered"
    assert decide(drifting, policy(retrain_cooldown_s=300), running=True).decision == "already_running"
    off = decide(drifting, Settings(retrain_mode="off", retrain_drift_windows=3), running=False)
    assert (off.decision, off.reason) == ("disabled", "drift")


def test_a_retraining_is_a_challenger_carrying_the_numbers():
    drifting = signals(
        drifted=True, drift_streak=3, drifted_features=("AMT_INCOME_TOTAL", "AMT_CREDIT"), score_psi=0.31
    )
    args = trainer_arguments(drifting.tags())
    assert args[0] == "--no-promote"
    assert "--tag=retraining.drifted_features=AMT_INCOME_TOTAL,AMT_CREDIT" in args
    assert "--tag=retraining.score_psi=0.3100" in args
    assert "--tag=retraining.live_auc=0.7500" in args
