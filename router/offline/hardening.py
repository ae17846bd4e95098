"""Adversarial training of the router itself (issue 14): `router train --prefix-copies N --adversarial-rounds R`.

The chosen family is fitted on its prompts plus copies of them behind random runs of 2-12 words, and behind the
gadgets that the white-box search of "Rerouting LLM Routers" (router/offline/attack.py) finds against the router
of the round before. Every copy keeps its prompt's outcomes, so a prefix stops carrying the decision. Measured
in bench/prefix_augmentation.py: it holds gadgets that push hard prompts to a small model, not escalation.

Only prompts outside the attack's held-out quarter (guard_train.held_out) get copies, so `router attack` still
measures prompts the hardening never saw. The out-of-distribution keys stay the clean prompts': a copy behind a
prefix is not a kind of request the router has seen. The gadgets found are kept in the artifact (so that
`router calibrate` can rebuild the same copies inside its folds) and in a cache beside it, one round at a time,
so that an interrupted run resumes after its last finished round.
"""
from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from router.offline.attack import DOWN, UP, WhiteBoxView, find_gadget
from router.offline.guard_train import held_out, vocabularies_for
from router.offline.outcomes import OutcomeTable


@dataclass(frozen=True)
class Search:
    """One round's gadget searches: every seed, vocabulary and direction, as bench/prefix_augmentation.py ran."""
    prompts: int = 16      # search prompts per gadget
    length: int = 10       # words per gadget
    candidates: int = 24   # replacements tried per position
    seeds: int = 2

    def plans(self) -> list[tuple[int, str, str]]:
        return [(s, v, d) for s in range(self.seeds) for v in ("tokens", "natural") for d in (UP, DOWN)]


@dataclass
class Augmented:
    """The training rows plus their copies: `origin` is, per row, the index in the clean table of the row copied."""
    table: OutcomeTable
    features: np.ndarray
    origin: np.ndarray
    clean: int  # the first `clean` rows are the training rows themselves


def augment(table: OutcomeTable, features: np.ndarray, rows: np.ndarray, encoder, copies: int,
            gadgets: list[str], seed: int = 0) -> Augmented:
    """`rows` of the table, `copies` copies of each searchable one behind random words (tokenizer words and
    plain words in turn), and one copy of each behind every gadget."""
    from router.offline.train import table_features

    rows = np.asarray(rows, dtype=int)
    source = [int(i) for i in rows if not held_out(table.prompts[i])]
    vocabularies = vocabularies_for(encoder, list(dict.fromkeys(table.prompts[i] for i in source)))
    words, rng = (vocabularies["tokens"], vocabularies["natural"]), random.Random(seed)
    copied = [i for i in source for _ in range(copies)] + [i for _ in gadgets for i in source]
    prefixes = [" ".join(rng.choice(words[n % 2]) for _ in range(rng.randint(2, 12)))
                for n in range(len(source) * copies)] + [g for g in gadgets for _ in source]
    extra = table.frame.iloc[copied].copy()
    extra["prompt"] = [f"{prefix} {table.prompts[i]}" for prefix, i in zip(prefixes, copied)]
    extra_table = OutcomeTable(extra.reset_index(drop=True), table.models)
    extra_features = table_features(extra_table, encoder)[0] if len(extra_table) else features[:0]
    frame = pd.concat([table.frame.iloc[rows], extra_table.frame], ignore_index=True)
    return Augmented(OutcomeTable(frame, table.models), np.vstack([features[rows], extra_features]),
                     np.concatenate([rows, np.asarray(copied, dtype=int)]), len(rows))


