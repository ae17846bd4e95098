"""`router train --from-store` and `router label --from-store`: rated answers in a real SQLite decision store (real
MiniLM embeddings of real prompts, rows written as the serving shell writes them) become outcome rows that move
the router the way the feedback says, with their provenance in the artifact."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from models.catalogue import load_catalogue
from router.classifier import AdequacyClassifier, feature_matrix
from router.cli import main
from router.decision import Decision
from router.features import Encoder
from router.offline import from_store
from router.offline.decisions import decide_rows
from router.policy import load_policy
from router.serving.feedback import RequestContext, decision_row
from router.store import DecisionStore

ROOT = Path(__file__).parents[1]
TABLE = ROOT / "data" / "outcomes" / "default.csv"
POLICY = ROOT / "serve_config.yaml"
SMALL, MID, LARGE = "smollm2-135m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"

# new prompts in the region of the table's code-requests (none of them is in the table)
CODE_REQUESTS = [
    "Write a Python function sum_digits(n) that returns the sum of the digits of a non-negative integer.",
    "Write a Python function is_anagram(a, b) that returns True when the two strings are anagrams.",
    "Write a Python function max_of_list(nums) that returns the largest number in a list without using max().",
    "Write a Python function remove_vowels(text) that returns the text without its vowels.",
    "Write a Python function gcd(a, b) that returns the greatest common divisor of two integers.",
    "Write a Python function chunk(items, size) that splits a list into lists of at most size items.",
    "Write a Python function count_words(sentence) that returns the number of words in a sentence.",
    "Write a Python function square_list(nums) that returns a list of the squares of the numbers.",
    "Write a Python function is_even(n) that returns True when n is even.",
    "Write a Python function title_case(text) that capitalises every word of the text.",
    "Write a Python function rotate_list(items, k) that rotates a list k places to the right.",
    "Write a Python function average(nums) that returns the mean of a list of numbers, or 0 for an empty list.",
    "Write a Python function char_frequency(text) that returns a dict of how often each character occurs.",
    "Write a Python function lcm(a, b) that returns the least common multiple of two positive integers.",
    "Write a Python function dedupe(items) that returns the sorted unique values of a list.",
    "Write a Python function longest_word(sentence) that returns the longest word in a sentence.",
]
SMALL_TALK = ["Hey there, nice to meet you!", "Good afternoon!", "Thanks so much, that was kind.",
              "Hello, hope your day is going well.", "See you tomorrow!", "Cheers, have a good weekend!",
              "Hi, how have you been?", "Thank you very much!"]


@pytest.fixture(scope="module")
def encoder():
    return Encoder(threads=1)


@pytest.fixture(scope="module", autouse=True)
def isolated(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:  # neither the user's embedding cache nor their store
        mp.setenv("ROUTER_EMBEDDING_CACHE", str(tmp_path_factory.mktemp("embeddings")))
        mp.delenv("ROUTER_STORE_URL", raising=False)
        yield


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    """A small table (6 of the 15 code requests and 50 other rows) and held-out rows of the table."""
    frame = pd.read_csv(TABLE, keep_default_na=False, na_values=[""])
    code = frame[frame["eval_name"] == "code-requests"]
    talk = frame[frame["eval_name"] == "small-talk"]
    rest = frame[~frame["eval_name"].isin(["code-requests", "small-talk"])].sample(n=44, random_state=0)
    table = pd.concat([code.iloc[:6], talk.iloc[:6], rest])
    path = tmp_path_factory.mktemp("table") / "small.csv"
    table.to_csv(path, index=False)
    return SimpleNamespace(path=path, held_code=code.iloc[6:], held_talk=talk.iloc[6:])


def make_store(path: Path, encoder, prompts: list[str], model: str, rating: str | None, task: str,
               keep_text: bool = True, prefix: str = "r") -> str:
    """A store written as the serving shell writes it: decision rows (with `encoder`'s embeddings, named as the
    ingress names them), then feedback on each. A second call on the same path adds to that store."""
    url = f"sqlite:///{path}"
    store = DecisionStore(url)
    assert store.url == url
    catalogue = load_catalogue()
    try:
        for i, (prompt, vector) in enumerate(zip(prompts, encoder.encode(prompts))):
            asked = RequestContext(f"{prefix}{i}", prompt, "chat.completions", None, vector, encoder.name)
            decision = Decision(model, "cheapest_confident", "planted", task, encoder.count_tokens(prompt))
            store.record(decision_row(asked, decision, model, None, 40, 60, catalogue.model(model).cost(40, 60), None,
                                      "test-policy", f"an answer to {prompt!r}", keep_text))
        store.flush()
        if rating is not None:
            for i in range(len(prompts)):
                store.rate(f"{prefix}{i}", {"like": 1.0, "dislike": 0.0}[rating], rating)
        assert len(store.rows()) >= len(prompts)
    finally:
        store.close()
    return url


def train(table: Path, out: Path, *extra: str) -> dict:
    assert main(["train", "--table", str(table), "--out", str(out), *extra]) == 0
    return json.loads(out.read_text())


def routed(artifact: Path, held: pd.DataFrame, encoder) -> tuple[np.ndarray, list[str]]:
    """Each held-out prompt's model as the serving decision picks it (serve_config.yaml's policy at fixed 0.5
    thresholds, so recalibrating the shipped policy does not move this test), on the router's scores alone (the
    OOD check off: a router with more prompts near these would flag fewer of them)."""
    clf = AdequacyClassifier.load(artifact)
    prompts = held["prompt"].tolist()
    tokens = [encoder.count_tokens(p) for p in prompts]
    features = feature_matrix(encoder.encode(prompts), tokens)
    tasks = [clf.tasks[i] for i in clf.predict_tasks(features).argmax(axis=1)]
    policy = load_policy(POLICY).with_thresholds({SMALL: 0.5, MID: 0.5})
    chosen = decide_rows(clf.models, clf.predict_proba(features, prompts), tasks, tokens, policy, load_catalogue())
    return chosen, clf.models


@pytest.fixture(scope="module")
def baseline(split, tmp_path_factory):
    out = tmp_path_factory.mktemp("base") / "router.json"
    train(split.path, out, "--family", "knn")
    return out


def test_dislikes_in_a_region_send_more_of_it_to_the_large_model(split, baseline, encoder, tmp_path, capsys):
    url = make_store(tmp_path / "d.db", encoder, CODE_REQUESTS, MID, "dislike", "code")
    artifact = train(split.path, tmp_path / "router.json", "--from-store", url, "--family", "knn")
    before, models = routed(baseline, split.held_code, encoder)
    after, _ = routed(tmp_path / "router.json", split.held_code, encoder)
    large = models.index(LARGE)
    assert (after == large).mean() > (before == large).mean(), (before, after)
    assert (after == models.index(MID)).mean() < (before == models.index(MID)).mean()
    rows = artifact["metadata"]["rows"]  # provenance
    assert rows["table"] == {"path": str(split.path), "sha256": rows["table"]["sha256"], "n": 56}
    assert rows["store"]["url"] == url and rows["store"]["n"] == len(CODE_REQUESTS)
    assert rows["store"]["n_feedback"] == len(CODE_REQUESTS) and rows["store"]["n_judged"] == 0
    assert rows["store"]["window"]["first"] <= rows["store"]["window"]["last"]
    assert artifact["metadata"]["training_data"]["rows"] == 56 + len(CODE_REQUESTS)
    assert "from the store: 16 rows (16 rated, 0 graded)" in capsys.readouterr().err


def test_likes_in_a_region_do_not_lower_quality(split, baseline, encoder, tmp_path):
    url = make_store(tmp_path / "l.db", encoder, SMALL_TALK, SMALL, "like", "chat")
    train(split.path, tmp_path / "router.json", "--from-store", url, "--family", "knn")
    scores = split.held_talk[[SMALL, MID, LARGE]].to_numpy()
    before, models = routed(baseline, split.held_talk, encoder)
    after, _ = routed(tmp_path / "router.json", split.held_talk, encoder)
    columns = [[SMALL, MID, LARGE].index(models[j]) for j in range(3)]
    quality = lambda chosen: scores[np.arange(len(chosen)), [columns[c] for c in chosen]].mean()  # noqa: E731
    assert quality(after) >= quality(before)
    assert (after == models.index(LARGE)).mean() <= (before == models.index(LARGE)).mean()


def test_train_reads_only_the_store_rows_of_its_own_encoder(split, encoder, tmp_path, capsys):
    """A store in which a MiniLM router answered the code requests and a router on the static encoder the small
    talk: `train --from-store` on each encoder takes only the rows whose embeddings that encoder made."""
    from router.static_encoder import static_encoder

    url = make_store(tmp_path / "both.db", encoder, CODE_REQUESTS, MID, "dislike", "code", prefix="minilm")
    make_store(tmp_path / "both.db", static_encoder(encoder), SMALL_TALK, SMALL, "like", "chat", prefix="static")
    for name, own, other in (("minilm-l6-v2", CODE_REQUESTS, SMALL_TALK),
                             ("minilm-l6-v2-static", SMALL_TALK, CODE_REQUESTS)):
        artifact = train(split.path, tmp_path / f"{name}.json", "--from-store", url, "--family", "knn",
                         "--encoder", name)
        assert artifact["metadata"]["features"]["encoder"] == name
        assert artifact["metadata"]["rows"]["store"]["n"] == len(own)
        assert f"'other_encoder': {len(other)}" in capsys.readouterr().err


def test_unknown_models_take_the_nearest_table_prompts_mean_score(split, encoder, tmp_path):
    from router.offline.outcomes import load_outcomes
    from router.offline.train import table_features

    url = make_store(tmp_path / "d.db", encoder, CODE_REQUESTS[:3], MID, "dislike", "code")
    table = load_outcomes(split.path)
    features, _ = table_features(table, encoder)
    args = SimpleNamespace(from_store=url, judged=None, store_days=None, table=str(split.path))
    merged = from_store.merge_store(args, table, features, load_catalogue(), encoder)
    assert len(merged.table) == len(table) + 3 and merged.features.shape == (len(table) + 3, features.shape[1])
    added = merged.table.frame.iloc[len(table):]
    assert (added[MID] == 0.0).all()  # the verdict on the serving model
    vectors = encoder.encode(CODE_REQUESTS[:3])
    nearest = np.argsort(-(vectors @ features[:, :-1].T), axis=1)[:, :from_store.NEIGHBOURS]
    for i in range(3):
        for model in (SMALL, LARGE):
            assert added[model].iloc[i] == pytest.approx(table.frame[model].to_numpy()[nearest[i]].mean())
    assert added["eval_name"].iloc[0] == table.frame["eval_name"].iloc[nearest[0, 0]]
    assert added["task"].tolist() == ["code"] * 3


def test_rows_without_text_train_embedding_families_only(split, encoder, tmp_path, capsys):
    url = make_store(tmp_path / "d.db", encoder, CODE_REQUESTS, MID, "dislike", "code", keep_text=False)
    code = main(["train", "--table", str(split.path), "--out", str(tmp_path / "r.json"), "--from-store", url,
                 "--family", "tfidf"])
    assert code == 2
    assert "tfidf reads the prompt text, and 16 store rows were stored without it" in capsys.readouterr().err
    artifact = train(split.path, tmp_path / "r.json", "--from-store", url, "--family", "knn")
    assert artifact["metadata"]["rows"]["store"]["without_text"] == len(CODE_REQUESTS)
    assert "embedding families only" in artifact["metadata"]["selection"]["criterion"]
    assert "only the embedding families (lr, knn, domain, blend, gain-blend) are tried" in capsys.readouterr().err
    auto = from_store.embedding_only("auto", 16)  # what --family auto tries (fitting them all takes too long here)
    assert {name for name, _ in auto} == {"knn", "lr", "domain", "blend", "gain-blend"}
    for blend in ("blend", "gain-blend"):
        members = [[m["name"] for m in params["members"]] for name, params in auto if name == blend]
        assert members == [["knn", "domain", "lr"]]


def test_verdicts():
    judged = {"j": from_store.JudgedAnswer(request_id="j", model=MID, score=1.0)}

    def verdict(request_id: str, model: str, feedback: float | None):
        return from_store.served_verdict({"request_id": request_id, "model": model, "feedback_score": feedback}, judged)

    assert verdict("a", MID, 0.75) == (1.0, "feedback")   # 4 stars
    assert verdict("a", MID, 0.25) == (0.0, "feedback")   # 2 stars
    assert verdict("a", MID, 0.5) is None                 # 3 stars: no verdict
    assert verdict("j", MID, 0.0) == (0.0, "feedback")    # the user's rating wins over the grader's
    assert verdict("j", MID, None) == (1.0, "judged")
    assert verdict("j", SMALL, None) is None              # graded for another model
    redacted = from_store.redacted("postgresql+psycopg://router:secret@db/router")
    assert redacted == "postgresql+psycopg://router:***@db/router"


def test_bad_url_missing_file_and_empty_store_are_clear_errors(split, tmp_path, capsys):
    base = ["train", "--table", str(split.path), "--out", str(tmp_path / "r.json"), "--family", "knn"]
    assert main([*base, "--from-store", "nonsense://x"]) == 2
    assert "store URL 'nonsense://x' cannot be used" in capsys.readouterr().err
    assert main([*base, "--from-store", f"sqlite:///{tmp_path / 'absent.db'}"]) == 2
    assert "no such file" in capsys.readouterr().err
    assert not (tmp_path / "absent.db").exists()
    DecisionStore(f"sqlite:///{tmp_path / 'empty.db'}").close()
    assert main([*base, "--from-store", f"sqlite:///{tmp_path / 'empty.db'}"]) == 2
    assert "no answered requests" in capsys.readouterr().err
    with pytest.raises(SystemExit) as refused:  # argparse refuses it before the store is opened
        main([*base, "--from-store", f"sqlite:///{tmp_path / 'empty.db'}", "--store-days", "0"])
    assert refused.value.code == 2
    assert "--store-days: 0 must be in (0, inf)" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()


def test_label_grades_unrated_answers_and_train_merges_them(split, encoder, tmp_path, capsys):
    """The grading call is injected (judges.parse_grade reads its reply); the real grader is the next test."""
    url = make_store(tmp_path / "s.db", encoder, CODE_REQUESTS[:6], MID, None, "code")
    textless = make_store(tmp_path / "s.db", encoder, CODE_REQUESTS[6:8], MID, None, "code", keep_text=False,
                          prefix="t")
    assert textless == url
    store = DecisionStore(url)
    store.rate("r0", 1.0, "like")  # a user's rating: never graded
    store.close()
    replies = iter(["Comment: wrong.\nGrade: 2", "Comment: fine.\nGrade: 5", "I cannot tell.", "Grade: 1"])
    asked = []

    def ask(prompt: str) -> str:
        asked.append(prompt)
        return next(replies)

    out = tmp_path / "judged.jsonl"
    summary = from_store.judge_store(url, out, load_catalogue(), sample=3, ask=ask)
    assert "graded 2 of 5 unrated answers" in summary and "1 replies had no grade" in summary
    assert "2 of them skipped: no prompt or answer text" in capsys.readouterr().err
    assert len(asked) == 3 and all("Assistant's answer: an answer to" in p for p in asked)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [e["score"] for e in lines] == [0.0, 1.0] and {e["model"] for e in lines} == {MID}
    assert "r0" not in {e["request_id"] for e in lines}
    from_store.judge_store(url, out, load_catalogue(), sample=1, ask=ask)  # continues: graded ones are not asked again
    assert len(asked) == 4 and asked[3] not in asked[:2]
    assert len(out.read_text().splitlines()) == 3

    artifact = train(split.path, tmp_path / "r.json", "--from-store", url, "--judged", str(out), "--family", "knn")
    store_meta = artifact["metadata"]["rows"]["store"]
    assert (store_meta["n_feedback"], store_meta["n_judged"], store_meta["n"]) == (1, 3, 4)
    assert store_meta["judged"]["path"] == str(out)


def test_label_from_store_with_a_real_grader(encoder, tmp_path, capsys):
    """The smallest catalogue model as the grader, end to end through the CLI (the large one is too slow here)."""
    url = make_store(tmp_path / "s.db", encoder, CODE_REQUESTS[:2], MID, None, "code")
    out = tmp_path / "judged.jsonl"
    assert main(["label", "--from-store", url, "--sample", "1", "--grader", SMALL, "--threads", "1",
                 "--judged", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "of 2 unrated answers with smollm2-135m" in printed
    graded = out.read_text().splitlines() if out.exists() else []
    assert len(graded) <= 1 and all(json.loads(line)["grader"] == SMALL for line in graded)
