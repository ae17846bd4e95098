"""Adversarial training of the router (`router train --prefix-copies N --adversarial-rounds R`,
router/offline/hardening.py): the copies it fits on, the gadgets it keeps, its resume, and `router calibrate` on
the artifact it writes. That it holds "down" gadgets is measured at full size in bench/prefix_augmentation.py
(20 minutes), not asserted here: a search small enough for a test barely flips the plain router either."""
import json
import shutil

import numpy as np
import pytest

from models.catalogue import load_catalogue
from router.classifier import AdequacyClassifier
from router.features import Encoder
from router.offline.guard_train import held_out
from router.offline.hardening import Search, augment, fit_hardened, rebuild
from router.offline.outcomes import load_outcomes
from router.offline.select import out_of_fold, prompt_folds
from router.offline.train import table_features
from router.policy import DEFAULT_POLICY_PATH, load_policy

TABLE = "data/outcomes/default.csv"
TINY = Search(prompts=4, length=3, candidates=4, seeds=1)  # 4 searches a round, seconds each


@pytest.fixture(scope="module")
def setup():
    catalogue, encoder = load_catalogue(), Encoder(threads=2)
    table = load_outcomes(TABLE, catalogue.names()).subset(np.arange(60))
    features, _ = table_features(table, encoder)
    return {"catalogue": catalogue, "encoder": encoder, "table": table, "features": features,
            "policy": load_policy(DEFAULT_POLICY_PATH)}


def test_copies_keep_their_prompts_outcomes_and_never_copy_the_held_out_quarter(setup):
    table, features, encoder = setup["table"], setup["features"], setup["encoder"]
    rows = np.arange(40)
    searchable = [i for i in rows if not held_out(table.prompts[i])]
    assert 0 < len(searchable) < len(rows)  # the fixture has both kinds
    aug = augment(table, features, rows, encoder, copies=2, gadgets=["alpha beta gamma"], seed=0)
    assert len(aug.table) == len(rows) + 3 * len(searchable) and aug.clean == len(rows)
    assert aug.features.shape == (len(aug.table), features.shape[1])
    assert np.array_equal(aug.origin[:len(rows)], rows) and set(aug.origin[len(rows):]) == set(searchable)
    for n in range(len(rows), len(aug.table)):
        original = int(aug.origin[n])
        copy = aug.table.prompts[n]
        assert copy.endswith(" " + table.prompts[original]) and copy != table.prompts[original]
        assert np.array_equal(aug.table.scores()[n], table.scores()[original])
    assert all(p.startswith("alpha beta gamma ") for p in aug.table.prompts[-len(searchable):])
    again = augment(table, features, rows, encoder, copies=2, gadgets=["alpha beta gamma"], seed=0)
    other = augment(table, features, rows, encoder, copies=2, gadgets=["alpha beta gamma"], seed=1)
    assert again.table.prompts == aug.table.prompts and other.table.prompts != aug.table.prompts


def test_a_hardened_router_keeps_its_gadgets_and_clean_ood_keys_and_resumes_from_its_cache(setup, tmp_path):
    s = setup
    rows = np.arange(len(s["table"]))
    cache = tmp_path / "r.json.hardening.json"
    args = (s["table"], s["features"], rows, "knn", {"k": 8}, s["policy"], s["catalogue"], s["encoder"])
    clf, aug = fit_hardened(*args, copies=1, rounds=1, cache=cache, search=TINY)
    record = clf.metadata["hardening"]
    assert len(record["gadgets"]) == 1 and len(record["gadgets"][0]) == len(TINY.plans()) == 4
    assert record["training_rows"] == len(aug.table) > len(rows)
    # "seen before" means the clean prompts: a copy's near-twin must not shrink the threshold
    assert len(clf.ood_keys) == len(set(s["table"].prompts))
    saved = tmp_path / "r.json"
    clf.save(saved)
    loaded = AdequacyClassifier.load(saved)
    x, texts = s["features"][:10], s["table"].prompts[:10]
    assert np.allclose(loaded.predict_proba(x, texts), clf.predict_proba(x, texts))
    assert loaded.metadata["hardening"]["gadgets"] == record["gadgets"]
    # resume: a finished round in the cache is used as it stands, not searched again
    kept = json.loads(cache.read_text())
    assert kept["rounds"] == record["gadgets"]
    planted = [["planted words one"] * 4]
    cache.write_text(json.dumps({"key": kept["key"], "rounds": planted}))
    resumed, _ = fit_hardened(*args, copies=1, rounds=1, cache=cache, search=TINY)
    assert resumed.metadata["hardening"]["gadgets"] == planted
    longer, _ = fit_hardened(*args, copies=1, rounds=2, cache=cache, search=TINY)
    gadgets = longer.metadata["hardening"]["gadgets"]
    assert gadgets[0] == planted[0] and len(gadgets) == 2 and gadgets[1] != planted[0]
    # another setting's cache is not this run's: searched afresh
    other, _ = fit_hardened(*args, copies=2, rounds=1, cache=cache, search=TINY)
    assert other.metadata["hardening"]["gadgets"] != planted


