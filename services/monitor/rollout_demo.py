"""``make demo-rollout`` (``python -m monitor.rollout_demo``, on the local stack after ``make demo``): a canary
rollout of a challenger from end to end. It trains a challenger with another recipe if there is none
(``python -m trainer --no-promote``), sets the policy to canary at ``DEMO_CANARY_PERCENT`` % (the registered
model's tags, as ``mlops rollout canary`` does), sends single predictions for applicant after applicant,
and waits for the monitor's analysis (from Prometheus) to promote or roll the challenger back; then prints
the traffic split, the analysis' figures and the decision. The policy goes back to what it was."""

from __future__ import annotations

import itertools
import subprocess
import sys
import threading
import time
from collections import Counter
from typing import Any

import httpx
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from pydantic import Field

from feature_store.pipeline import read_raw
from mlops_common.champion import ROLLOUT_DECISION
from mlops_common.features import ENTITY_KEY
from mlops_common.logging import configure_logging
from mlops_common.raw_tables import APPLICATION_TRAIN
from mlops_common.rollout import CHALLENGER_ALIAS, CHAMPION_ALIAS, TAG_CANARY_PERCENT, TAG_MODE
from mlops_common.settings import DataSettings, MlflowSettings


class DemoSettings(DataSettings, MlflowSettings):
    bff_port: int = 8080
    prometheus_url: str = "http://127.0.0.1:9090"
    demo_canary_percent: float = Field(20.0, gt=0, le=100)
    demo_timeout_s: float = Field(600.0, gt=0)


def version_by_alias(client: MlflowClient, model: str, alias: str):
    try:
        return client.get_model_version_by_alias(model, alias)
    except MlflowException:
        return None


def ensure_challenger(client: MlflowClient, model: str) -> str:
    champion = version_by_alias(client, model, CHAMPION_ALIAS)
    challenger = version_by_alias(client, model, CHALLENGER_ALIAS)
    if challenger is not None and champion is not None and challenger.version != champion.version:
        print(f"challenger: version {challenger.version} (already registered)", flush=True)
        return challenger.version
    recipe = ["--param", "max_leaf_nodes=15"]
    print(f"training a challenger with another recipe (python -m trainer --no-promote {' '.join(recipe)}) ...")
    command = [sys.executable, "-m", "trainer", "--no-promote", *recipe, "--tag", "demo=rollout"]
    subprocess.run(command, check=True)
    challenger = version_by_alias(client, model, CHALLENGER_ALIAS)
    assert challenger is not None, "the trainer registered no challenger"
    return challenger.version


def send_predictions(bff: httpx.Client, applicants: list[int], stop: threading.Event, seen: Counter) -> None:
    """Single predictions, applicant after applicant, until stopped; counts (version, role) of the answers."""
    for applicant in itertools.cycle(applicants):
        if stop.is_set():
            return
        answer = bff.post("/predict", json={ENTITY_KEY: applicant})
        body: dict[str, Any] = answer.json()
        seen[(answer.status_code, body.get("model_version"), body.get("model_role"))] += 1
        time.sleep(0.01)


def main() -> int:
    settings = DemoSettings()
    configure_logging("WARNING")
    deadline = time.monotonic() + settings.demo_timeout_s
    client = MlflowClient(settings.mlflow_tracking_uri)
    model = settings.registered_model_name
    champion = version_by_alias(client, model, CHAMPION_ALIAS)
    if champion is None:
        raise SystemExit(f"{model} has no champion: run `make demo` first")
    challenger = ensure_challenger(client, model)
    policy_before = {
        k: v for k, v in (client.get_registered_model(model).tags or {}).items() if k.startswith("rollout.")
    }
    client.set_registered_model_tag(model, TAG_CANARY_PERCENT, f"{settings.demo_canary_percent:g}")
    client.set_registered_model_tag(model, TAG_MODE, "canary")
    print(
        f"policy: canary, {settings.demo_canary_percent:g} % of the applicants to version {challenger} "
        f"(champion {champion.version}); model sync loads it within its interval",
        flush=True,
    )
    applicants = [int(i) for i in read_raw(settings, APPLICATION_TRAIN)[ENTITY_KEY]]
    bff = httpx.Client(base_url=f"http://127.0.0.1:{settings.bff_port}", timeout=30)
    stop, seen = threading.Event(), Counter()
    senders = [threading.Thread(target=send_predictions, args=(bff, applicants, stop, seen)) for _ in range(2)]
    for sender in senders:
        sender.start()
    print("sending single predictions for applicant after applicant; the monitor analyses every 10 s ...", flush=True)
    try:
        while True:
            tags = client.get_model_version(model, challenger).tags or {}
            if ROLLOUT_DECISION in tags:
                break
            if time.monotonic() > deadline:
                raise SystemExit("no decision in time; see .stack/logs/monitor.log and `mlops rollout status`")
            time.sleep(5)
    finally:
        stop.set()
        for sender in senders:
            sender.join(timeout=30)
        for key in (TAG_MODE, TAG_CANARY_PERCENT):
            if key in policy_before:
                client.set_registered_model_tag(model, key, policy_before[key])
            else:
                client.delete_registered_model_tag(model, key)
    answered = Counter()
    for (status, version, role), count in seen.items():
        answered[f"{status} v{version} {role}"] += count
    print(f"\nanswers: {dict(answered)}")
    figures = {k: v for k, v in sorted(tags.items()) if k.startswith("rollout.") and k != ROLLOUT_DECISION}
    print("analysis: " + ", ".join(f"{k.removeprefix('rollout.')}={v}" for k, v in figures.items()))
    now = version_by_alias(client, model, CHAMPION_ALIAS)
    print(
        f"DECISION: {tags[ROLLOUT_DECISION].upper()}: version {challenger}; the champion is now version "
        f"{now.version if now else 'none'}"
    )
    print(
        "where to look:\n"
        "  mlops rollout status; mlops model history\n"
        f"  Prometheus: {settings.prometheus_url}/graph?g0.expr=sum+by+(version,role)(rate(bff_model_rows_total[1m]))\n"
        "  the model-rollout dashboard as a picture: make dashboards (.stack/dashboards/)\n"
        "  back to the previous champion: mlops model rollback --reason '...' --wait"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
