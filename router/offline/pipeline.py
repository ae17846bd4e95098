"""The `router train` and `router report` commands: outcome table → features → classifier → metrics."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from models.catalogue import load_catalogue
from router.classifier import OOD_QUANTILE, file_sha256
from router.features import check_encoder_name
from router.families import make_family
from router.offline.outcomes import OutcomeTable, load_outcomes
from router.offline.select import candidates, format_table, select_family
from router.offline.train import fit_table, split_by_prompt, table_features


def _parse_costs(items: list[str] | None) -> dict[str, float] | None:
    costs = {}
    for item in items or []:
        name, _, value = item.rpartition("=")
        try:
            costs[name] = float(value)
        except ValueError:
            raise ValueError(f"--model-costs: {item!r} is not NAME=COST") from None
        if not name:
            raise ValueError(f"--model-costs: {item!r} is not NAME=COST")
    return costs or None


def _load_table(spec: str, known_models: list[str] | None = None,
                model_costs: dict[str, float] | None = None) -> tuple[OutcomeTable, str]:
    if spec.startswith("routellm:"):
        from router.offline.datasets import load_routellm

        name = spec.split(":", 1)[1]
        return load_routellm(name), f"routellm-{name}"
    return load_outcomes(spec, known_models, model_costs), Path(spec).stem


def _encoder(name: str | None = None):
    """The catalogue's encoder, or (by name) the static table distilled from it: what a router was trained on."""
    from router.features import Encoder, Encoders

    return Encoders(Encoder(threads=2)).get(name)


def _fit_selected(table: OutcomeTable, features: np.ndarray, rows: np.ndarray, family: str, folds: int, seed: int,
                  metadata: dict | None = None, ood_quantile: float = OOD_QUANTILE, select=select_family):
    """Cross-validate on `rows` alone, then fit the chosen family on all of them."""
    selection = select(table, features, rows, family, folds, seed)
    clf = fit_table(table, features, rows, make_family(selection.family, selection.params),
                    {**(metadata or {}), "selection": selection.as_dict()}, ood_quantile)
    return clf, selection


def train_command(args) -> dict:
    candidates(args.family)  # an unknown family or encoder is refused before the table is read and embedded
    catalogue = load_catalogue()
    check_encoder_name(args.encoder, catalogue.encoder.name)
    hardening = getattr(args, "prefix_copies", 0) or getattr(args, "adversarial_rounds", 0)
    attacked = None
    if hardening:  # the policy whose thresholds the adversarial search attacks, refused before any work
        from router.policy import load_policy

        attacked = load_policy(args.policy)
    table, _ = _load_table(args.table, catalogue.names())
    if attacked is not None:
        from router.offline.decisions import check_models

        check_models(table.models, attacked, args.policy)
    encoder = _encoder(args.encoder)
    features, _ = table_features(table, encoder)
    store = None
    if getattr(args, "from_store", None) is not None:  # rated answers from the decision store join the table
        from router.offline.from_store import merge_store

        store = merge_store(args, table, features, catalogue, encoder)
        table, features = store.table, store.features
    if args.test_fraction > 0:
        train_rows, test_rows = split_by_prompt(table, args.test_fraction, args.seed)
    else:
        train_rows, test_rows = np.arange(len(table)), np.array([], dtype=int)
    metadata = {"trained_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "training_data": {"path": args.table, "sha256": file_sha256(args.table), "rows": len(table),
                                  "train_rows": int(len(train_rows)), "seed": args.seed},
                "features": {"encoder": encoder.name, "max_input_tokens": catalogue.encoder.max_input_tokens,
                             "extra": ["log1p(input_tokens)/6"]}}
    if store is not None:
        metadata["rows"] = store.provenance
    clf, selection = _fit_selected(table, features, train_rows, args.family, args.folds, args.seed, metadata,
                                   args.ood_quantile, store.select if store is not None else select_family)
    print(format_table(selection), file=sys.stderr)
    oof = selection.oof
    if hardening:
        clf, oof = _harden(args, attacked, table, features, train_rows, selection, catalogue, encoder, clf.metadata)
    from router.offline.metrics import routing_accuracy
    from router.offline.report import choose

    if len(test_rows):
        texts = table.prompts
        probs = clf.predict_proba(features[test_rows], [texts[i] for i in test_rows])
        scored, method = table.subset(test_rows), "held-out split"
    else:  # trained on every row: the chosen family's out-of-fold predictions estimate held-out quality
        probs, scored, method = oof, table, f"{args.folds}-fold out-of-fold"
    acc = routing_accuracy(choose(probs, np.full(len(table.models) - 1, 0.5)), scored.scores(), scored.costs())
    clf.metadata["held_out"] = {"method": method, "rows": len(scored), "threshold": 0.5, **acc.__dict__}
    clf.save(args.out)
    return {"artifact": args.out, "family": selection.family, "params": selection.params,
            **{k: v for k, v in clf.metadata.items() if k != "selection"}}


