import re
from pathlib import Path

from pydantic import Field, model_validator

from bff.workers import usable_cpus
from mlops_common.ground_truth import GroundTruthStoreSettings
from mlops_common.jobs import JobsSettings
from mlops_common.settings import REPO_ROOT, DecisionSettings, FeastSettings, RabbitSettings, TritonSettings


class Settings(FeastSettings, TritonSettings, RabbitSettings, GroundTruthStoreSettings, DecisionSettings, JobsSettings):
    """Settings of the prediction BFF (backend for frontend); the S3 fields and LOGS_BUCKET /
    GROUND_TRUTH_PREFIX locate the ground-truth table that ``POST /labels`` writes."""

    bff_host: str = "0.0.0.0"
    # API keys (bff.api_keys): name -> "sha256:<hex>"; checked on /predict, /predict/batch and /labels
    # when required. Off locally (the README's curls), on in the chart's prod values.
    api_keys_required: bool = False
    api_keys: dict[str, str] = Field(default_factory=dict)
    # Per key and per process (bff.auth): requests per second on average (0: no limit) and how many
    # may come at once after a quiet spell; past them 429 + Retry-After.
    api_key_rate_limit_per_s: float = Field(0.0, ge=0)
    api_key_rate_burst: int = Field(50, ge=1)
    # The jobs API (bff.jobs) is mounted when JOBS_DATABASE_URL is set; its training profiles are read from
    # this file (the trainer's own, which the chart mounts from a ConfigMap).
    training_profiles_file: Path = REPO_ROOT / "services" / "trainer" / "profiles.yaml"
    # /docs, /redoc and /openapi.json (off in the chart's prod values).
    api_docs_enabled: bool = True
    bff_port: int = 8080
    # /metrics is served on its own port, never on the API's (which a NodePort or Ingress makes public).
    bff_metrics_port: int = 9101
    # uvicorn worker processes behind bff_port (bff.workers); 0: one per CPU this process may use.
    # max_in_flight, the API keys' rate limit and the spool are per worker; /metrics adds the workers up.
    bff_workers: int = Field(0, ge=0)
    # Shutdown after SIGTERM: uvicorn waits up to bff_graceful_shutdown_s for requests in flight, then
    # the inference-log publisher has log_drain_timeout_s to flush its buffer and drain the spool to
    # RabbitMQ. A pod's terminationGracePeriodSeconds must cover both (the chart adds them up).
    bff_graceful_shutdown_s: int = Field(10, ge=1)
    max_batch_size: int = Field(256, ge=1)
    # Request bodies over this are refused with 413 before they are parsed (a 256-row batch is ~150 KB,
    # 10,000 labels ~800 KB).
    max_body_bytes: int = Field(2 << 20, ge=1024)
    # A body not received in full within this gets 408: a slow client cannot hold an in-flight slot.
    body_read_timeout_s: float = Field(10.0, gt=0)
    # Requests in flight beyond this get 503 + Retry-After instead of queueing up.
    max_in_flight: int = Field(128, ge=1)
    triton_timeout_s: float = Field(2.0, gt=0)
    # From this many prediction requests in flight in a worker, its calls of a model version go to Triton one
    # request at a time: the calls that come while one is under way wait for its answer and go together as the
    # next request (bff.batching), up to MAX_BATCH_SIZE rows. Below it every call goes at once. 0: never merge.
    # benchmarks/serving/call_merging.py, run of 15:31, one worker, /predict req/s ÷ never merging, at
    # concurrency 1 / 4 / 8 / 16: 5: 1.04 / 1.02 / 1.18 / 1.20; 1 (merge whenever a call is under way) and 4
    # merge as much at 8 and 16 but cost at 4 (0.86, 0.79: the waiting calls leave the worker idle); 6 and 8
    # merge less at 8 (1.02, 0.97).
    triton_merge_min_in_flight: int = Field(5, ge=0)
    # How often the routing (champion, challenger, rollout policy) is re-read from the Triton model's
    # config; model sync keeps retired versions loaded longer than this (its ROUTING_GRACE_S).
    routing_refresh_s: float = Field(1.0, gt=0)
    # Shadow calls under way at once; a request beyond them is not shadowed (bff_shadow_skipped_total).
    shadow_max_pending: int = Field(64, ge=1)
    online_store_timeout_s: float = Field(1.0, gt=0)
    # How often Triton's model and the online store are checked for bff_dependency_up (and /health/ready).
    dependency_probe_interval_s: float = Field(5.0, gt=0)
    # How often the Feast registry (which features to read, and where) is re-read, off the request path.
    feast_registry_refresh_s: float = Field(60.0, gt=0)
    # The most a prediction may spend on the online store and Triton together (503 past it).
    request_budget_s: float = Field(2.5, gt=0)
    # POST /labels: each S3 request of the ground-truth write (it retries up to three times).
    labels_write_timeout_s: float = Field(5.0, gt=0)
    inference_logging_enabled: bool = True
    # Records waiting in memory for the publisher, of every request; past it they go to the spool (JSON lines,
    # which cost CPU to write and to replay). 50,000: 256-row batches at ~66,000 rows/s outran 10,000 while the
    # broker's confirms lagged, with messages of 500 records (11.8 % spooled in the run of 12:26 of
    # benchmarks/inference_logging/message_size.py), rarely with 2,000 (0.3 %, its run of 18:00). Memory per
    # worker, with generated request ids: under 20 MiB, of batches or of single predictions
    # (tests/bff/test_inference_log_publisher.py holds a record in the buffer under 400 bytes); Kafka's
    # producer buffers 32 MiB.
    log_buffer_size: int = Field(50_000, ge=1)
    log_spool_dir: str = "/tmp/bff-log-spool"
    # Inference-log publishing (bff.inference_log): records per AMQP message (one block of columns), messages
    # awaiting confirms at once, and how long to wait for a fuller message before publishing (fewer,
    # fuller messages cost less CPU per record; benchmarks/inference_logging measures the total cost).
    # 2,000: batches share a message (a request's block is never split, so with 500 each 256-row batch was a
    # message of its own, and RabbitMQ and the log worker pay per message); 2,000 of the largest records stay
    # under the log worker's MAX_MESSAGE_BYTES, as blocks and as JSON lines (the spool's replays)
    # (tests/bff/test_inference_log_publisher.py). The linger ends as soon as a message is full. Linger
    # 0.25 s: single predictions at ~1,800/s fill one message of ~450 records where 0.05 s sent five of ~90.
    # Both measured by benchmarks/inference_logging/message_size.py.
    # A SIGKILL loses what waits in memory (at most LOG_BUFFER_SIZE records, whatever the linger);
    # SIGTERM publishes it first.
    log_message_max_records: int = Field(2_000, ge=1)
    log_publish_max_in_flight: int = Field(20, ge=1)
    log_publish_linger_s: float = Field(0.25, ge=0)
    # A confirm slower than this counts as a broker outage: the records go to the spool.
    log_publish_timeout_s: float = Field(5.0, gt=0)
    log_connect_timeout_s: float = Field(5.0, gt=0)
    # Reconnect backoff doubles from 0.1 s up to this.
    log_reconnect_max_s: float = Field(5.0, gt=0)
    log_spool_segment_bytes: int = Field(16 << 20, ge=1024)
    # The spool's segment files never exceed this; records that do not fit are dropped and counted
    # (outcome "dropped_spool_full"). Each uvicorn worker has a slot of its own, with an equal share of it.
    log_spool_max_bytes: int = Field(512 << 20, gt=0)
    log_drain_timeout_s: float = Field(20.0, gt=0)

    def worker_processes(self) -> int:
        return self.bff_workers or usable_cpus()

    @model_validator(mode="after")
    def _api_keys_usable(self) -> "Settings":
        malformed = [name for name, digest in self.api_keys.items() if not _is_sha256(digest)]
        if malformed:
            raise ValueError(
                f"API_KEYS: {malformed} are not 'sha256:<64 hex digits>' (python -m bff.api_keys new NAME)"
            )
        if self.api_keys_required and not self.api_keys:
            raise ValueError("API_KEYS_REQUIRED is true but API_KEYS holds no key: nobody could call the API")
        return self


def _is_sha256(digest: str) -> bool:
    return re.fullmatch(r"sha256:[0-9a-f]{64}", digest) is not None