def test_out_of_fold_with_copies_trains_each_fold_on_its_own_rows_copies(setup):
    """A kNN whose k covers every training row predicts the training rows' mean adequacy, so each fold's
    prediction shows which rows it trained on: its other folds' rows and their copies, never its own copies."""
    s = setup
    rows = np.arange(len(s["table"]))
    aug = augment(s["table"], s["features"], rows, s["encoder"], copies=3, gadgets=["alpha beta"], seed=0)
    probs = out_of_fold(s["table"], s["features"], rows, "knn", {"k": 100000}, 5, 0, aug)
    fold = prompt_folds(s["table"].prompts, 5, 0)
    adequate = aug.table.scores() >= 0.5
    for k in range(5):
        trained_on = fold[aug.origin] != k
        assert np.allclose(probs[fold == k], adequate[trained_on].mean(axis=0), atol=1e-6), k
        leaky = np.vstack([adequate[:len(rows)][fold != k], adequate[len(rows):]])  # every copy, its own fold's too
        assert not np.allclose(probs[fold == k], leaky.mean(axis=0), atol=1e-6), k


def test_train_with_prefix_copies_writes_a_hardened_artifact_that_calibrate_reads(setup, tmp_path, capsys):
    from router.cli import main

    table = tmp_path / "table.csv"
    s = setup
    s["table"].frame.to_csv(table, index=False)
    out = tmp_path / "r.json"
    assert main(["train", "--table", str(table), "--out", str(out), "--family", "knn", "--prefix-copies", "1"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["hardening"]["prefix_copies"] == 1 and printed["hardening"]["gadgets"] == []
    clf = AdequacyClassifier.load(out)
    assert clf.metadata["hardening"]["training_rows"] > len(s["table"])
    aug = rebuild(s["table"], s["features"], np.arange(len(s["table"])), s["encoder"], clf.metadata["hardening"])
    assert len(aug.table) == clf.metadata["hardening"]["training_rows"]
    policy = tmp_path / "serve_config.yaml"
    shutil.copy(DEFAULT_POLICY_PATH, policy)
    policy.write_text(policy.read_text().replace("classifier: data/router/default.json", f"classifier: {out}"))
    assert main(["calibrate", "--policy", str(policy), "--table", str(table), "--max-large-share", "0.5"]) == 0
    assert json.loads(capsys.readouterr().out)["large_share"] <= 0.5
    with pytest.raises(ValueError, match="hardening record is malformed"):
        rebuild(s["table"], s["features"], np.arange(5), s["encoder"], {"prefix_copies": "many"})
    with pytest.raises(SystemExit) as exited:
        main(["train", "--table", str(table), "--out", str(out), "--adversarial-rounds", "-1"])
    assert exited.value.code == 2 and "-1 must be at least 0" in capsys.readouterr().err


def test_report_hardens_its_own_router_as_train_would_and_needs_a_policy(setup, tmp_path, capsys):
    from router.cli import main

    table = tmp_path / "table.csv"
    setup["table"].frame.to_csv(table, index=False)
    out = tmp_path / "report"
    assert main(["report", "--data", str(table), "--out", str(out), "--family", "knn", "--policy",
                 str(DEFAULT_POLICY_PATH), "--prefix-copies", "2", "--robustness-sample", "10"]) == 0
    report = json.loads((out / "table.json").read_text())
    hardening, train_rows = report["data"]["hardening"], report["data"]["train_rows"]
    assert hardening["prefix_copies"] == 2 and hardening["adversarial_rounds"] == 0
    assert train_rows < hardening["training_rows"] <= 3 * train_rows  # two copies of the searchable training rows
    capsys.readouterr()
    assert main(["report", "--data", str(table), "--out", str(out), "--prefix-copies", "1"]) == 2
    assert "--prefix-copies and --adversarial-rounds need --policy" in capsys.readouterr().err
