"""Progressive delivery on the real stack: Triton serving champion and challenger as two versions of one
model (model sync), the BFF routing by the policy in the registry's tags, the monitor's analysis reading
the BFF's series from a real Prometheus and moving the registry's aliases, the inference-log table.

Every client request sent while a rollout starts, is analysed, promoted, rolled back or undone must
succeed: the load generators below count every answer that is not a 200.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import mlflow
import onnx
import pytest
from click.testing import Result
from mlflow import MlflowClient
from onnx import TensorProto, helper
from platform_fixtures import settings_from
from scipy.stats import binomtest
from serving_fixtures import Serving, faults_env, register_onnx, start_serving, wait_for
from typer.testing import CliRunner

from bff.schemas import FEATURES_EXAMPLE
from devstack.components import app_daemon
from devstack.processes import free_port
from devstack.prometheus import prometheus_daemon, write_config
from mlops_cli.app import app as cli_app
from mlops_common.features import MODEL_INPUT, MODEL_OUTPUT, N_FEATURES
from mlops_common.inference_log import InferenceLogStoreSettings, load_inference_log_table
from mlops_common.rollout import CHALLENGER_ALIAS, CHAMPION_ALIAS, TAG_CANARY_PERCENT, TAG_MODE
from monitor.metrics import REGISTRY as MONITOR_METRICS
from monitor.rollout import RolloutAnalysis
from monitor.settings import Settings as MonitorSettings

pytestmark = pytest.mark.integration

SCRAPE_INTERVAL_S = 1.0


@dataclass
class Rollout:
    env: dict[str, str]
    serving: Serving
    prometheus_url: str
    triton_http: str
    applicants: list[int]
    champion_model: onnx.ModelProto
    no_stack: Path
    client: MlflowClient = field(init=False)

    def __post_init__(self) -> None:
        self.client = MlflowClient(self.env["MLFLOW_TRACKING_URI"])

    @property
    def name(self) -> str:
        return self.env["REGISTERED_MODEL_NAME"]

    def register(self, model: onnx.ModelProto) -> str:
        return register_onnx(self.env, model)

    def cli(self, *args: str) -> Result:
        """``mlops ARGS`` in this process, on this module's platform (and no local stack)."""
        root = logging.getLogger()
        handlers, level = root.handlers[:], root.level
        try:
            return CliRunner().invoke(cli_app, list(args), env={**self.env, "STACK_DIR": str(self.no_stack)})
        finally:  # the CLI configures logging; later log records must not go to its closed stream
            root.handlers[:] = handlers
            root.setLevel(level)

    def policy(self, mode: str, percent: str | None = None) -> None:
        """As `mlops rollout` sets it: the percent first, then the mode that uses it."""
        if percent is not None:
            self.client.set_registered_model_tag(self.name, TAG_CANARY_PERCENT, percent)
        self.client.set_registered_model_tag(self.name, TAG_MODE, mode)

    def alias(self, alias: str) -> str | None:
        try:
            return self.client.get_model_version_by_alias(self.name, alias).version
        except mlflow.exceptions.MlflowException:
            return None

    def ready_versions(self) -> list[str]:
        index = httpx.post(f"{self.triton_http}/v2/repository/index", json={"ready": True}, timeout=5).json()
        model = self.env["TRITON_MODEL_NAME"]
        return sorted((e["version"] for e in index if e["name"] == model and "version" in e), key=int)

    def bff_series(self, text: str) -> bool:
        return text in httpx.get(self.serving.metrics_url, timeout=5).text

    def wait_routed(self, version: str, role: str, percent: float = 0.0) -> None:
        wait_for(
            lambda: (
                self.bff_series(f'bff_model_rows_total{{role="{role}",version="{version}"}}')
                and self.bff_series(f"bff_routing_canary_percent {percent}\n")
            ),
            60,
            f"the BFF routing version {version} as {role} ({percent} %)",
        )

    def end_challenger(self) -> None:
        """Back to champion only, as between tests."""
        self.policy("off")
        if self.alias(CHALLENGER_ALIAS) not in (None, self.alias(CHAMPION_ALIAS)):
            self.client.delete_registered_model_alias(self.name, CHALLENGER_ALIAS)
        champion = self.alias(CHAMPION_ALIAS)
        wait_for(lambda: self.ready_versions() == [champion], 60, f"Triton serving version {champion} alone")


