"""`router monitor` on real SQLite decision stores holding real MiniLM prompt embeddings: it flags GSM8K traffic
against a chat-and-code reference (and against the shipped router's training prompts), stays quiet on a window
drawn from the training mix, and ranks a planted all-disliked region first."""
import json
import random
import time

import numpy as np
import pytest
import yaml

from router.cli import EXIT_MONITOR_FIRED, main
from router.offline.monitor import parse_time
from router.policy import load_policy
from router.store import DecisionStore

SHIPPED_ARTIFACT = "data/router/default.json"
MODELS = {"chat": ["smollm2-135m", "smollm2-135m", "qwen2.5-coder-0.5b"],
          "code": ["qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"], "math": ["qwen2.5-coder-1.5b"]}


@pytest.fixture(scope="module")
def prompts():
    """Two disjoint samples of the training mix (chat + code + math), and GSM8K test questions, embedded."""
    from router.features import Encoder

    rng = random.Random(0)
    mix = rng.sample([json.loads(line) for line in open("data/labels/prompts.jsonl")], 200)
    gsm8k = rng.sample([json.loads(line)["question"] for line in open("data/routellm/gsm8k/test.jsonl")], 60)
    texts = [p["prompt"] for p in mix] + gsm8k
    order = np.argsort([len(t) for t in texts])   # batches of like lengths pad less: 2.4x faster here
    embeddings = np.empty((len(texts), 384), np.float32)
    embeddings[order] = Encoder(threads=2).encode([texts[i] for i in order])
    items = [{"id": f"{p['task']}-{p['sample_id']}", "task": p["task"], "prompt": p["prompt"], "embedding": e}
             for p, e in zip(mix, embeddings)]
    math = [{"id": f"gsm8k-{i}", "task": "math", "prompt": q, "embedding": e}
            for i, (q, e) in enumerate(zip(gsm8k, embeddings[len(mix):]))]
    return {"a": items[:100], "b": items[100:], "gsm8k": math}


def _row(item: dict, at: float, rng: random.Random, model: str | None = None, encoder: str | None = None,
         profile: str | None = None) -> dict:
    model = model or rng.choice(MODELS[item["task"]])
    scores = {m: round(min(1.0, max(0.0, rng.gauss(0.6 if item["task"] == "chat" else 0.4, 0.15))), 3)
              for m in ("smollm2-135m", "qwen2.5-coder-0.5b")} | {"qwen2.5-coder-1.5b": 0.8}
    return {"request_id": f"{item['id']}@{at:.0f}", "at": at, "session_id": None, "endpoint": "chat", "model": model,
            "chosen": model, "rule": "cheapest_confident", "task": item["task"], "policy_version": "test",
            "scores": scores, "thresholds": {}, "fallback": None, "cascade": None, "ood_distance": None,
            "latency_s": 0.1, "input_tokens": 10, "output_tokens": 10, "cost": 0.0, "prompt_sha256": "0" * 64,
            "prompt_embedding": np.asarray(item["embedding"], "<f4").tobytes(), "prompt_text": item["prompt"],
            "response_text": None, "prompt_embedding_encoder": encoder, "profile": profile}


def _store(path, windows: list[tuple], rate=None, encoder_of=lambda i: None, profile_of=lambda hours, i: None) -> str:
    """A SQLite store with each window's prompts at (items, hours ago[, the model that answered them all]);
    `rate(item)` -> like/dislike/None rates the answers of the last two hours; `encoder_of(i)` names the encoder
    of a window's i-th embedding (None: the catalogue's); `profile_of(hours ago, i)` the profile its request named."""
    url = f"sqlite:///{path}"
    store, rng, now = DecisionStore(url=url), random.Random(1), time.time()
    try:
        for items, hours_ago, *model in windows:
            for i, item in enumerate(items):
                store.record(_row(item, now - hours_ago * 3600 + i, rng, *(model or [None]), encoder_of(i),
                                  profile_of(hours_ago, i)))
        store.flush()
        for items, hours_ago, *_ in windows:
            for i, item in enumerate(items):
                verdict = rate(item) if rate and hours_ago < 2 else None
                if verdict:
                    store.rate(f"{item['id']}@{now - hours_ago * 3600 + i:.0f}", float(verdict == "like"), verdict)
    finally:
        store.close()
    return url


