"""`router guard train`: fit the gadget guard (router/guard.py) on clean prompts against gadget-carrying ones.

Clean prompts: the labelled prompt set and RouteLLM's MMLU, GSM8K and MT-Bench prompts. Gadget-carrying
prompts: the same prompts behind (a) gadgets that the white-box search finds against the shipped router, both
directions, from the tokenizer's words and from plain words, and (b) unoptimised random word sequences, so that
the guard learns "a prompt behind a run of unrelated words" rather than a few gadgets. A prompt whose sha256
starts with 0-3 (a quarter) is held out of everything here: `router attack` measures on those.
The threshold is set so that at most `target_fpr` of held-out clean prompts is flagged. Found gadgets are kept
beside the artifact (OUT.gadgets.json), so an interrupted run resumes without searching again.
"""
from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Sequence

import numpy as np

from router.guard import GadgetGuard
from router.offline.attack import DOWN, UP, View, find_gadget, natural_vocabulary, prefixed, token_vocabulary

ROUTELLM = Path(__file__).resolve().parents[2] / "data" / "routellm"


def held_out(text: str) -> bool:
    """The fixed quarter of prompts that guard training never sees: `router attack` measures on them."""
    return hashlib.sha256(text.encode()).hexdigest()[0] in "0123"


def clean_prompts(table_prompts: Sequence[str], per_source: int = 600, seed: int = 0) -> list[str]:
    """The labelled prompts plus a sample of RouteLLM's public prompts (MMLU, GSM8K, MT-Bench), deduplicated."""
    from router.offline.datasets import load_routellm

    rng = random.Random(seed)
    texts = list(dict.fromkeys(table_prompts))
    for benchmark in ("mmlu", "gsm8k"):
        pool = list(dict.fromkeys(load_routellm(benchmark).prompts))
        texts += rng.sample(pool, min(per_source, len(pool)))
    questions = ROUTELLM / "mt_bench" / "question.jsonl"
    texts += [json.loads(line)["turns"][0] for line in questions.open() if line.strip()]
    return list(dict.fromkeys(texts))


def random_gadget(vocabulary: Sequence[str], rng: random.Random) -> str:
    return " ".join(rng.choice(vocabulary) for _ in range(rng.randint(4, 14)))


def mutate(gadget: str, vocabulary: Sequence[str], rng: random.Random) -> str:
    words = gadget.split()
    for _ in range(rng.randint(0, 3)):
        words[rng.randrange(len(words))] = rng.choice(vocabulary)
    return " ".join(words)


def search_gadgets(view: View, prompts: Sequence[str], vocabularies: dict[str, list[str]], searches: int,
                   cache: Path, seed: int = 0, batch: int = 12, length: int = 10, candidates: int = 16) -> list[dict]:
    """`searches` white-box gadgets, alternating direction and vocabulary; resumable through `cache`."""
    found = json.loads(cache.read_text()) if cache.exists() else []
    plans = [(direction, vocab) for vocab in vocabularies for direction in (UP, DOWN)]
    for k in range(len(found), searches):
        direction, vocab = plans[k % len(plans)]
        sample = random.Random(seed * 1000 + k).sample(list(prompts), min(batch, len(prompts)))
        gadget = find_gadget(view, sample, direction, vocabularies[vocab], length=length, candidates=candidates,
                             seed=seed * 1000 + k)
        found.append({"text": gadget.text, "direction": direction, "vocabulary": vocab, "objective": gadget.objective})
        cache.write_text(json.dumps(found, indent=1))
    return found[:searches]


def fit_guard(clean: Sequence[str], gadgets: Sequence[str], vocabularies: dict[str, list[str]], embed,
              target_fpr: float = 0.01, seed: int = 0) -> tuple[GadgetGuard, dict]:
    """A logistic regression on embeddings: clean (0) against the same prompts behind a gadget (1)."""
    from sklearn.linear_model import LogisticRegression

    rng = random.Random(seed)
    train = [t for t in clean if not held_out(t)]
    rng.shuffle(train)
    n_val = max(1, len(train) // 5)
    val, fit = train[:n_val], train[n_val:]
    words = [w for v in vocabularies.values() for w in v]

    def attacked(texts: Sequence[str]) -> list[str]:
        out = []
        for text in texts:
            if gadgets and rng.random() < 0.5:
                prefix = mutate(rng.choice(list(gadgets)), words, rng)
            else:
                prefix = random_gadget(rng.choice(list(vocabularies.values())), rng)
            out.append(prefixed(prefix, [text])[0])
        return out

    fit_pos, val_pos = attacked(fit), attacked(val)
    x_fit = embed(list(fit) + fit_pos)
    y_fit = np.r_[np.zeros(len(fit)), np.ones(len(fit_pos))]
    model = LogisticRegression(C=3.0, max_iter=3000).fit(x_fit, y_fit)
    guard = GadgetGuard(model.coef_[0].astype(np.float64), float(model.intercept_[0]), 0.5)
    p_clean, p_pos = guard.probability(embed(list(val))), guard.probability(embed(val_pos))
    guard.threshold = float(max(0.5, np.quantile(p_clean, 1 - target_fpr)))
    metrics = {"clean_fit": len(fit), "clean_validation": len(val), "target_fpr": target_fpr,
               "validation_fpr": float((p_clean >= guard.threshold).mean()),
               "validation_tpr": float((p_pos >= guard.threshold).mean()), "gadgets": len(gadgets)}
    guard.metadata = {"validation": metrics, "held_out": "prompts whose sha256 starts with 0-3"}
    return guard, metrics


def vocabularies_for(encoder, texts: Sequence[str]) -> dict[str, list[str]]:
    return {"tokens": token_vocabulary(encoder), "natural": natural_vocabulary(texts)}