def nan_model() -> onnx.ModelProto:
    """A model with the serving contract's tensors that answers NaN for every row (a broken challenger)."""
    weights = helper.make_tensor("w", TensorProto.FLOAT, [N_FEATURES, 2], [float("nan")] * (N_FEATURES * 2))
    graph = helper.make_graph(
        [helper.make_node("MatMul", [MODEL_INPUT, "w"], [MODEL_OUTPUT])],
        "broken",
        [helper.make_tensor_value_info(MODEL_INPUT, TensorProto.FLOAT, [None, N_FEATURES])],
        [helper.make_tensor_value_info(MODEL_OUTPUT, TensorProto.FLOAT, [None, 2])],
        [weights],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


@pytest.fixture(scope="module")
def rollout(trained_platform, s3_server, triton_server, unique_name, tmp_path_factory) -> Iterator[Rollout]:
    work = tmp_path_factory.mktemp("rollout")
    env = faults_env(
        trained_platform,
        s3_server,
        unique_name,
        work,
        # A registry and a Triton model of its own: this module moves the aliases.
        REGISTERED_MODEL_NAME=unique_name("rollout"),
        TRITON_MODEL_NAME=unique_name("rollout", sep="_"),
        MLFLOW_EXPERIMENT_NAME=unique_name("rollout"),
        SYNC_INTERVAL_S="0.5",
        ROUTING_GRACE_S="2",
        ROUTING_REFRESH_S="0.2",
    )
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    trained = trained_platform.env["REGISTERED_MODEL_NAME"]
    champion_model = mlflow.onnx.load_model(f"models:/{trained}@{CHAMPION_ALIAS}")
    tables = trained_platform.tables
    applicants = [int(i) for i in (*tables.application_train.SK_ID_CURR, *tables.application_test.SK_ID_CURR)]
    prometheus = serving = log_worker = None
    try:
        config = work / "prometheus" / "prometheus.yml"
        addresses = {
            name: f"127.0.0.1:{free_port()}" for name in ("triton", "log-worker", "monitor", "job-worker", "rabbitmq")
        }
        addresses |= {
            "bff": f"127.0.0.1:{env['BFF_METRICS_PORT']}",
            "model-sync": f"127.0.0.1:{env['MODEL_SYNC_METRICS_PORT']}",
        }
        write_config(config, addresses, interval_s=SCRAPE_INTERVAL_S)
        prometheus = prometheus_daemon(
            config, work / "prometheus" / "data", free_port(), work / "logs" / "prometheus.log", die_with_parent=True
        ).start()
        first = register_onnx(env, champion_model)
        MlflowClient(env["MLFLOW_TRACKING_URI"]).set_registered_model_alias(
            env["REGISTERED_MODEL_NAME"], CHAMPION_ALIAS, first
        )
        serving = start_serving(env, work / "logs")
        log_worker = app_daemon(
            "log_worker", "log_worker", work / "logs" / "log_worker.log", env=env, die_with_parent=True
        ).start()
        yield Rollout(
            env, serving, prometheus.address, triton_server.base_url, applicants, champion_model, work / "no-stack"
        )
    finally:
        for daemon in (log_worker, serving and serving.bff, serving and serving.model_sync, prometheus):
            if daemon is not None:
                daemon.stop()


@pytest.fixture(autouse=True)
def champion_alone_after(rollout: Rollout) -> Iterator[None]:
    """Each test starts with the champion serving alone, whatever the one before left."""
    yield
    rollout.end_challenger()


@contextmanager
def analysis(rollout: Rollout, **overrides: str) -> Iterator[None]:
    """The monitor's rollout analysis, deciding every second from the module's Prometheus."""
    settings = settings_from(
        MonitorSettings,
        {
            **rollout.env,
            "PROMETHEUS_URL": rollout.prometheus_url,
            "ROLLOUT_SCRAPE_INTERVAL_S": str(SCRAPE_INTERVAL_S),
            "ROLLOUT_ANALYSIS_INTERVAL_S": "1",
            "ROLLOUT_MIN_CALLS": "100",
            "ROLLOUT_MIN_DURATION_S": "10",
            **overrides,
        },
    )
    stop = threading.Event()
    thread = threading.Thread(target=RolloutAnalysis(settings).run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=30)


@dataclass
class Load:
    answers: Counter = field(default_factory=Counter)  # (status, version, role)
    failures: list[str] = field(default_factory=list)


@contextmanager
def continuous_load(rollout: Rollout, senders: int = 2) -> Iterator[Load]:
    """Single predictions for applicant after applicant, without pause, until the block ends."""
    load, stop = Load(), threading.Event()
    ids = itertools.cycle(rollout.applicants)
    lock = threading.Lock()

    def send() -> None:
        with httpx.Client(base_url=rollout.serving.bff_url, timeout=15) as client:
            while not stop.is_set():
                with lock:
                    applicant = next(ids)
                try:
                    answer = client.post("/predict", json={"SK_ID_CURR": applicant})
                except httpx.HTTPError as err:
                    load.failures.append(f"{type(err).__name__}: {err}")
                    continue
                body = answer.json()
                load.answers[(answer.status_code, body.get("model_version"), body.get("model_role"))] += 1
                if answer.status_code != 200:
                    load.failures.append(f"{answer.status_code}: {answer.text[:200]}")

    threads = [threading.Thread(target=send, daemon=True) for _ in range(senders)]
    for thread in threads:
        thread.start()
    try:
        yield load
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)


