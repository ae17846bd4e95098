"""A real Ray Serve ensemble on 127.0.0.1 with the real models, deployed from the real serve_config.yaml,
shared by every test that needs it."""
import pytest

from router.local_ensemble import local_ensemble


@pytest.fixture(scope="session")
def ensemble():
    with local_ensemble() as ens:
        yield ens


@pytest.fixture(scope="session")
def client(ensemble):
    from openai import OpenAI

    return OpenAI(base_url=f"{ensemble.base}/v1", api_key="not-needed-on-loopback", max_retries=0, timeout=300)
