"""The BFF and model sync as real processes, on a real Triton, Feast/Redis and MLflow."""

import asyncio
import re
import threading
import time
import uuid

import aio_pika
import httpx
import mlflow
import numpy as np
import psutil
import pytest
from mlflow import MlflowClient
from platform_fixtures import QUICK_MODEL
from serving_fixtures import wait_for
from tcp_proxy import TcpProxy

from bff.batching import TritonBatcher
from bff.errors import EntityNotFoundError
from bff.metrics import RequestsInFlight
from bff.online_features import OnlineFeatures
from bff.schemas import FEATURES_EXAMPLE
from bff.settings import Settings
from devstack.processes import free_port
from mlops_common.errors import DependencyUnavailableError, InferenceError
from mlops_common.feast_store import open_feature_store
from mlops_common.features import FEATURE_NAMES, FEATURE_SERVICE
from mlops_common.inference_log import InferenceLogRecord
from mlops_common.inference_log_wire import message_lines
from mlops_common.triton_client import TritonPredictor
from trainer.model import onnx_probabilities
from trainer.settings import Settings as TrainerSettings
from trainer.train import TrainingRequest, train

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def champion_onnx(trained_platform):
    env = trained_platform.env
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    return mlflow.onnx.load_model(f"models:/{env['REGISTERED_MODEL_NAME']}@champion")


def triton_counter(triton_server, metric: str, model: str) -> float:
    text = httpx.get(triton_server.metrics_url).text
    pattern = rf'^{metric}{{model="{re.escape(model)}",version="\d+"}} (\S+)$'
    return sum(float(m) for m in re.findall(pattern, text, flags=re.MULTILINE))


def expected(model, rows: list[list[float]]) -> np.ndarray:
    return onnx_probabilities(model, np.array(rows, dtype=np.float32))[:, 1]


def stored_vector(trained_platform, entity_id: int) -> list[float]:
    store = open_feature_store(trained_platform.settings(Settings))
    values = store.get_online_features(
        features=store.get_feature_service(FEATURE_SERVICE), entity_rows=[{"SK_ID_CURR": entity_id}]
    ).to_dict()
    return [np.nan if values[name][0] is None else values[name][0] for name in FEATURE_NAMES]


def test_documented_body_matches_onnxruntime(serving, champion_onnx):
    with serving.client() as client:
        answer = client.post("/predict", json=FEATURES_EXAMPLE)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    want = expected(champion_onnx, [[FEATURES_EXAMPLE[n] for n in FEATURE_NAMES]])[0]
    assert body["probability"] == pytest.approx(float(want), abs=1e-6)
    assert body["decision"] == ("reject" if body["probability"] >= body["threshold"] else "approve")
    assert body["model_name"] == serving.env["TRITON_MODEL_NAME"]
    assert body["model_version"] == "1"
    assert body["features_from_store"] == []
    assert len(body["request_id"]) == 32


def test_entity_form_reads_the_online_store(serving, champion_onnx, trained_platform):
    entity_id = int(trained_platform.tables.application_test.SK_ID_CURR.iloc[0])
    with serving.client() as client:
        body = client.post("/predict", json={"SK_ID_CURR": entity_id}).json()
    assert body["features_from_store"] == list(FEATURE_NAMES)
    want = expected(champion_onnx, [stored_vector(trained_platform, entity_id)])[0]
    assert body["probability"] == pytest.approx(float(want), abs=1e-6)


def test_body_fields_override_stored_ones(serving, champion_onnx, trained_platform):
    entity_id = int(trained_platform.tables.application_train.SK_ID_CURR.iloc[3])
    with serving.client() as client:
        body = client.post("/predict", json={"SK_ID_CURR": entity_id, "AMT_CREDIT": 1.5e6, "DAYS_EMPLOYED": -10}).json()
    assert body["features_from_store"] == [n for n in FEATURE_NAMES if n not in ("AMT_CREDIT", "DAYS_EMPLOYED")]
    vector = stored_vector(trained_platform, entity_id)
    vector[FEATURE_NAMES.index("AMT_CREDIT")] = 1.5e6
    vector[FEATURE_NAMES.index("DAYS_EMPLOYED")] = -10
    assert body["probability"] == pytest.approx(float(expected(champion_onnx, [vector])[0]), abs=1e-6)