def _harden(args, policy, table, features, rows, selection, catalogue, encoder, metadata):
    """Refit the chosen family on its rows and their adversarial copies (router/offline/hardening.py); the
    out-of-fold predictions of the hardened family, each fold trained on its own rows' copies."""
    from router.offline.hardening import fit_hardened
    from router.offline.select import out_of_fold

    metadata = {k: v for k, v in metadata.items() if k != "ood"}
    clf, aug = fit_hardened(table, features, rows, selection.family, selection.params, policy, catalogue, encoder,
                            args.prefix_copies, args.adversarial_rounds, args.seed,
                            Path(f"{args.out}.hardening.json"), metadata, args.ood_quantile)
    oof = out_of_fold(table, features, rows, selection.family, selection.params, args.folds, args.seed, aug)
    return clf, oof


def policy_under(path: str):
    """The policy of a file (or Serve config), or of `FILE#NAME`: that policy under its profile NAME."""
    from router.policy import load_policy

    file, _, profile = path.partition("#")
    policy = load_policy(file)
    if profile and profile not in policy.profiles:
        raise ValueError(f"{file}: the policy has no profile {profile!r}; its profiles are {list(policy.profiles)}")
    return policy.with_profile(profile or None)


class PolicyView:
    """A policy and what its decisions need about each row (the router's task, tokens, OOD distance)."""

    def __init__(self, path: str, models: list[str], clf, features: np.ndarray, tokens: np.ndarray):
        """`path`: a policy file (or Serve config), or `FILE#NAME` for that policy under its profile NAME."""
        from router.offline.decisions import check_models

        self.path, self.policy, self.catalogue = path, policy_under(path), load_catalogue()
        check_models(models, self.policy, path)
        self.models, self.tokens = models, tokens
        self.tasks = [clf.tasks[i] for i in clf.predict_tasks(features).argmax(axis=1)]
        self.distances, self.threshold = clf.ood_distances(features), clf.ood_threshold_at(self.policy.ood.quantile)
        self.suspected = None  # the gadget guard's flags, when the policy turns it on (as the serving path does)
        if self.policy.guard.enabled:
            from router.guard import GadgetGuard

            guard = GadgetGuard.load(self.policy.guard.artifact_path(), dims=self.catalogue.encoder.dimensions)
            self.suspected = guard.flags(features[:, :-1])

    @property
    def thresholds(self) -> np.ndarray:
        return np.array([self.policy.models[m].threshold for m in self.models[:-1]])

    def choose(self, probs: np.ndarray, thresholds: dict[str, float] | None = None, ood: bool = True,
               threshold_on: str | None = None) -> np.ndarray:
        from router.offline.decisions import decide_rows

        policy = self.policy.with_thresholds(thresholds) if thresholds else self.policy
        if threshold_on is not None:
            policy = policy.model_copy(update={"threshold_on": threshold_on})
        return decide_rows(self.models, probs, self.tasks, self.tokens, policy, self.catalogue,
                           self.distances if ood else None, self.threshold, self.suspected)

    def guard_share(self) -> float | None:
        return None if self.suspected is None else float(self.suspected.mean())

    def ood_share(self) -> float | None:
        if self.distances is None or not self.policy.ood.enabled:
            return None
        return float((self.distances > self.threshold).mean())