def _policy_with_reference(tmp_path, items: list[dict], encoder: str = "minilm-l6-v2") -> str:
    """The serving policy with a copy of the shipped router whose training prompts are `items` (the reference),
    recorded as made by `encoder`."""
    artifact = json.loads(open(SHIPPED_ARTIFACT).read())
    artifact["ood"]["keys"] = np.round([i["embedding"] for i in items], 4).tolist()
    artifact["metadata"]["features"]["encoder"] = encoder
    (tmp_path / f"router-{encoder}.json").write_text(json.dumps(artifact))
    policy = load_policy("serve_config.yaml").model_dump(mode="json") | {
        "classifier": str(tmp_path / f"router-{encoder}.json")}
    (tmp_path / f"policy-{encoder}.yaml").write_text(yaml.safe_dump(policy))
    return str(tmp_path / f"policy-{encoder}.yaml")


def _monitor(tmp_path, url: str, *extra: str) -> tuple[int, dict]:
    code = main(["monitor", "--url", url, "--since", "2h", "--out", str(tmp_path / "out"), *extra])
    return code, json.loads((tmp_path / "out" / "monitor.json").read_text())


@pytest.fixture(autouse=True)
def _no_store_env(monkeypatch):
    monkeypatch.delenv("ROUTER_STORE_URL", raising=False)


def test_times():
    from datetime import datetime, timezone

    now = 1_800_000_000.0
    assert parse_time("24h", now) == now - 86400 and parse_time("7d", now) == now - 7 * 86400
    assert parse_time("now", now) == now and parse_time("30m", now) == now - 1800
    utc = datetime(2027, 1, 15, 8, tzinfo=timezone.utc).timestamp()
    assert parse_time("2027-01-15T08:00:00Z", now) == parse_time("2027-01-15T08:00", now) == utc
    with pytest.raises(ValueError, match="ISO time"):
        parse_time("yesterday", now)


