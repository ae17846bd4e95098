"""Router families behind one contract: JSON round trips, cross-validated selection that sees only training rows,
one decision offline and online, out-of-distribution prompts, and bad input."""
import copy
import json

import numpy as np
import pytest

from router.classifier import AdequacyClassifier
from router.families import FAMILIES, make_family
from router.offline.outcomes import load_outcomes
from router.offline.select import select_family
from router.offline.train import fit_table, table_features

TABLE = "data/outcomes/default.csv"


@pytest.fixture(scope="module")
def encoder():
    from router.features import Encoder

    return Encoder(threads=2)


@pytest.fixture(scope="module")
def table_and_features(encoder):
    from models.catalogue import load_catalogue

    table = load_outcomes(TABLE, load_catalogue().names())
    features, tokens = table_features(table, encoder)
    return table, features, tokens


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_every_family_scores_the_same_after_a_json_round_trip(name, table_and_features, tmp_path):
    table, features, _ = table_and_features
    rows = np.arange(0, len(table), 2)
    clf = fit_table(table, features, rows, make_family(name, FAMILIES[name].grid[0]))
    path = tmp_path / "router.json"
    clf.save(path)
    assert "pickle" not in path.read_text() and json.loads(path.read_text())["family"]["name"] == name
    loaded = AdequacyClassifier.load(path)
    held = np.arange(1, len(table), 2)
    texts = [table.prompts[i] for i in held]
    before, after = clf.predict_proba(features[held], texts), loaded.predict_proba(features[held], texts)
    assert before.shape == (len(held), len(table.models))  # a P(adequate) for every one of the N models
    assert np.allclose(before, after, atol=1e-5)
    assert np.allclose(clf.ood_distances(features[held]), loaded.ood_distances(features[held]), atol=1e-6)
    one = loaded.predict_one(features[held[0]], texts[0])  # serving scores one prompt alone
    assert one.scores == pytest.approx(dict(zip(table.models, after[0])), abs=1e-6)


def test_selection_sees_only_the_training_rows(table_and_features):
    table, features, _ = table_and_features
    train = np.arange(len(table))[np.arange(len(table)) % 3 != 0]
    first = select_family(table, features, train, folds=3)
    # turn every test row's outcome upside down: the choice made on the training rows must not move
    flipped = table.subset(np.arange(len(table)))
    test_rows = np.setdiff1d(np.arange(len(table)), train)
    for model in table.models:
        column = flipped.frame.columns.get_loc(model)
        flipped.frame.iloc[test_rows, column] = 1.0 - flipped.frame.iloc[test_rows, column]
    again = select_family(flipped, features, train, folds=3)
    assert (again.family, again.params, again.table) == (first.family, first.params, first.table)
    # ...while the same rows, if they were used, would change what cross-validation sees
    everything = select_family(flipped, features, np.arange(len(table)), folds=3)
    assert [r["aiq"] for r in everything.table] != [r["aiq"] for r in first.table]


def test_ensemble_selection_adds_a_family_that_sees_what_the_best_one_misses():
    """Hand-made out-of-fold scores: 'lr' knows the first half of the prompts, 'knn' the second, 'tfidf' is noise.
    Greedy selection starts from the better single family, adds the one that covers the other half, and not the
    noise."""
    from router.offline.select import ensemble_members, sweep_aiq

    rng = np.random.default_rng(0)
    n = 400
    small_ok = rng.random(n) < 0.5            # the small model is adequate on half the prompts
    adequacy = np.c_[small_ok, np.ones(n)].astype(float)
    scores, costs = adequacy.copy(), np.c_[np.full(n, 0.1), np.ones(n)]
    noise = rng.random((n, 2))

    def knows(rows):  # exact P on `rows`, noise elsewhere; the large model's P is a constant
        p = np.where(rows, adequacy[:, 0] * 0.8 + 0.1, noise[:, 0])
        return np.c_[p, np.full(n, 0.9)]

    first, second = np.arange(n) < n * 0.55, np.arange(n) >= n * 0.55
    oofs = [(name, {}, sweep_aiq(oof, scores, costs, ["small", "large"]), oof)
            for name, oof in (("lr", knows(first)), ("knn", knows(second)),
                              ("tfidf", np.c_[noise[:, 1], np.full(n, 0.9)]))]
    assert oofs[0][2] > oofs[1][2] > oofs[2][2]
    members = ensemble_members(oofs, adequacy, scores, costs, ["small", "large"], "aiq")
    assert [m["name"] for m in members] == ["lr", "knn"]
    assert ensemble_members(oofs[:1], adequacy, scores, costs, ["small", "large"], "aiq") == []  # nothing to add