def search_rounds(table: OutcomeTable, features: np.ndarray, rows: np.ndarray, family: str, params: dict,
                  policy, catalogue, encoder, copies: int, rounds: int, seed: int = 0, cache: Path | None = None,
                  search: Search = Search()) -> list[list[str]]:
    """Per round, the gadgets found against the router trained on everything before it."""
    from router.families import make_family
    from router.offline.train import fit_table

    key = _cache_key(table, rows, family, params, policy, copies, seed, search)
    found = _cached(cache, key)[:rounds]
    quiet = policy.model_copy(update={"guard": policy.guard.model_copy(update={"enabled": False})})
    searchable = list(dict.fromkeys(table.prompts[i] for i in rows if not held_out(table.prompts[i])))
    if rounds and not searchable:
        raise ValueError("adversarial rounds need training prompts outside the attack's held-out quarter")
    vocabularies = vocabularies_for(encoder, searchable)
    plans = search.plans()
    bar = tqdm(total=rounds * len(plans), initial=len(found) * len(plans), desc="adversarial search", unit="gadget")
    for r in range(len(found), rounds):
        aug = augment(table, features, rows, encoder, copies, [g for gs in found for g in gs], seed)
        clf = fit_table(aug.table, aug.features, np.arange(len(aug.table)), make_family(family, params))
        view = WhiteBoxView(clf, quiet, catalogue, encoder)
        gadgets = []
        for s, vocabulary, direction in plans:
            run_seed = 100 + 10 * r + s + 1000 * seed
            prompts = random.Random(run_seed).sample(searchable, min(search.prompts, len(searchable)))
            gadgets.append(find_gadget(view, prompts, direction, vocabularies[vocabulary], length=search.length,
                                       candidates=search.candidates, seed=run_seed, progress=False).text)
            bar.update()
        found.append(gadgets)
        if cache is not None:
            cache.write_text(json.dumps({"key": key, "rounds": found}, indent=1) + "\n")
    bar.close()
    return found


def fit_hardened(table: OutcomeTable, features: np.ndarray, rows: np.ndarray, family: str, params: dict,
                 policy, catalogue, encoder, copies: int, rounds: int, seed: int = 0, cache: Path | None = None,
                 metadata: dict | None = None, ood_quantile: float | None = None, search: Search = Search()):
    """(the classifier fitted on the rows and their copies, the Augmented rows it was fitted on)."""
    from router.classifier import OOD_QUANTILE
    from router.families import make_family
    from router.offline.train import fit_table

    if copies < 0 or rounds < 0:
        raise ValueError("--prefix-copies and --adversarial-rounds must be 0 or more")
    found = search_rounds(table, features, rows, family, params, policy, catalogue, encoder, copies, rounds, seed,
                          cache, search)
    aug = augment(table, features, rows, encoder, copies, [g for gs in found for g in gs], seed)
    record = {"prefix_copies": copies, "adversarial_rounds": rounds, "seed": seed, "gadgets": found,
              "training_rows": len(aug.table), "search": search.__dict__, "policy_version": policy.version}
    clf = fit_table(aug.table, aug.features, np.arange(len(aug.table)), make_family(family, params),
                    {**(metadata or {}), "hardening": record}, ood_quantile or OOD_QUANTILE,
                    ood_rows=np.arange(aug.clean))
    return clf, aug


def rebuild(table: OutcomeTable, features: np.ndarray, rows: np.ndarray, encoder, record: dict) -> Augmented:
    """The copies an artifact's `hardening` record was trained with, rebuilt on `rows` of a table."""
    try:
        copies, seed = int(record["prefix_copies"]), int(record["seed"])
        gadgets = [str(g) for gs in record["gadgets"] for g in gs]
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"the router artifact's hardening record is malformed ({e!r}); train it again") from None
    return augment(table, features, rows, encoder, copies, gadgets, seed)


def _cache_key(table, rows, family, params, policy, copies, seed, search) -> str:
    digest = hashlib.sha256()
    for i in rows:
        digest.update(table.prompts[i].encode() + b"\x00")
    digest.update(np.ascontiguousarray(table.scores()[rows]).tobytes())
    thresholds = {m: c.threshold for m, c in policy.models.items()}
    digest.update(json.dumps([family, params, copies, seed, search.__dict__, thresholds, policy.fallback],
                             sort_keys=True, default=str).encode())
    return digest.hexdigest()


def _cached(cache: Path | None, key: str) -> list[list[str]]:
    """The rounds a previous run with the same table and settings finished; none if it had others."""
    if cache is None or not cache.exists():
        return []
    try:
        data = json.loads(cache.read_text())
    except (OSError, ValueError):
        return []
    if not isinstance(data, dict) or data.get("key") != key or not isinstance(data.get("rounds"), list):
        return []
    return [[str(g) for g in gs] for gs in data["rounds"] if isinstance(gs, list)]