def report_command(args) -> dict[str, Path]:
    from router.offline.report import evaluate, write_report

    candidates(args.family)  # an unknown family or encoder is refused before the table is read and embedded
    catalogue = load_catalogue()
    check_encoder_name(args.encoder, catalogue.encoder.name)
    hardening = getattr(args, "prefix_copies", 0) or getattr(args, "adversarial_rounds", 0)
    if hardening and not args.policy:
        raise ValueError("--prefix-copies and --adversarial-rounds need --policy: the search attacks its thresholds")
    attacked = policy_under(args.policy[0]) if hardening else None
    table, name = _load_table(args.data, None, _parse_costs(args.model_costs))
    if args.limit:
        rows = np.sort(np.random.default_rng(args.seed).permutation(len(table))[: args.limit])
        table = table.subset(rows)
    encoder = _encoder(args.encoder)
    features, tokens = table_features(table, encoder)
    train_rows, test_rows = split_by_prompt(table, args.test_fraction, args.seed, args.max_train)
    if len(train_rows) == 0 or len(test_rows) == 0:
        raise ValueError(f"the split left {len(train_rows)} training and {len(test_rows)} test rows; "
                         f"use more data or another --test-fraction")
    clf, selection = _fit_selected(table, features, train_rows, args.family, args.folds, args.seed)
    if attacked is not None:  # the report's router hardened as `router train` would harden it, on the training split
        from router.offline.decisions import check_models
        from router.offline.hardening import fit_hardened

        check_models(table.models, attacked, args.policy[0])
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        clf, _ = fit_hardened(table, features, train_rows, selection.family, selection.params, attacked, catalogue,
                              encoder, args.prefix_copies, args.adversarial_rounds, args.seed,
                              out / f"{name}.hardening.json", clf.metadata)
    test = table.subset(test_rows)
    probs = clf.predict_proba(features[test_rows], test.prompts)
    views = [PolicyView(path, test.models, clf, features[test_rows], tokens[test_rows]) for path in args.policy or []]
    thresholds = views[0].thresholds if views else np.full(len(table.models) - 1, args.threshold)
    # the router's own cost: the encoder (22M parameters) priced like the catalogue's models, per input token
    router_cost = float(tokens[test_rows].sum()) / 1000 * args.router_cost_per_1k
    report = evaluate(test, probs, thresholds, seed=args.seed, router_cost=router_cost,
                      chosen=views[0].choose(probs) if views else None)
    if views:  # the what-if: every policy's decisions on the same held-out prompts
        from router.offline.metrics import savings

        report["what_if"] = []
        for view in views:
            chosen = view.choose(probs)
            report["what_if"].append({
                "policy": view.path, "version": view.policy.version, "ood_share": view.ood_share(),
                "guard_share": view.guard_share(), "guard_action": view.policy.guard.action,
                **savings(chosen, test.scores(), test.costs(), len(test.models) - 1),
                "shares": {m: float((chosen == j).mean()) for j, m in enumerate(test.models)}})
    distances = clf.ood_distances(features[test_rows])
    report["ood"] = {"threshold": clf.ood_threshold,
                     "share_flagged": None if distances is None else float((distances > clf.ood_threshold).mean())}
    report["selection"] = selection.as_dict()
    report["robustness"] = _robustness(args, encoder, test, clf, probs, thresholds, views)
    if getattr(args, "gadgets", False):
        report["robustness"]["gadgets"] = _gadget_flips(args, encoder, table.subset(train_rows).prompts,
                                                        test.prompts, clf, views)
    report["title"] = f"Routing report: {name}"
    report["data"] = {"source": args.data, "rows": len(table), "train_rows": int(len(train_rows)),
                      "test_rows": int(len(test_rows)), "seed": args.seed, "split": "by unique prompt text",
                      "encoder": encoder.name, "policies": args.policy or [],
                      "family": clf.family.label()}
    if attacked is not None:
        record = clf.metadata["hardening"]
        report["data"]["hardening"] = {k: record[k] for k in ("prefix_copies", "adversarial_rounds", "training_rows")}
    return write_report(report, Path(args.out), stem=name)