def test_the_cluster_family_scores_a_prompt_by_its_clusters_smoothed_rates():
    """Two tight groups of prompts: the small model answers 8 of 10 in the first and 1 of 10 in the second.
    Hand-computed, each cluster's rate is (hits + 10 * overall) / (10 + 10) with overall 9/20: 0.625 and 0.275;
    with nearest=2 every prompt gets their mean, 0.45."""
    from router.families import TrainingData

    rng = np.random.default_rng(0)
    directions = np.eye(8)[:2]
    units = np.repeat(directions, 10, axis=0) + rng.normal(scale=0.01, size=(20, 8))
    units /= np.linalg.norm(units, axis=1, keepdims=True)
    x = np.c_[units, np.zeros(20)]  # the last column is the length feature, which clusters ignore
    small = np.r_[np.ones(8), np.zeros(2), np.ones(1), np.zeros(9)]
    data = TrainingData(x=x, texts=[""] * 20, adequate=np.c_[small, np.ones(20)], domains=np.full(20, "all"),
                        models=["small", "large"])
    one = make_family("cluster", {"clusters": 2, "nearest": 1}).fit(data)
    probe = np.c_[directions, np.zeros(2)]
    assert one.predict(probe, ["", ""])[:, 0] == pytest.approx([0.625, 0.275], abs=1e-6)
    assert one.predict(probe, ["", ""])[:, 1] == pytest.approx([1.0, 1.0])
    both = make_family("cluster", {"clusters": 2, "nearest": 2}).fit(data)
    assert both.predict(probe, ["", ""])[:, 0] == pytest.approx([0.45, 0.45], abs=1e-6)
    few = make_family("cluster", {"clusters": 64, "nearest": 3}).fit(data)  # more clusters than prompts
    assert few.centroids.shape[0] == 20 and few.predict(probe, ["", ""]).shape == (2, 2)


def test_the_length_family_learns_the_costliest_answers_length_and_serves_from_the_prompt_alone():
    """Prompts whose first embedding direction is strong get long answers and defeat the small model. Trained on
    the answers' lengths (never shown at serving), the family gives a long-answer probe a lower P(small adequate)
    than a short one. Without lengths it has no opinion: every prompt gets the small model's base rate."""
    import pandas as pd

    from router.families import TrainingData
    from router.offline.outcomes import OutcomeTable
    from router.offline.select import answer_lengths_of

    rng = np.random.default_rng(1)
    n = 200
    strength = rng.random(n)
    units = np.c_[strength, rng.normal(scale=0.3, size=(n, 7))]
    units /= np.linalg.norm(units, axis=1, keepdims=True)
    x = np.c_[units, np.zeros(n)]
    small = (strength < 0.3).astype(float)                      # about 30% of the prompts, the short-answer ones
    lengths = np.log1p(20 + 400 * strength)
    data = TrainingData(x, ["Q"] * n, np.c_[small, np.ones(n)], np.full(n, "all"), ["small", "large"], lengths)
    family = make_family("length", {"alpha": 1.0}).fit(data)
    probe = x[[int(np.argmin(strength)), int(np.argmax(strength))]]
    short, long = family.predict(probe, ["Q", "Q"])[:, 0]
    assert short > 0.6 and long < 0.1
    blind = make_family("length", {"alpha": 1.0}).fit(TrainingData(x, ["Q"] * n, data.adequate, data.domains,
                                                                   data.models))
    assert blind.predict(probe, ["Q", "Q"])[:, 0] == pytest.approx([small.mean()] * 2, abs=1e-3)
    # the target comes from the costliest model's output_tokens column; a missing or zero count is unknown
    frame = pd.DataFrame({"prompt": ["a", "b", "c"], "cheap": [1.0, 0.0, 1.0], "cheap|total_cost": [0.1] * 3,
                          "dear": [1.0] * 3, "dear|total_cost": [1.0] * 3, "dear|output_tokens": [9, 0, None]})
    assert answer_lengths_of(OutcomeTable(frame, ["cheap", "dear"]))[0] == pytest.approx(np.log(10))
    assert np.isnan(answer_lengths_of(OutcomeTable(frame, ["cheap", "dear"]))[1:]).all()
    assert answer_lengths_of(OutcomeTable(frame.drop(columns="dear|output_tokens"), ["cheap", "dear"])) is None