def test_shadow_answers_are_the_champions_and_the_challenger_lands_in_the_log_as_shadow(rollout: Rollout):
    champion = rollout.alias(CHAMPION_ALIAS)
    bodies = [{"SK_ID_CURR": applicant} for applicant in rollout.applicants[:40]]
    bodies += [{**FEATURES_EXAMPLE, "AMT_CREDIT": 1e5 + i} for i in range(10)]
    with rollout.serving.client() as client:
        plain = [client.post("/predict", json=b, headers={"X-Request-ID": f"plain-{i}"}) for i, b in enumerate(bodies)]
        challenger = rollout.register(rollout.champion_model)
        rollout.client.set_registered_model_alias(rollout.name, CHALLENGER_ALIAS, challenger)
        rollout.policy("shadow")
        rollout.wait_routed(challenger, "shadow")
        shadowed = [
            client.post("/predict", json=b, headers={"X-Request-ID": f"shado-{i}"}) for i, b in enumerate(bodies)
        ]
        batch = client.post("/predict/batch", json=bodies[:5], headers={"X-Request-ID": "shadow-batch"})
    for i, (a, b) in enumerate(zip(plain, shadowed, strict=True)):
        assert a.status_code == b.status_code == 200
        assert b.content == a.content.replace(f"plain-{i}".encode(), f"shado-{i}".encode())
        assert (b.json()["model_version"], b.json()["model_role"]) == (champion, "champion")
    assert {p["model_role"] for p in batch.json()["predictions"]} == {"champion"}

    # Both answers of every request are in the table: the champion's as answered, the challenger's as shadow.
    logs = settings_from(InferenceLogStoreSettings, rollout.env)
    expected = {f"shado-{i}" for i in range(len(bodies))} | {f"shadow-batch-{i}" for i in range(5)}

    def logged_roles() -> dict[str, set[tuple[str, str]]]:
        now = datetime.now(UTC)
        table, _ = load_inference_log_table(logs, now - timedelta(hours=1), now + timedelta(minutes=1))
        roles: dict[str, set[tuple[str, str]]] = {}
        for request_id, version, role in zip(
            table["request_id"].to_pylist(), table["model_version"].to_pylist(), table["role"].to_pylist(), strict=True
        ):
            roles.setdefault(request_id.removesuffix("~shadow"), set()).add((version, role))
        return roles

    wanted = {(champion, "champion"), (challenger, "shadow")}
    wait_for(lambda: all(logged_roles().get(i) == wanted for i in expected), 90, "shadow rows in the log table")


def test_a_canary_answers_its_share_of_applicants_and_each_applicant_stays_with_one_version(rollout: Rollout):
    challenger = rollout.register(rollout.champion_model)
    rollout.client.set_registered_model_alias(rollout.name, CHALLENGER_ALIAS, challenger)
    rollout.policy("canary", "20")
    rollout.wait_routed(challenger, "canary", 20.0)
    applicants = rollout.applicants[:3000]

    def versions() -> dict[int, str]:
        seen = {}
        with rollout.serving.client() as client:
            for start in range(0, len(applicants), 250):
                chunk = applicants[start : start + 250]
                answer = client.post("/predict/batch", json=[{"SK_ID_CURR": a} for a in chunk])
                assert answer.status_code == 200, answer.text
                seen |= {a: p["model_version"] for a, p in zip(chunk, answer.json()["predictions"], strict=True)}
        return seen

    first, again = versions(), versions()
    canary = sum(version == challenger for version in first.values())
    interval = binomtest(canary, len(applicants), 0.2).proportion_ci(confidence_level=0.999)
    assert interval.low <= 0.2 <= interval.high, (canary, interval)
    assert again == first