def test_batch_is_one_call_in_input_order(serving, champion_onnx, trained_platform, triton_server):
    ids = trained_platform.tables.application_train.SK_ID_CURR.iloc[10:13].astype(int).tolist()
    second = {**FEATURES_EXAMPLE, "AMT_CREDIT": 900000}
    batch = [FEATURES_EXAMPLE, {"SK_ID_CURR": ids[0]}, second, {"SK_ID_CURR": ids[1]}, {"SK_ID_CURR": ids[2]}]
    model = serving.env["TRITON_MODEL_NAME"]
    requests_before = triton_counter(triton_server, "nv_inference_request_success", model)
    rows_before = triton_counter(triton_server, "nv_inference_count", model)
    with serving.client() as client:
        answer = client.post("/predict/batch", json=batch)
    assert answer.status_code == 200, answer.text
    predictions = answer.json()["predictions"]
    rows = [
        [FEATURES_EXAMPLE[n] for n in FEATURE_NAMES],
        stored_vector(trained_platform, ids[0]),
        [second[n] for n in FEATURE_NAMES],
        stored_vector(trained_platform, ids[1]),
        stored_vector(trained_platform, ids[2]),
    ]
    np.testing.assert_allclose([p["probability"] for p in predictions], expected(champion_onnx, rows), atol=1e-6)
    assert len({p["request_id"] for p in predictions}) == len(batch)
    # Triton's own counters: one inference request carrying all five rows.
    assert triton_counter(triton_server, "nv_inference_request_success", model) - requests_before == 1
    assert triton_counter(triton_server, "nv_inference_count", model) - rows_before == len(batch)


async def test_concurrent_predictions_each_get_their_own_answer(serving, champion_onnx):
    # 64 different bodies at once: however a worker merges their Triton calls (TRITON_MERGE_MIN_IN_FLIGHT),
    # every answer must be its own body's.
    bodies = [{**FEATURES_EXAMPLE, "AMT_CREDIT": 100_000.0 + 7_919.0 * k, "DAYS_EMPLOYED": -30 * k} for k in range(64)]
    want = expected(champion_onnx, [[body[n] for n in FEATURE_NAMES] for body in bodies])
    limits = httpx.Limits(max_connections=len(bodies))
    async with httpx.AsyncClient(base_url=serving.bff_url, timeout=10.0, limits=limits) as client:
        for _ in range(3):
            answers = await asyncio.gather(*(client.post("/predict", json=body) for body in bodies))
            assert [a.status_code for a in answers] == [200] * len(bodies)
            np.testing.assert_allclose([a.json()["probability"] for a in answers], want, atol=1e-6)


async def test_calls_waiting_for_a_triton_request_go_as_one_request_and_get_their_own_rows(
    serving, champion_onnx, triton_server
):
    # The real Triton behind a proxy that holds the first request until every other call waits: in a busy
    # worker (64 requests in flight), the 63 calls that came meanwhile must go as exactly one request.
    host, port = serving.env["TRITON_HTTP_URL"].rsplit(":", 1)
    proxy = TcpProxy(host, int(port)).start()
    model = serving.env["TRITON_MODEL_NAME"]
    busy = RequestsInFlight()
    busy.count = 64
    batcher = TritonBatcher(
        TritonPredictor(f"127.0.0.1:{proxy.port}", model, 10.0),
        max_rows=256,
        merge_min_in_flight=6,
        requests_in_flight=busy,
    )
    rows = np.tile(np.array([[FEATURES_EXAMPLE[n] for n in FEATURE_NAMES]], dtype=np.float32), (64, 1))
    rows[:, FEATURE_NAMES.index("AMT_CREDIT")] += 7_919.0 * np.arange(64)
    requests_before = triton_counter(triton_server, "nv_inference_request_success", model)
    try:
        proxy.stall()
        calls = [
            asyncio.create_task(batcher.predict(rows[k : k + 1], version="", request_id=f"call-{k}")) for k in range(64)
        ]
        for _ in range(500):  # the first call's request reaches the proxy (the others wait in the batcher)
            if proxy.held_bytes:
                break
            await asyncio.sleep(0.01)
        assert proxy.held_bytes, "the first call's request never reached the proxy"
        proxy.up()
        answers = await asyncio.gather(*calls)
    finally:
        proxy.close()
        await batcher.triton.close()
    np.testing.assert_allclose(np.concatenate([p for p, _ in answers]), expected(champion_onnx, rows), atol=1e-6)
    assert len({version for _, version in answers}) == 1  # one request answered them all
    assert triton_counter(triton_server, "nv_inference_request_success", model) - requests_before == 2