def test_the_gain_blend_ranks_held_out_prompts_by_the_blended_advantage(table_and_features):
    """P(large) - P(small) is a rising line of the members' mean advantage quantile (clipping aside), so the report's
    sweep ranks prompts as that quantile does; on held-out prompts its top third gains more from the large model
    than its bottom third."""
    from router.families.blend import _mean_quantile

    table, features, _ = table_and_features
    train, held = np.arange(0, len(table), 2), np.arange(1, len(table), 2)
    clf = fit_table(table, features, train, make_family("gain-blend", FAMILIES["gain-blend"].grid[1]))
    texts = [table.prompts[i] for i in held]
    probs = clf.predict_proba(features[held], texts)
    members = np.stack([m.predict(features[held], texts) for m in clf.family.members])
    blended = _mean_quantile(clf.family.gain_references, members[:, :, -1:] - members[:, :, :-1])
    assert (clf.family.gain_fit[:, 0] > 0).all()  # a higher quantile means a larger expected advantage
    for j in range(len(table.models) - 1):
        free = (probs[:, j] > 0) & (probs[:, j] < 1)
        order = np.argsort(blended[free, j], kind="stable")
        assert (np.diff((probs[free, -1] - probs[free, j])[order]) >= -1e-9).all()
    scores = table.scores()[held]
    realised, advantage = scores[:, -1] - scores[:, :-1].max(axis=1), probs[:, -1] - probs[:, :-1].max(axis=1)
    third = len(held) // 3
    order = np.argsort(advantage)
    assert realised[order[-third:]].mean() > realised[order[:third]].mean() + 0.1


def test_auto_leaves_out_a_family_that_lost_unless_asked_for_it():
    from router.offline.select import candidates

    auto = {name for name, _ in candidates("auto")}
    assert "cluster" not in auto and {"lr", "knn", "domain", "blend"} <= auto
    assert {name for name, _ in candidates("auto", also=["cluster"])} == auto | {"cluster"}
    assert [name for name, _ in candidates("cluster")] == ["cluster"] * len(FAMILIES["cluster"].grid)
    with pytest.raises(ValueError, match="unknown router family 'clusterz'"):
        candidates("auto", also=["clusterz"])
    four = {"members": [{"name": n, "params": p} for n, p in
                        (("knn", {"k": 64}), ("domain", {"smoothing": 10.0}), ("lr", {"c": 1.0}), ("hand", {"c": 1.0}))]}
    assert ("gain-blend", four) not in candidates("auto")  # measured, and left out of auto
    assert candidates("auto", measured=True) == candidates("auto") + [("gain-blend", four)]


def test_the_four_member_gain_blend_kept_out_of_auto_scores_the_same_after_a_json_round_trip(table_and_features,
                                                                                             tmp_path):
    table, features, _ = table_and_features
    rows, held = np.arange(0, len(table), 2), np.arange(1, len(table), 2)
    clf = fit_table(table, features, rows, make_family("gain-blend", FAMILIES["gain-blend"].measured_grid[0]))
    clf.save(tmp_path / "router.json")
    loaded = AdequacyClassifier.load(tmp_path / "router.json")
    texts = [table.prompts[i] for i in held]
    assert np.allclose(clf.predict_proba(features[held], texts), loaded.predict_proba(features[held], texts), atol=1e-5)
    assert clf.family.label() == "gain-blend(knn+domain+lr+hand)"


def test_the_family_help_of_train_and_report_names_every_registered_family():
    from router.cli import parser

    commands = parser()._subparsers._group_actions[0].choices
    for command in ("train", "report"):
        family = next(a for a in commands[command]._actions if a.dest == "family")
        for name, cls in FAMILIES.items():
            assert (name + ("" if cls.in_auto else " (not in auto)")) in family.help
    assert "cluster (not in auto)" in family.help and "gain-blend (not" not in family.help


def test_a_forced_family_is_the_only_candidate(table_and_features):
    table, features, _ = table_and_features
    selection = select_family(table, features, np.arange(len(table)), family="tfidf", folds=3)
    assert selection.family == "tfidf" and {r["family"] for r in selection.table} == {"tfidf"}
    assert len(selection.table) == len(FAMILIES["tfidf"].grid)


def test_repeated_cross_validation_ranks_by_the_mean_of_its_fold_draws(table_and_features):
    table, features, _ = table_and_features
    rows = np.arange(len(table))
    single = [select_family(table, features, rows, family="hand", folds=3, seed=s) for s in (4, 5, 6)]
    repeated = select_family(table, features, rows, family="hand", folds=3, seed=4, repeats=3)
    for i, row in enumerate(repeated.table):
        draws = [s.table[i]["area"] for s in single]
        assert len(set(draws)) > 1  # the fold draw moves the area, which is why the mean is taken
        assert row["area"] == pytest.approx(np.mean(draws), abs=2e-6)
    assert "mean of 3 fold draws" in repeated.criterion
    with pytest.raises(ValueError, match="repeats must be at least 1"):
        select_family(table, features, rows, family="hand", folds=3, repeats=0)


