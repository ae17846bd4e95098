"""A real Ray Serve ensemble on 127.0.0.1 with the real models, deployed from the real serve_config.yaml,
shared by every test that needs it."""
import os

import pytest

from router.serving.local_ensemble import local_ensemble


@pytest.fixture(scope="session")
def ensemble(tmp_path_factory):
    # the Ray workers inherit this: the ingress writes its decision store here, not into the user's cache
    os.environ["ROUTER_STORE_URL"] = f"sqlite:///{tmp_path_factory.mktemp('store') / 'decisions.db'}"
    with local_ensemble() as ens:
        yield ens


@pytest.fixture(scope="session")
def client(ensemble):
    from openai import OpenAI

    return OpenAI(base_url=f"{ensemble.base}/v1", api_key="not-needed-on-loopback", max_retries=0, timeout=300)