def test_rows_with_missing_values_score_as_the_trainer_scores_them(serving, champion_onnx):
    # An applicant without an annuity, one without bureau history, one with nothing known but income.
    unknown = [
        {**FEATURES_EXAMPLE, "AMT_ANNUITY": None},
        {**FEATURES_EXAMPLE, "bureau_credit_days_enddate_mean": None, "bureau_credit_count": None},
        {name: (FEATURES_EXAMPLE[name] if name == "AMT_INCOME_TOTAL" else None) for name in FEATURE_NAMES},
    ]
    with serving.client() as client:
        answer = client.post("/predict/batch", json=unknown)
    assert answer.status_code == 200, answer.text
    predictions = answer.json()["predictions"]
    rows = [[np.nan if body[name] is None else body[name] for name in FEATURE_NAMES] for body in unknown]
    np.testing.assert_allclose([p["probability"] for p in predictions], expected(champion_onnx, rows), atol=1e-6)
    assert [p["missing_features"] for p in predictions] == [
        [name for name in FEATURE_NAMES if body[name] is None] for body in unknown
    ]


@pytest.mark.parametrize(
    ("payload", "status", "loc"),
    [
        ({**FEATURES_EXAMPLE, "AMT_CREDIT": "200000"}, 422, ["body", "AMT_CREDIT"]),
        ({k: v for k, v in FEATURES_EXAMPLE.items() if k != "DAYS_BIRTH"}, 422, ["body", "DAYS_BIRTH"]),
        ({**FEATURES_EXAMPLE, "colour": "red"}, 422, ["body", "colour"]),
        ({"SK_ID_CURR": "100002"}, 422, ["body", "SK_ID_CURR"]),
    ],
)
def test_bad_bodies_get_4xx_with_the_field_path(serving, payload, status, loc):
    with serving.client() as client:
        answer = client.post("/predict", json=payload)
    assert answer.status_code == status
    assert loc in [e["loc"] for e in answer.json()["detail"]]


def test_a_body_over_the_limit_is_a_413_from_the_real_server(serving):
    # 3 MB of JSON, over the default 2 MiB: refused from its Content-Length, before parsing.
    body = b"[" + b",".join([b'{"SK_ID_CURR": 100002}'] * 140_000) + b"]"
    with serving.client(headers={"content-type": "application/json"}) as client:
        answer = client.post("/predict/batch", content=body)
    assert answer.status_code == 413
    assert "exceeds the limit of 2097152 bytes (MAX_BODY_BYTES)" in answer.json()["detail"]


def test_nan_infinity_and_malformed_json_are_refused(serving):
    with serving.client(headers={"content-type": "application/json"}) as client:
        nan = client.post("/predict", content='{"SK_ID_CURR": 100002, "AMT_CREDIT": NaN}')
        inf = client.post("/predict", content='{"SK_ID_CURR": 100002, "AMT_CREDIT": -Infinity}')
        broken = client.post("/predict", content='{"SK_ID_CURR": 100002,')
    assert nan.status_code == 422
    assert ["body", "AMT_CREDIT"] in [e["loc"] for e in nan.json()["detail"]]
    assert inf.status_code == 422
    assert broken.status_code == 422
    assert broken.json()["detail"][0]["type"] == "json_invalid"


def test_unknown_entity_is_a_404_naming_it(serving):
    with serving.client() as client:
        single = client.post("/predict", json={"SK_ID_CURR": 999999999})
        batch = client.post("/predict/batch", json=[{"SK_ID_CURR": 999999998}, FEATURES_EXAMPLE])
    assert single.status_code == 404
    assert "999999999" in single.json()["detail"]
    assert batch.status_code == 404
    assert batch.json()["SK_ID_CURR"] == [999999998]


def test_empty_oversized_and_bad_batches(serving):
    limit = Settings().max_batch_size
    with serving.client() as client:
        empty = client.post("/predict/batch", json=[])
        oversized = client.post("/predict/batch", json=[FEATURES_EXAMPLE] * (limit + 1))
        bad_row = client.post("/predict/batch", json=[FEATURES_EXAMPLE, {"AMT_CREDIT": 1}])
        not_a_list = client.post("/predict/batch", json=FEATURES_EXAMPLE)
    assert empty.status_code == 422
    assert oversized.status_code == 413
    assert f"maximum of {limit}" in oversized.json()["detail"]
    assert bad_row.status_code == 422
    assert ["body", 1, "AMT_INCOME_TOTAL"] in [e["loc"] for e in bad_row.json()["detail"]]
    assert not_a_list.status_code == 422