def test_flags_gsm8k_against_the_shipped_router(prompts, tmp_path, capsys):
    url = _store(tmp_path / "s.db", [(prompts["gsm8k"], 1)])
    code, report = _monitor(tmp_path, url)   # the default policy: serve_config.yaml and its shipped artifact
    out = capsys.readouterr().out
    assert code == EXIT_MONITOR_FIRED and "FIRED embedding drift" in out
    assert report["reference"]["kind"] == "training" and SHIPPED_ARTIFACT in report["reference"]["label"]
    assert report["drift"]["embeddings"]["p_value"] < 0.01
    assert report["drift"]["model_shares"]["available"] is False   # no served shares in a training table
    for kind in ("json", "png", "html"):
        assert (tmp_path / "out" / f"monitor.{kind}").stat().st_size > 0 and f"monitor.{kind}" in out
    assert (tmp_path / "out" / "monitor.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (tmp_path / "out" / "monitor.html").read_text()
    assert "<img" in page and "Problem regions" in page and "embedding drift" in page


def test_flags_gsm8k_against_a_chat_and_code_reference(prompts, tmp_path, capsys):
    reference = [i for i in prompts["a"] if i["task"] in ("chat", "code")]
    url = _store(tmp_path / "s.db", [(prompts["gsm8k"], 1)])
    code, report = _monitor(tmp_path, url, "--policy", _policy_with_reference(tmp_path, reference))
    assert code == EXIT_MONITOR_FIRED
    assert report["drift"]["embeddings"]["p_value"] < 0.01
    assert report["drift"]["clusters"]["psi"] > 0.25
    assert any(f.startswith("cluster shift") for f in report["fired"])


def test_quiet_on_a_window_from_the_training_mix(prompts, tmp_path, capsys):
    url = _store(tmp_path / "s.db", [(prompts["b"], 1)])
    code, report = _monitor(tmp_path, url, "--policy", _policy_with_reference(tmp_path, prompts["a"]))
    assert code == 0 and report["fired"] == [], report["fired"]
    assert report["drift"]["embeddings"]["p_value"] > 0.01
    assert "quiet" in capsys.readouterr().out


def test_ranks_a_planted_disliked_region_first(prompts, tmp_path, capsys):
    """Every code answer in the window is disliked, everything else liked; against the same mix a day earlier."""
    url = _store(tmp_path / "s.db", [(prompts["a"], 30), (prompts["b"], 1)],
                 rate=lambda item: "dislike" if item["task"] == "code" else "like")
    code, report = _monitor(tmp_path, url, "--reference", "window", "--reference-since", "48h",
                            "--reference-until", "24h")
    assert code == EXIT_MONITOR_FIRED
    assert all(f.startswith("problem region #") for f in report["fired"]), report["fired"]   # no drift fired
    top = report["problem_regions"]["clusters"][0]
    members = [rid for rid, rank in zip(report["map"]["request_id"], report["map"]["cluster_rank"]) if rank == 1]
    assert top["rank"] == 1 and top["dislike_rate"] >= 0.8 and top["fired"]
    assert sum(rid.startswith("code-") for rid in members) >= 0.8 * len(members)
    assert all(x["request_id"].startswith("code-") for x in top["examples"]) and top["examples"][0]["prompt"]
    assert report["drift"]["model_shares"]["available"] and report["drift"]["confidence"]["models"]
    assert "FIRED problem region #1" in capsys.readouterr().out


def test_model_share_shift_against_an_earlier_window(prompts, tmp_path, capsys):
    """The same mix of prompts as a day earlier, but now the large model answers everything."""
    url = _store(tmp_path / "s.db", [(prompts["a"], 30), (prompts["b"], 1, "qwen2.5-coder-1.5b")])
    code, report = _monitor(tmp_path, url, "--reference", "window", "--reference-since", "48h",
                            "--reference-until", "24h")
    shares = report["drift"]["model_shares"]
    assert code == EXIT_MONITOR_FIRED and shares["window"] == {"qwen2.5-coder-1.5b": 1.0}
    assert shares["largest"] == "qwen2.5-coder-1.5b" and shares["max_abs_shift"] > 0.15
    assert [f for f in report["fired"] if not f.startswith("model share shift")] == []
    assert "FIRED model share shift: qwen2.5-coder-1.5b" in capsys.readouterr().out


def test_only_the_routers_own_encoders_embeddings_are_compared(prompts, tmp_path):
    """A window in which a router on the static encoder answered every fourth request: a MiniLM router's monitor
    compares only the MiniLM rows' embeddings, and a static router's only the static rows' (the vectors share a
    size, not a space). The store's label decides; these vectors are all MiniLM's, so the test sees the choice."""
    url = _store(tmp_path / "s.db", [(prompts["b"], 1)],
                 encoder_of=lambda i: "minilm-l6-v2-static" if i % 4 == 0 else None)
    for encoder, own, others in (("minilm-l6-v2", 75, 25), ("minilm-l6-v2-static", 25, 75)):
        _, report = _monitor(tmp_path, url, "--policy", _policy_with_reference(tmp_path, prompts["a"], encoder))
        assert report["counts"]["rows"] == 100 and report["counts"]["with_embedding"] == own, encoder
        assert any(n.startswith(f"{others} rows of the window carry another encoder's") for n in report["notes"])


def test_a_store_from_before_the_encoder_column_reads_as_the_catalogue_encoder(prompts, tmp_path):
    """A store at migration 0002 (no prompt_embedding_encoder): the monitor, which never migrates a store, reads
    every embedding as the catalogue's MiniLM."""
    from alembic import command
    from alembic.config import Config

    from router.store.store import MIGRATIONS, open_engine

    url = _store(tmp_path / "s.db", [(prompts["b"], 1)], encoder_of=lambda i: "minilm-l6-v2-static")
    config, engine = Config(), open_engine(url)
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0002")
    engine.dispose()
    _, report = _monitor(tmp_path, url, "--policy", _policy_with_reference(tmp_path, prompts["a"]))
    assert report["counts"]["with_embedding"] == 100 and not any("another encoder" in n for n in report["notes"])


def test_a_move_in_the_profiles_clients_ask_for_is_noted_beside_the_model_shares(prompts, tmp_path):
    """The same prompts as a day earlier, but now most requests name the economy profile."""
    url = _store(tmp_path / "s.db", [(prompts["a"], 30), (prompts["b"], 1)],
                 profile_of=lambda hours, i: "economy" if hours < 2 and i % 5 else None)
    _, report = _monitor(tmp_path, url, "--reference", "window", "--reference-since", "48h",
                         "--reference-until", "24h")
    shares = report["drift"]["profile_shares"]
    assert (shares["reference"], shares["window"]) == ({"none": 1.0}, {"economy": 0.8, "none": 0.2})
    assert shares["p_value"] < 1e-6
    assert "the profiles clients ask for moved (economy 0% -> 80%, none 100% -> 20%; chi-square p = " in \
        " ".join(report["notes"])
    _, quiet = _monitor(tmp_path, _store(tmp_path / "q.db", [(prompts["a"], 30), (prompts["b"], 1)]),
                        "--reference", "window", "--reference-since", "48h", "--reference-until", "24h")
    assert not any("profiles clients ask for" in n for n in quiet["notes"])
    # 3 of 12 requests (25%, past the 15% bound) is within chance against 0 of 12: no note
    _, few = _monitor(tmp_path, _store(tmp_path / "f.db", [(prompts["a"][:12], 30), (prompts["b"][:12], 1)],
                                       profile_of=lambda hours, i: "economy" if hours < 2 and i < 3 else None),
                      "--reference", "window", "--reference-since", "48h", "--reference-until", "24h")
    assert few["drift"]["profile_shares"]["window"] == {"economy": 0.25, "none": 0.75}
    assert few["drift"]["profile_shares"]["p_value"] > 0.05
    assert not any("profiles clients ask for" in n for n in few["notes"])


def test_too_few_rows_says_so_and_fires_nothing(prompts, tmp_path, capsys):
    url = _store(tmp_path / "s.db", [(prompts["gsm8k"][:10], 1)])
    code, report = _monitor(tmp_path, url)
    out = capsys.readouterr().out
    assert code == 0 and report["fired"] == [] and report["drift"]["embeddings"] is None
    assert "10 rows with a prompt embedding, fewer than" in out


@pytest.mark.parametrize("args, message", [
    (["--url", "sqlite:///{tmp}/missing.db"], "no decision store at"),
    (["--url", "nosuchdriver://x"], "cannot be used"),
    (["--url", "sqlite:///{tmp}/empty.db"], "holds no decisions yet"),
    (["--url", "sqlite:///{tmp}/empty.db", "--since", "last tuesday"], "'last tuesday'"),
    (["--url", "sqlite:///{tmp}/empty.db", "--since", "1h", "--until", "2h"], "must be before --until"),
    (["--url", "sqlite:///{tmp}/empty.db", "--clusters", "many"], "--clusters 'many'"),
    (["--url", "sqlite:///{tmp}/empty.db", "--reference-since", "3d"], "add --reference window"),
])
def test_bad_input_is_one_error_line(tmp_path, capsys, args, message):
    DecisionStore(url=f"sqlite:///{tmp_path}/empty.db").close()
    code = main(["monitor", "--out", str(tmp_path / "out"), *[a.replace("{tmp}", str(tmp_path)) for a in args]])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err
