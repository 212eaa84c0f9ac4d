"""Invalid values fail at `helm template` with a message naming the value (values.schema.json and
`required`), never render a broken manifest."""

import pytest
from chart_tools import HelmError

BAD_VALUES = {
    "wrong type": ({"bff.replicaCount": "two"}, "/bff/replicaCount"),
    "unknown key in a service block": ({"bff.replicas": 3}, "'replicas' not allowed"),
    "unknown key in a subchart block": ({"minio.persistance.enabled": False}, "'persistance' not allowed"),
    "latest tag": ({"triton.image.tag": "latest"}, "/triton/image/tag"),
    "malformed digest": ({"triton.image.digest": "sha256:abc"}, "/triton/image/digest"),
    "settings name not an env var": ({"bff.settings.decisionThreshold": "0.6"}, "decisionThreshold"),
    "drain budget set past the grace period": ({"bff.settings.LOG_DRAIN_TIMEOUT_S": 60}, "bff.shutdown.drainSeconds"),
    "spool limit set past the volume": ({"bff.settings.LOG_SPOOL_MAX_BYTES": 1 << 30}, "bff.logSpool.maxBytes"),
    "spool limit below 1 MiB": ({"bff.logSpool.maxBytes": 1000}, "/bff/logSpool/maxBytes"),
    "no time for the drain": ({"bff.shutdown.drainSeconds": 0}, "/bff/shutdown/drainSeconds"),
    "API keys required without their Secret": ({"bff.apiKeys.required": True}, "/bff/apiKeys"),
    "API keys passed as a plain setting": ({"bff.settings.API_KEYS": "plain"}, "bff.apiKeys.existingSecret"),
    "port out of range": ({"bff.port": 80808}, "/bff/port"),
    "nodePort outside the node port range": ({"bff.service.nodePort": 8080}, "/bff/service/nodePort"),
    "missing registry": ({"global.imageRegistry": ""}, "image.registry (or global.imageRegistry) is required"),
    "missing platform image tag": (
        {"global.platformImageTag": ""},
        "image.tag (or global.platformImageTag) is required",
    ),
    "missing MinIO secret": ({"minio.auth.rootPassword": ""}, "minio.auth.existingSecret"),
    "missing PostgreSQL secret": ({"postgresql.auth.password": ""}, "postgresql.auth.existingSecret"),
    "missing RabbitMQ secret": ({"rabbitmq.auth.password": ""}, "rabbitmq.auth.existingSecret"),
    "missing Redis secret": ({"redis.auth.password": ""}, "redis.auth.existingSecret"),
    "external RabbitMQ without a secret": ({"rabbitmq.enabled": False}, "externalRabbitmq.existingSecret is required"),
    "external Redis without a secret": ({"redis.enabled": False}, "externalRedis.existingSecret is required"),
    "external MLflow without a URL": ({"mlflow.enabled": False}, "externalMlflow.trackingUri is required"),
    "monitor retraining without the retrain CronJob": (
        {"monitor.retraining.enabled": True, "trainer.retrain.enabled": False},
        "monitor.retraining.enabled needs trainer.retrain.enabled",
    ),
    "retraining mode passed as a plain setting": (
        {"monitor.settings.RETRAIN_MODE": "kubernetes"},
        "monitor.settings.RETRAIN_MODE: set monitor.retraining.enabled instead",
    ),
    "retrain CronJob passed as a plain setting": ({"monitor.settings.RETRAIN_CRONJOB": "other"}, "RETRAIN_CRONJOB"),
    "monitor metrics port passed as a plain setting": (
        {"monitor.settings.MONITOR_METRICS_PORT": 9200},
        "set monitor.metricsPort instead",
    ),
    "monitor window under 10 s": ({"monitor.windowSeconds": 5}, "/monitor/windowSeconds"),
    "live AUC floor above 1": ({"monitor.retraining.minLiveAuc": 2}, "/monitor/retraining/minLiveAuc"),
    "monitor with two replicas": ({"monitor.replicaCount": 2}, "'replicaCount' not allowed"),
    "API server port out of range": (
        {"networkPolicy.kubernetesApiPorts[0]": 70000},
        "/networkPolicy/kubernetesApiPorts",
    ),
}


@pytest.mark.parametrize("case", BAD_VALUES)
def test_bad_value_is_named(render: object, case: str) -> None:
    values, expected = BAD_VALUES[case]
    with pytest.raises(HelmError) as failure:
        render(values)  # type: ignore[operator]
    assert expected in str(failure.value), str(failure.value)


def test_retraining_with_a_suspended_cronjob_renders(render: object) -> None:
    """The way out the message above names works: the CronJob kept, without a schedule."""
    docs = render(
        {"monitor.retraining.enabled": True, "trainer.retrain.enabled": True, "trainer.retrain.suspend": True}
    )  # type: ignore[operator]
    [cronjob] = [d for d in docs if d["kind"] == "CronJob" and d["metadata"]["name"] == "mlops-trainer-retrain"]
    assert cronjob["spec"]["suspend"] is True


def test_the_base_scenario_renders(render: object) -> None:
    """The cases above fail because of their one value, not because the base is broken."""
    assert render()  # type: ignore[operator]