def test_health_metrics_and_docs(serving):
    with serving.client() as client:
        assert client.get("/health/live").status_code == 200
        ready = client.get("/health/ready")
        metrics = httpx.get(serving.metrics_url, timeout=5).text
        assert client.get("/metrics").status_code == 404  # not on the public port
        docs = client.get("/docs")
        schema = client.get("/openapi.json").json()
    assert ready.json() == {"ready": True, "triton_model": True, "online_store": True}
    assert 'bff_requests_total{route="/predict",status="200"}' in metrics
    assert 'bff_dependency_up{dependency="triton_model"} 1.0' in metrics
    assert 'bff_dependency_up{dependency="online_store"} 1.0' in metrics
    assert "bff_request_duration_seconds_bucket" in metrics
    assert docs.status_code == 200
    assert {"/predict", "/predict/batch"} <= set(schema["paths"])


def test_promoted_champion_is_served_without_a_failed_request(serving, trained_platform):
    """Promote a new version while clients send requests continuously: zero failures."""
    env = trained_platform.env
    name = env["REGISTERED_MODEL_NAME"]
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    current = client.get_model_version_by_alias(name, "champion")
    stop = threading.Event()
    outcomes: list[tuple[int, str]] = []

    def load() -> None:
        with serving.client() as http:
            while not stop.is_set():
                answer = http.post("/predict", json=FEATURES_EXAMPLE)
                outcomes.append((answer.status_code, answer.json().get("model_version", "")))

    workers = [threading.Thread(target=load) for _ in range(2)]
    for worker in workers:
        worker.start()
    try:
        time.sleep(1.0)
        # Retraining with the same recipe scores the same holdout AUC, so the gate promotes it.
        result = train(trained_platform.settings(TrainerSettings), TrainingRequest(hyperparameters=QUICK_MODEL))
        assert result.decision.promoted
        new_version = result.version
        promoted_at = len(outcomes)
        wait_for(lambda: any(v == new_version for _, v in outcomes[promoted_at:]), 60, "new version answering")
        time.sleep(1.0)
    finally:
        stop.set()
        for worker in workers:
            worker.join()
    failures = [o for o in outcomes if o[0] != 200]
    assert failures == []
    versions = [v for _, v in outcomes]
    assert current.version in versions
    assert versions[-1] == new_version


async def test_triton_errors_are_told_apart_retryable_or_not(serving):
    model = serving.env["TRITON_MODEL_NAME"]
    predictor = TritonPredictor(serving.env["TRITON_HTTP_URL"], model, 10.0)
    try:
        # Nine columns where the model takes ten: the BFF's bug, which no retry fixes.
        with pytest.raises(InferenceError, match=r"HTTP 400\): .*unexpected shape"):
            await predictor.predict(np.zeros((1, len(FEATURE_NAMES) - 1), np.float32))
        # A model Triton does not hold (as while model sync loads one): retry later.
        absent = TritonPredictor(serving.env["TRITON_HTTP_URL"], "no_such_model", 10.0)
        with pytest.raises(DependencyUnavailableError, match="HTTP 404"):
            await absent.predict(np.zeros((1, len(FEATURE_NAMES)), np.float32))
        await absent.close()
    finally:
        await predictor.close()
    nobody = TritonPredictor(f"127.0.0.1:{free_port()}", model, 2.0)
    with pytest.raises(DependencyUnavailableError, match=r"triton: cannot connect to 127\.0\.0\.1:"):
        await nobody.predict(np.zeros((1, len(FEATURE_NAMES)), np.float32))
    assert not await nobody.model_ready()
    await nobody.close()


async def test_calls_are_spread_over_every_address_of_the_triton_target(serving):
    # Two addresses in front of the same Triton, as a headless Service's name resolves to one address per
    # pod: round robin holds a connection to each, uses both, and keeps serving when one goes away.
    host, port = serving.env["TRITON_HTTP_URL"].rsplit(":", 1)
    proxies = [TcpProxy(host, int(port)).start() for _ in range(2)]
    target = ",".join(f"127.0.0.1:{proxy.port}" for proxy in proxies)
    predictor = TritonPredictor(target, serving.env["TRITON_MODEL_NAME"], 10.0)
    rows = np.zeros((1, len(FEATURE_NAMES)), np.float32)

    def connected_ports() -> set[int]:
        return {
            c.raddr.port
            for c in psutil.Process().net_connections("tcp")
            if c.raddr and c.raddr.port in {p.port for p in proxies} and c.status == psutil.CONN_ESTABLISHED
        }

    try:
        for _ in range(20):
            await predictor.predict(rows)
        assert connected_ports() == {p.port for p in proxies}
        # A call stuck on the first address when it goes away is sent again to the other one, not failed.
        proxies[0].stall()
        calls = [asyncio.create_task(predictor.predict(rows)) for _ in range(4)]
        for _ in range(200):
            if proxies[0].held_bytes:
                break
            await asyncio.sleep(0.05)
        assert proxies[0].held_bytes, "no call reached the stalled address"
        proxies[0].down()
        for probabilities, _ in await asyncio.gather(*calls):
            assert probabilities.shape == (1,)
        for _ in range(10):
            probabilities, _ = await predictor.predict(rows)
            assert probabilities.shape == (1,)
    finally:
        await predictor.close()
        for proxy in proxies:
            proxy.close()


