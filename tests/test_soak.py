"""The short soak: `bench/soak.py` for 60 s at twice the ensemble's capacity on a 2-node cluster, a model replica
killed every 15 s and the second node killed once and brought back. Every request sent is answered or refused
with Retry-After: nothing lost, nothing hung."""
import json
import os
import subprocess
import sys

import pytest

from router.policy import PROJECT_ROOT

pytestmark = pytest.mark.cluster


def test_a_short_soak_with_replica_and_node_kills_loses_nothing(tmp_path):
    out = tmp_path / "soak.json"
    done = subprocess.run([sys.executable, str(PROJECT_ROOT / "bench" / "soak.py"), "--duration", "60",
                           "--kill-every", "15", "--node-down-s", "10", "--capacity-s", "10", "--out", str(out)],
                          env=os.environ.copy(), capture_output=True, text=True, timeout=1200)
    assert out.exists(), done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["sent"] > 0 and result["accounted"], result
    assert result["answered"] + result["rejected"] == result["sent"], (result["lost_examples"], result["kills"])
    assert result["lost"] == 0 and result["hung"] == 0, result["lost_examples"]
    assert result["answered"] > 0
    kills = result["kills"]
    assert any(k["kill"] == "worker node" for k in kills) and any(k["kill"] == "replica" for k in kills), kills
    node = next(k for k in kills if k["kill"] == "worker node")
    assert node["replaced_after_s"] is not None and node["healthz_green_after_s"] is not None, node
    assert done.returncode == 0