def test_offline_and_online_decisions_agree_row_by_row(table_and_features, tmp_path):
    """The report's and calibration's decisions come from router.decision.decide, under a policy whose cost
    overrides reverse the catalogue's order of the small models."""
    from router.offline.pipeline import PolicyView
    from router.policy import DEFAULT_POLICY_PATH, load_policy
    from router.service import RoutingService

    table, _, _ = table_and_features
    policy = load_policy(DEFAULT_POLICY_PATH).model_dump(mode="json")
    policy["version"] = "overrides"
    policy["models"]["smollm2-135m"].update(cost_per_1k_input=0.01, threshold=0.55)  # now costlier than the coder
    policy["models"]["qwen2.5-coder-0.5b"].update(tasks=["code", "chat"], threshold=0.75)
    path = tmp_path / "policy.yaml"
    path.write_text(json.dumps(policy))
    service = RoutingService()
    service.apply_policy(policy)
    clf = service.live.classifier
    rows = [service.features(text) for text in table.prompts]  # the serving path's own features
    features, tokens = np.vstack([f for f, _ in rows]), np.array([t for _, t in rows])
    online = [service.route(text, int(n)).model for text, n in zip(table.prompts, tokens)]
    view = PolicyView(str(path), table.models, clf, features, tokens)
    offline = [table.models[j] for j in view.choose(clf.predict_proba(features, table.prompts))]
    assert offline == online
    assert len(set(online)) == 3  # every model is chosen somewhere, so the order matters
    assert "qwen2.5-coder-0.5b" in online and "smollm2-135m" in online


def test_offline_decisions_apply_the_gadget_guard_as_serving_does(table_and_features, tmp_path):
    """With the policy's guard on, the what-if passes the guard's flags to the serving decision: a guard whose
    threshold flags about half the prompts (action `cheapest`) changes decisions, and offline still equals online."""
    from router.guard import GadgetGuard
    from router.offline.pipeline import PolicyView
    from router.policy import DEFAULT_POLICY_PATH, load_policy
    from router.service import RoutingService

    table, _, _ = table_and_features
    base = load_policy(DEFAULT_POLICY_PATH)
    service = RoutingService()
    service.apply_policy(base.model_dump(mode="json"))
    rows = [service.features(text) for text in table.prompts]
    features, tokens = np.vstack([f for f, _ in rows]), np.array([t for _, t in rows])
    guard = GadgetGuard.load(base.guard.artifact_path())
    guard.threshold = float(np.median(guard.probability(features[:, :-1])))
    guard.save(tmp_path / "guard.json")
    policy = base.model_dump(mode="json")
    policy["version"] = "guarded"
    policy["guard"] = {"enabled": True, "action": "cheapest", "artifact": str(tmp_path / "guard.json")}
    path = tmp_path / "policy.yaml"
    path.write_text(json.dumps(policy))
    unguarded = [service.route(text, int(n)).model for text, n in zip(table.prompts, tokens)]
    service.apply_policy(policy)
    online = [service.route(text, int(n)).model for text, n in zip(table.prompts, tokens)]
    clf = service.live.classifier
    view = PolicyView(str(path), table.models, clf, features, tokens)
    offline = [table.models[j] for j in view.choose(clf.predict_proba(features, table.prompts))]
    assert 0.3 < view.guard_share() < 0.7
    assert offline == online
    assert sum(a != b for a, b in zip(online, unguarded)) > 20  # the flags change decisions, so agreement means something


def test_in_domain_prompts_pass_and_an_unseen_domain_goes_to_the_fallback(encoder):
    from router.decision import OUT_OF_DISTRIBUTION
    from router.policy import DEFAULT_POLICY_PATH, load_policy
    from router.service import RoutingService

    service = RoutingService(encoder=encoder)
    policy = load_policy(DEFAULT_POLICY_PATH).model_dump(mode="json")
    service.apply_policy(policy)
    seen = ["Hi! How are you today?", "Write a Python function that returns the n-th Fibonacci number.",
            "Thanks a lot!", "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips "
            "in May. How many clips did Natalia sell altogether in April and May?"]
    unseen = ["What are the tax implications of a Roth IRA conversion?",
              "Explain the doctrine of promissory estoppel in contract law.",
              # (the 748-prompt router's science trivia sits near clinical vignettes: "Patient presents with acute
              # dyspnea, ..." lies at 0.677 against a threshold of 0.693, so a dosage question stands for medicine)
              "What dosage of amoxicillin is appropriate for a child with otitis media?"]
    for text in seen:
        decision = service.route(text, encoder.count_tokens(text))
        assert decision.rule != OUT_OF_DISTRIBUTION and decision.ood_distance < decision.ood_threshold, text
    for text in unseen:
        decision = service.route(text, encoder.count_tokens(text))
        assert (decision.rule, decision.model) == (OUT_OF_DISTRIBUTION, policy["fallback"]), text
        assert decision.ood_distance > decision.ood_threshold and "unlike the router's training prompts" in decision.reason
    service.apply_policy({**policy, "version": "ood-off", "ood": {"enabled": False}})
    assert service.route(unseen[0], 12).rule != OUT_OF_DISTRIBUTION