def test_a_challenger_answering_nan_is_rolled_back_under_load_without_a_failed_request(rollout: Rollout):
    champion = rollout.alias(CHAMPION_ALIAS)
    broken = rollout.register(nan_model())
    with continuous_load(rollout) as load, analysis(rollout):
        rollout.client.set_registered_model_alias(rollout.name, CHALLENGER_ALIAS, broken)
        rollout.policy("canary", "20")
        wait_for(lambda: rollout.alias(CHALLENGER_ALIAS) is None, 120, "the broken challenger rolled back")
        wait_for(lambda: rollout.ready_versions() == [champion], 60, "Triton serving the champion alone")
    tags = rollout.client.get_model_version(rollout.name, broken).tags
    assert tags["rollout.decision"] == "rolled_back", tags
    assert "error_rate" in tags["rollout.reason"]
    assert float(tags["rollout.error_rate"]) > 0.5
    assert rollout.alias(CHAMPION_ALIAS) == champion
    assert not load.failures, load.failures[:5]
    assert sum(load.answers.values()) > 200
    assert MONITOR_METRICS.get_sample_value("monitor_rollout_decisions_total", {"decision": "rolled_back"}) >= 1
    # Its canary calls failed, and the champion answered those clients instead.
    assert {(version, role) for (_, version, role) in load.answers} == {(champion, "champion")}


def test_a_good_challenger_is_promoted_under_load_and_rollback_returns_to_the_previous_champion(rollout: Rollout):
    previous = rollout.alias(CHAMPION_ALIAS)
    good = rollout.register(rollout.champion_model)
    # This machine's two shared cores make latency noisy: the latency check gets slack here (the
    # analysis' defaults are in monitor.settings), the broken challenger above failed on its errors.
    with continuous_load(rollout) as load:
        with analysis(rollout, ROLLOUT_MAX_LATENCY_RATIO="4"):
            rollout.client.set_registered_model_alias(rollout.name, CHALLENGER_ALIAS, good)
            rollout.policy("canary", "20")
            wait_for(lambda: rollout.alias(CHAMPION_ALIAS) == good, 120, f"version {good} promoted")
        wait_for(lambda: rollout.ready_versions() == [good], 60, f"Triton serving version {good} alone")
        tags = rollout.client.get_model_version(rollout.name, good).tags
        assert (tags["rollout.decision"], tags["champion.previous"], tags["champion.by"]) == (
            "promoted",
            previous,
            "monitor",
        )
        assert rollout.alias(CHALLENGER_ALIAS) is None
        done = rollout.cli("model", "rollback", "--reason", "test: back to the previous champion")
        assert done.exit_code == 0, done.output
        wait_for(lambda: rollout.ready_versions() == [previous], 60, f"Triton serving version {previous} again")
    assert rollout.alias(CHAMPION_ALIAS) == previous
    assert not load.failures, load.failures[:5]
    served = {version for (_, version, _) in load.answers}
    assert {previous, good} <= served, load.answers
    assert {role for (_, _, role) in load.answers} == {"champion", "canary"}


def test_the_cli_sets_the_policy_shows_the_routing_and_aborts_the_rollout(rollout: Rollout):
    champion = rollout.alias(CHAMPION_ALIAS)
    challenger = rollout.register(rollout.champion_model)
    rollout.client.set_registered_model_alias(rollout.name, CHALLENGER_ALIAS, challenger)
    done = rollout.cli("rollout", "canary", "--weight", "20")
    assert done.exit_code == 0, done.output
    rollout.wait_routed(challenger, "canary", 20.0)
    status = rollout.cli("rollout", "status")
    assert status.exit_code == 0, status.output
    assert "policy: canary: the challenger answers 20 % of the applicants (from rollout.canary_percent=20" in (
        status.stdout
    )
    routing = f"Triton routing: champion {champion}, challenger {challenger}, canary: the challenger answers 20 %"
    assert routing in status.stdout, status.stdout
    aborted = rollout.cli("rollout", "abort", "--reason", "test: not this one")
    assert aborted.exit_code == 0, aborted.output
    assert rollout.alias(CHALLENGER_ALIAS) is None
    tags = rollout.client.get_model_version(rollout.name, challenger).tags
    assert (tags["rollout.decision"], tags["rollout.reason"]) == ("rolled_back", "test: not this one")
    wait_for(lambda: rollout.ready_versions() == [champion], 60, f"Triton serving version {champion} alone")