def calibrate_command(args) -> dict:
    from router.classifier import AdequacyClassifier
    from router.offline.calibrate import ranking, search, threshold_grid, write_profile, write_setting, write_thresholds
    from router.offline.select import out_of_fold
    from router.policy import load_policy

    catalogue = load_catalogue()
    table, _ = _load_table(args.table, catalogue.names())
    clf = AdequacyClassifier.load(load_policy(args.policy).classifier_path())
    features, tokens = table_features(table, _encoder(clf.encoder_name))
    rows = np.arange(len(table))
    augmented = None
    if clf.metadata.get("hardening"):  # each fold trains on its own rows' copies, as `router train` did
        from router.offline.hardening import rebuild

        augmented = rebuild(table, features, rows, _encoder(clf.encoder_name), clf.metadata["hardening"])
    probs = out_of_fold(table, features, rows, clf.family.name, clf.family.params, args.folds, args.seed, augmented)
    view = PolicyView(args.policy, table.models, clf, features, tokens)
    own = view.policy.threshold_on
    rules = {None: [own], "auto": ["adequacy", "advantage"]}.get(args.threshold_on, [args.threshold_on])
    if args.profile and rules != [own]:
        raise ValueError(f"--profile writes thresholds only, read under the policy's threshold_on: {own}; "
                         f"calibrate the policy itself to change the rule")
    # out-of-fold rows are the training prompts themselves, so no OOD flag can be judged here
    results = {rule: search(probs, table.scores(), table.costs(), table.models, None, keep_quality=args.keep_quality,
                            max_large_share=args.max_large_share, grid=threshold_grid(args.step),
                            chooser=lambda t, r=rule: view.choose(probs, t, ood=False, threshold_on=r))
               for rule in rules}
    rule = max(results, key=lambda r: (*ranking(results[r], args.keep_quality is not None), r == own))
    result = results[rule]
    if not result.met_target:
        raise ValueError(f"no thresholds meet the target on {args.table}; the closest: {result}")
    target = f"quality>={args.keep_quality:g}" if args.keep_quality is not None else f"large<={args.max_large_share:g}"
    version = None
    if args.profile:  # a profile leaves the policy's own thresholds, and its version, as they are
        write_profile(Path(args.policy), args.profile, result.thresholds)
    else:
        version = f"calibrated-{time.strftime('%Y%m%d-%H%M%S')}-{target}"
        write_thresholds(Path(args.policy), result.thresholds, version)
        if rule != own:
            write_setting(Path(args.policy), "threshold_on", rule)
    load_policy(args.policy)  # the edited file must still be a valid policy
    return {"policy": args.policy, "version": version, "profile": args.profile, "target": target,
            "family": clf.family.label(), "threshold_on": rule,
            "rules_tried": {r: {"cost_saved": 1 - c.cost / c.large_cost, "quality_kept": c.quality / c.large_quality,
                                "met_target": c.met_target} for r, c in results.items()}, **result.__dict__,
            "cost_saved": 1 - result.cost / result.large_cost, "quality_kept": result.quality / result.large_quality}


def _robustness(args, encoder, test: OutcomeTable, clf, probs: np.ndarray, thresholds, views) -> dict:
    """Decision flips under small edits, on a seeded sample of held-out prompts."""
    from router.classifier import feature_matrix
    from router.offline.report import choose
    from router.offline.robustness import flip_rates, perturbations
    from router.offline.train import embed

    rng = np.random.default_rng(args.seed)
    sample = np.sort(rng.permutation(len(test))[: args.robustness_sample])
    texts = test.prompts
    edits = perturbations([texts[i] for i in sample], seed=args.seed)
    if not edits:
        return {"edits": 0}
    edited_texts = [text for _, _, text in edits]
    vectors, tokens = embed(edited_texts, encoder, desc="embed perturbed")
    feats = feature_matrix(vectors, tokens)
    edited_probs = clf.predict_proba(feats, edited_texts)
    rows = sample[[i for i, _, _ in edits]]
    if views:
        before = views[0].choose(probs)[rows]
        edited = PolicyView(views[0].path, test.models, clf, feats, tokens)
        after = edited.choose(edited_probs)
    else:
        before, after = choose(probs[rows], thresholds), choose(edited_probs, thresholds)
    return {"sample": int(len(sample)), **flip_rates(before.tolist(), after.tolist(), [k for _, k, _ in edits])}


def _gadget_flips(args, encoder, train_prompts: list[str], test_prompts: list[str], clf, views) -> list[dict]:
    """Routing gadgets (router/offline/attack.py): a white-box search against this report's router on training
    prompts, in each direction, and the share of held-out decisions the gadget flips."""
    if not views:
        raise ValueError("--gadgets needs --policy: the search steers the decisions a policy makes")
    from router.offline.attack import DOWN, UP, WhiteBoxView, find_gadget, flip_rates, token_vocabulary

    view = WhiteBoxView(clf, views[0].policy, views[0].catalogue, encoder)
    rng = np.random.default_rng(args.seed)
    unique_train, unique_test = list(dict.fromkeys(train_prompts)), list(dict.fromkeys(test_prompts))
    search = [unique_train[i] for i in rng.permutation(len(unique_train))[:16]]
    test = [unique_test[i] for i in rng.permutation(len(unique_test))[:args.robustness_sample]]
    results = []
    for direction in (UP, DOWN):
        gadget = find_gadget(view, search, direction, token_vocabulary(encoder), seed=args.seed)
        results.append({"direction": direction, "gadget": gadget.text, **flip_rates(view, test, gadget.text)})
    return results
