"""The CLI's settings: the one place ``mlops`` reads its environment.

Precedence, highest first: environment variables (in the cluster: the pod's env), then the local stack's
addresses and credentials (``devstack``'s ``platform_env()`` for the stack recorded in ``STACK_DIR``, default
``.stack/``; only if that stack exists, none is created), then the defaults. So after ``mlops stack up`` every
command finds SeaweedFS, MLflow, Triton, Redis and the stack's Feast project without ``eval``.
"""

from __future__ import annotations

import os

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from mlops_common.ground_truth import GroundTruthStoreSettings
from mlops_common.rollout import RolloutSettings
from mlops_common.settings import FeastSettings, MlflowSettings, TritonSettings


def local_stack_env() -> dict[str, str]:
    """The platform's environment for the local stack, or ``{}`` if there is no stack here."""
    from devstack.instance import StackInstance
    from devstack.settings import Settings as StackSettings
    from devstack.stack import LocalStack

    stack_settings = StackSettings()
    if StackInstance.load(stack_settings.stack_dir) is None:
        return {}
    return LocalStack(stack_settings).settings.platform_env()


class _LocalStackSource(PydanticBaseSettingsSource):
    """Field values from the local stack's ``platform_env()`` (below the environment, above defaults)."""

    def get_field_value(self, field, field_name):  # pragma: no cover - __call__ does the work
        return None, field_name, False

    def __call__(self) -> dict[str, str]:
        fields = self.settings_cls.model_fields
        return {key.lower(): value for key, value in local_stack_env().items() if key.lower() in fields}


class Settings(FeastSettings, MlflowSettings, TritonSettings, GroundTruthStoreSettings, RolloutSettings):
    """Everything ``mlops`` talks to; each field is its upper-case environment variable."""

    # The prediction API (the BFF); unset: http://127.0.0.1:<BFF_PORT>.
    bff_url: str | None = None
    bff_port: int = 8080
    # The API key `mlops jobs` sends where the deployment requires keys (python -m bff.api_keys new NAME).
    mlops_api_key: SecretStr | None = None
    http_timeout_s: float = Field(10.0, gt=0)
    # Model sync's interval: `--wait` allows a few of them (plus Triton's load) by default.
    sync_interval_s: float = Field(15.0, gt=0)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, _LocalStackSource(settings_cls), dotenv_settings, file_secret_settings

    @property
    def prediction_api_url(self) -> str:
        return (self.bff_url or f"http://127.0.0.1:{self.bff_port}").rstrip("/")

    @property
    def triton_http_base_url(self) -> str:
        url = self.triton_http_url
        return (url if "://" in url else f"http://{url}").rstrip("/")

    @staticmethod
    def export_local_stack_env() -> dict[str, str]:
        """Give the services run in this process (trainer, feature pipeline, dashboards, Feast, boto3)
        the local stack's environment, for every variable not already set; returns what was set."""
        exported = {key: value for key, value in local_stack_env().items() if key not in os.environ}
        os.environ.update(exported)
        return exported

    @property
    def operator(self) -> str:
        """Who runs the command, for the audit trail."""
        import getpass

        try:
            return getpass.getuser()
        except (KeyError, OSError):  # no passwd entry (some containers)
            return f"uid {os.getuid()}"
