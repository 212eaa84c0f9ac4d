import importlib
from pathlib import Path

import pytest

from devstack.processes import free_port, free_port_block
from devstack.settings import Settings

SETTINGS_MODULES = (
    "mlops_common.settings",
    "bff.settings",
    "feature_store.settings",
    "log_worker.settings",
    "model_sync.settings",
    "monitor.settings",
    "trainer.settings",
    "job_worker.settings",
    "batch_scoring.settings",
    "devstack.settings",
    "dashboards.settings",
)


@pytest.fixture(scope="session")
def settings_field_names() -> set[str]:
    """Every field of every settings class the platform's processes read (lower case)."""
    fields: set[str] = set()
    for module in SETTINGS_MODULES:
        for value in vars(importlib.import_module(module)).values():
            if isinstance(value, type) and hasattr(value, "model_fields"):
                fields |= set(value.model_fields)
    return fields


@pytest.fixture
def private_stack_settings(tmp_path: Path) -> Settings:
    """Settings of a local stack with every port free and all state under tmp_path/.stack."""
    stack_dir = tmp_path / ".stack"
    return Settings(
        stack_dir=stack_dir,
        model_repository=stack_dir / "model_repository",
        s3_endpoint_url=f"http://127.0.0.1:{free_port()}",
        seaweedfs_internal_base_port=free_port_block(9),
        triton_http_url=f"127.0.0.1:{free_port()}",
        triton_grpc_url=f"127.0.0.1:{free_port()}",
        triton_metrics_port=free_port(),
        mlflow_tracking_uri=f"http://127.0.0.1:{free_port()}",
        prometheus_url=f"http://127.0.0.1:{free_port()}",
        bff_port=free_port(),
        bff_metrics_port=free_port(),
        model_sync_metrics_port=free_port(),
        log_worker_metrics_port=free_port(),
    )
