"""/health/ready and bff_dependency_up in-process (ASGI, fakes for Triton and the online store): a pod
turns ready once both dependencies have answered and stays ready when one goes down later."""

import httpx
import pytest

from bff.app import Platform, create_app
from bff.health import DependencyProbe
from bff.metrics import DEPENDENCY_UP
from bff.settings import Settings


class Dependency:
    """Triton's model readiness and the online store's ping, switched by the test."""

    def __init__(self) -> None:
        self.up = False

    async def model_ready(self) -> bool:
        return self.up

    async def ping(self) -> bool:
        return self.up


@pytest.fixture
def bff():
    triton, online = Dependency(), Dependency()
    settings = Settings()
    app = create_app(settings)
    probe = DependencyProbe(triton, online, interval_s=60)  # type: ignore[arg-type]
    app.state.platform = Platform(settings, triton, None, online, None, probe)  # type: ignore[arg-type]
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bff")
    return triton, online, client


def gauge(dependency: str) -> float:
    return DEPENDENCY_UP.labels(dependency)._value.get()


async def test_not_ready_until_both_dependencies_have_answered(bff):
    triton, online, client = bff
    online.up = True
    answer = await client.get("/health/ready")
    assert answer.status_code == 503
    assert answer.json() == {"ready": False, "triton_model": False, "online_store": True}
    assert (gauge("triton_model"), gauge("online_store")) == (0, 1)

    triton.up = True
    answer = await client.get("/health/ready")
    assert answer.status_code == 200
    assert answer.json() == {"ready": True, "triton_model": True, "online_store": True}
    assert (gauge("triton_model"), gauge("online_store")) == (1, 1)


async def test_a_dependency_down_later_is_reported_but_keeps_the_pod_ready(bff):
    triton, online, client = bff
    triton.up = online.up = True
    assert (await client.get("/health/ready")).status_code == 200

    triton.up = False
    answer = await client.get("/health/ready")
    assert answer.status_code == 200
    assert answer.json() == {"ready": True, "triton_model": False, "online_store": True}
    assert gauge("triton_model") == 0

    online.up = False
    assert (await client.get("/health/ready")).json() == {"ready": True, "triton_model": False, "online_store": False}
    assert gauge("online_store") == 0