async def test_a_call_out_of_time_or_on_a_dropped_connection_never_gets_another_calls_answer(serving):
    # A stalled Triton: the call ends at its deadline as a 503-kind error, and its connection is dropped,
    # so the answer that arrives later is never read as the next call's. Connections the server closed
    # while idle (a Triton restart) are replaced without failing a call.
    host, port = serving.env["TRITON_HTTP_URL"].rsplit(":", 1)
    proxy = TcpProxy(host, int(port)).start()
    predictor = TritonPredictor(f"127.0.0.1:{proxy.port}", serving.env["TRITON_MODEL_NAME"], 1.0)
    zeros = np.zeros((1, len(FEATURE_NAMES)), np.float32)
    ones = np.ones((3, len(FEATURE_NAMES)), np.float32)
    try:
        expected, _ = await predictor.predict(ones)
        proxy.stall()
        with pytest.raises(DependencyUnavailableError, match=r"no answer within 1\.0 s"):
            await predictor.predict(zeros)
        proxy.up()
        answer, _ = await predictor.predict(ones)
        assert answer.tolist() == expected.tolist()
        proxy.down()  # resets the kept-alive connections
        proxy.up()
        answer, _ = await predictor.predict(ones)
        assert answer.tolist() == expected.tolist()
    finally:
        await predictor.close()
        proxy.close()


async def test_the_request_id_reaches_the_inference_log_record(serving):
    request_id = f"trace-{uuid.uuid4().hex[:12]}"
    async with httpx.AsyncClient(base_url=serving.bff_url, timeout=15) as client:
        answer = await client.post("/predict", json=FEATURES_EXAMPLE, headers={"X-Request-ID": request_id})
    assert answer.json()["request_id"] == request_id

    # The BFF's records wait in this session's queue (no worker here); look, then leave them there.
    connection = await aio_pika.connect(serving.env["RABBITMQ_URL"])
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(serving.env["INFERENCE_LOG_QUEUE"], passive=True)
        found = []
        deadline = time.monotonic() + 30
        while not found and time.monotonic() < deadline:
            message = await queue.get(no_ack=False, fail=False)
            if message is None:
                await asyncio.sleep(0.2)
                continue
            records = [
                InferenceLogRecord.from_json_bytes(line) for line in message_lines(message.body, message.content_type)
            ]
            found = [r for r in records if r.request_id == request_id]
        # Closing the channel returns every message taken above to the queue.
    assert len(found) == 1
    assert found[0].features["AMT_CREDIT"] == FEATURES_EXAMPLE["AMT_CREDIT"]


async def test_direct_redis_read_returns_what_feasts_own_read_returns(trained_platform):
    """The BFF reads Feast's Redis store itself (bff.online_features); for the same applicants it must
    return exactly what Feast's get_online_features returns, missing values included."""
    settings = trained_platform.settings(Settings)
    store = open_feature_store(settings)
    ids = [int(i) for i in trained_platform.tables.application_test.SK_ID_CURR.iloc[:200]]
    feast_rows = store.get_online_features(
        features=store.get_feature_service(FEATURE_SERVICE), entity_rows=[{"SK_ID_CURR": i} for i in ids]
    ).to_dict()
    online = OnlineFeatures(store, timeout_s=5.0, registry_refresh_s=60.0)
    await online.start()
    try:
        direct = await online.fetch(ids)
        with pytest.raises(EntityNotFoundError) as unknown:
            await online.fetch([ids[0], 987654321])
    finally:
        await online.close()
    expected = {i: {name: feast_rows[name][k] for name in FEATURE_NAMES} for k, i in enumerate(ids)}
    assert direct == expected
    # The comparison covered values Feast has none for (applicants without bureau history).
    assert any(value is None for row in expected.values() for value in row.values())
    assert unknown.value.entity_ids == [987654321]