def test_the_policys_ood_quantile_tightens_the_threshold_live(encoder):
    """`ood.quantile` recomputes the threshold from the artifact's own training prompts: at 0.97 it is the
    artifact's, and a stricter one goes live with a policy edit, sending a prompt between the two to the fallback."""
    from router.decision import OUT_OF_DISTRIBUTION
    from router.policy import DEFAULT_POLICY_PATH, load_policy
    from router.service import RoutingService

    service = RoutingService(encoder=encoder)
    policy = load_policy(DEFAULT_POLICY_PATH).model_dump(mode="json")
    service.apply_policy(policy)
    clf = service.live.classifier
    assert clf.ood_threshold_at(None) == clf.ood_threshold
    assert clf.ood_threshold_at(0.97) == pytest.approx(clf.ood_threshold, abs=1e-6)
    strict = clf.ood_threshold_at(0.5)
    assert 0 < strict < clf.ood_threshold
    text = "Write a haiku about autumn leaves falling on a quiet pond."
    before = service.route(text, encoder.count_tokens(text))
    assert strict < before.ood_distance <= clf.ood_threshold and before.rule != OUT_OF_DISTRIBUTION
    service.apply_policy({**policy, "version": "strict-ood", "ood": {"enabled": True, "quantile": 0.5}})
    after = service.route(text, encoder.count_tokens(text))
    assert (after.rule, after.model, after.ood_threshold) == (OUT_OF_DISTRIBUTION, policy["fallback"], strict)


def test_an_unknown_family_and_an_older_artifact_get_clear_errors(tmp_path, capsys):
    from router.cli import main

    assert main(["train", "--table", TABLE, "--out", str(tmp_path / "r.json"), "--family", "transformer"]) == 2
    assert "unknown router family 'transformer'" in capsys.readouterr().err
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"format": "ensemble-router/adequacy-lr/v1", "models": ["a"], "coef": [[0.0]]}))
    with pytest.raises(ValueError, match="older format .* Retrain it: router train"):
        AdequacyClassifier.load(old)
    with pytest.raises(SystemExit) as exited:  # argparse refuses it with usage and exit code 2
        main(["train", "--table", TABLE, "--out", str(tmp_path / "r.json"), "--ood-quantile", "1.5"])
    assert exited.value.code == 2 and "must be in (0, 1]" in capsys.readouterr().err


def test_the_embedding_cache_never_hands_one_encoders_vectors_to_another(encoder, tmp_path, monkeypatch):
    from router.offline.train import embed

    monkeypatch.setenv("ROUTER_EMBEDDING_CACHE", str(tmp_path))
    texts = ["what is the capital of France?", "write a python function that sorts a list"]
    first, _ = embed(texts, encoder)
    assert np.allclose(embed(texts, encoder)[0], first)  # the same encoder reads its cache
    # stands in for another encoder model (a new catalogue entry): other files, other vectors
    other = copy.copy(encoder)
    other.fingerprint = encoder.fingerprint + "-other"
    other.encode = lambda chunk: np.zeros((len(chunk), encoder.dimensions), np.float32)
    assert not embed(texts, other)[0].any()


def test_the_selection_criterion_is_the_area_under_the_sweeps_own_points_not_its_hull():
    from router.offline import metrics as M
    from router.offline.select import curve_area

    # a dip at cost 2: the hull lifts it onto the chord from (0, 0) to (3, 3), a threshold router cannot
    dipped = np.array([[0, 0], [1, 1], [2, 0.5], [3, 3]], dtype=float)
    assert curve_area(dipped) == pytest.approx((0.5 + 0.75 + 1.75) / 3)  # trapezoids over the points, / max cost
    assert M.aiq([dipped])[0] == pytest.approx((0.5 + 1.5 + 2.5) / 3)
    assert curve_area(dipped[::-1]) == curve_area(dipped)  # the points' order does not matter
