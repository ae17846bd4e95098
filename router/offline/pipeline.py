"""The `router train` and `router report` commands: outcome table → features → classifier → metrics."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from models.catalogue import load_catalogue
from router.classifier import file_sha256
from router.offline.outcomes import OutcomeTable, load_outcomes
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


def _encoder():
    from router.features import Encoder

    return Encoder(threads=2)


def train_command(args) -> dict:
    catalogue = load_catalogue()
    table, _ = _load_table(args.table, catalogue.names())
    features, _ = table_features(table, _encoder())
    if args.test_fraction > 0:
        train_rows, test_rows = split_by_prompt(table, args.test_fraction, args.seed)
    else:
        train_rows, test_rows = np.arange(len(table)), np.array([], dtype=int)
    metadata = {"trained_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "training_data": {"path": args.table, "sha256": file_sha256(args.table), "rows": len(table),
                                  "train_rows": int(len(train_rows)), "seed": args.seed},
                "features": {"encoder": catalogue.encoder.name, "max_input_tokens": catalogue.encoder.max_input_tokens,
                             "extra": ["log1p(input_tokens)/6"]},
                "hyperparameters": {"C": args.c}}
    clf = fit_table(table, features, train_rows, c=args.c, metadata=metadata)
    from router.offline.metrics import routing_accuracy
    from router.offline.report import choose

    if len(test_rows):
        probs, scored, method = clf.predict_proba(features[test_rows]), table.subset(test_rows), "held-out split"
    else:  # trained on every row: estimate held-out quality by 5-fold cross-validation instead
        from router.offline.calibrate import out_of_fold

        probs, scored, method = out_of_fold(table, features, 5, args.seed, args.c), table, "5-fold out-of-fold"
    acc = routing_accuracy(choose(probs, np.full(len(table.models) - 1, 0.5)), scored.scores(), scored.costs())
    clf.metadata["held_out"] = {"method": method, "rows": len(scored), "threshold": 0.5, **acc.__dict__}
    clf.save(args.out)
    return {"artifact": args.out, **clf.metadata}


def _policy_view(policy_file: str, table: OutcomeTable, clf, features: np.ndarray, tokens: np.ndarray):
    from router.decision import is_eligible
    from router.policy import load_policy

    catalogue = load_catalogue()
    policy = load_policy(policy_file)
    missing = [m for m in table.models if m not in policy.models]
    if missing:
        raise ValueError(f"{policy_file}: the policy has no entry for table model(s) {missing}")
    tasks = [clf.tasks[i] for i in clf.predict_tasks(features).argmax(axis=1)]
    eligible = np.array([[is_eligible(m, task, int(n), policy, catalogue) if m != policy.fallback else True
                          for m in table.models] for task, n in zip(tasks, tokens)])
    return np.array([policy.models[m].threshold for m in table.models[:-1]]), eligible


def report_command(args) -> dict[str, Path]:
    from router.offline.report import evaluate, write_report

    catalogue = load_catalogue()
    table, name = _load_table(args.data, None, _parse_costs(args.model_costs))
    if args.limit:
        rows = np.sort(np.random.default_rng(args.seed).permutation(len(table))[: args.limit])
        table = table.subset(rows)
    features, tokens = table_features(table, _encoder())
    train_rows, test_rows = split_by_prompt(table, args.test_fraction, args.seed, args.max_train)
    if len(train_rows) == 0 or len(test_rows) == 0:
        raise ValueError(f"the split left {len(train_rows)} training and {len(test_rows)} test rows; "
                         f"use more data or another --test-fraction")
    clf = fit_table(table, features, train_rows, c=args.c)
    test = table.subset(test_rows)
    probs = clf.predict_proba(features[test_rows])
    policies = args.policy or []
    views = [_policy_view(path, test, clf, features[test_rows], tokens[test_rows]) for path in policies]
    thresholds, eligible = views[0] if views else (np.full(len(table.models) - 1, args.threshold), None)
    # the router's own cost: the encoder (22M parameters) priced like the catalogue's models, per input token
    router_cost = float(tokens[test_rows].sum()) / 1000 * args.router_cost_per_1k
    report = evaluate(test, probs, thresholds, eligible, seed=args.seed, router_cost=router_cost)
    if policies:  # the what-if: every policy's thresholds and eligibility on the same held-out prompts
        from router.offline.metrics import savings
        from router.policy import load_policy
        from router.offline.report import choose

        report["what_if"] = []
        for path, (thr, elig) in zip(policies, views):
            chosen = choose(probs, thr, elig)
            report["what_if"].append({
                "policy": path, "version": load_policy(path).version,
                **savings(chosen, test.scores(), test.costs(), len(test.models) - 1),
                "shares": {m: float((chosen == j).mean()) for j, m in enumerate(test.models)}})
    report["robustness"] = _robustness(args, test, clf, probs, thresholds, eligible, views, policies)
    report["title"] = f"Routing report: {name}"
    report["data"] = {"source": args.data, "rows": len(table), "train_rows": int(len(train_rows)),
                      "test_rows": int(len(test_rows)), "seed": args.seed, "split": "by unique prompt text",
                      "encoder": catalogue.encoder.name, "policies": policies}
    return write_report(report, Path(args.out), stem=name)


def calibrate_command(args) -> dict:
    from router.offline.calibrate import out_of_fold, search, write_thresholds
    from router.policy import load_policy

    catalogue = load_catalogue()
    table, _ = _load_table(args.table, catalogue.names())
    features, tokens = table_features(table, _encoder())
    probs = out_of_fold(table, features, args.folds, args.seed)
    from router.classifier import AdequacyClassifier

    clf = AdequacyClassifier.load(load_policy(args.policy).classifier_path())
    _, eligible = _policy_view(args.policy, table, clf, features, tokens)
    result = search(probs, table.scores(), table.costs(), table.models, eligible,
                    keep_quality=args.keep_quality, max_large_share=args.max_large_share)
    if not result.met_target:
        raise ValueError(f"no thresholds meet the target on {args.table}; the closest: {result}")
    target = f"quality>={args.keep_quality:g}" if args.keep_quality is not None else f"large<={args.max_large_share:g}"
    version = f"calibrated-{time.strftime('%Y%m%d-%H%M%S')}-{target}"
    write_thresholds(Path(args.policy), result.thresholds, version)
    load_policy(args.policy)  # the edited file must still be a valid policy
    return {"policy": args.policy, "version": version, **result.__dict__,
            "cost_saved": 1 - result.cost / result.large_cost, "quality_kept": result.quality / result.large_quality}


def _robustness(args, test: OutcomeTable, clf, probs: np.ndarray, thresholds, eligible, views, policies) -> dict:
    """Decision flips under small edits, on a seeded sample of held-out prompts."""
    from router.classifier import feature_matrix
    from router.offline.report import choose
    from router.offline.robustness import flip_rates, perturbations
    from router.offline.train import embed

    rng = np.random.default_rng(args.seed)
    sample = np.sort(rng.permutation(len(test))[: args.robustness_sample])
    edits = perturbations([test.prompts[i] for i in sample], seed=args.seed)
    if not edits:
        return {"edits": 0}
    vectors, tokens = embed([text for _, _, text in edits], _encoder(), desc="embed perturbed")
    feats = feature_matrix(vectors, tokens)
    edited_probs = clf.predict_proba(feats)
    rows = sample[[i for i, _, _ in edits]]
    edited_eligible = None
    if policies:
        edited_eligible = _policy_view(policies[0], test, clf, feats, tokens)[1]
    before = choose(probs[rows], thresholds, eligible[rows] if eligible is not None else None)
    after = choose(edited_probs, thresholds, edited_eligible)
    return {"sample": int(len(sample)), **flip_rates(before.tolist(), after.tolist(), [k for _, k, _ in edits])}
