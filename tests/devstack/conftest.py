import importlib

import pytest

SETTINGS_MODULES = (
    "mlops_common.settings",
    "bff.settings",
    "feature_store.settings",
    "log_worker.settings",
    "model_sync.settings",
    "trainer.settings",
    "devstack.settings",
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
