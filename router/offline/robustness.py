"""Robustness of routing decisions: how often a decision flips under small, meaning-preserving edits
of the prompt (case, whitespace, a typo, a synonym). A router that flips often can be steered by formatting."""
from __future__ import annotations

import random
import re

SYNONYMS = {"write": "create", "create": "write", "function": "routine", "big": "large", "large": "big",
            "small": "little", "quick": "fast", "fast": "quick", "answer": "reply", "explain": "describe",
            "describe": "explain", "show": "display", "find": "locate", "make": "build", "build": "make",
            "number": "figure", "list": "array", "buy": "purchase", "buys": "purchases", "start": "begin",
            "help": "assist", "hello": "hi", "hi": "hello", "thanks": "thank you", "correct": "right",
            "which": "what", "many": "numerous", "each": "every", "every": "each", "total": "overall"}
KINDS = ("case", "whitespace", "typo", "synonym")


def perturb(text: str, kind: str, rng: random.Random) -> str | None:
    """One edit of `kind`; None when the prompt offers nothing to edit (no synonym, no word to misspell)."""
    if kind == "case":
        return text.lower() if text != text.lower() else text.upper()
    if kind == "whitespace":
        return "  " + re.sub(r" ", "  ", text, count=3) + " \n"
    words = list(re.finditer(r"[A-Za-z]{4,}", text))
    if kind == "typo":
        if not words:
            return None
        w = rng.choice(words)
        i = rng.randrange(len(w.group()) - 1)
        s = w.group()
        return text[:w.start()] + s[:i] + s[i + 1] + s[i] + s[i + 2:] + text[w.end():]
    if kind == "synonym":
        hits = [m for m in re.finditer(r"[A-Za-z]+", text) if m.group().lower() in SYNONYMS]
        if not hits:
            return None
        m = rng.choice(hits)
        new = SYNONYMS[m.group().lower()]
        new = new.capitalize() if m.group()[0].isupper() else new
        return text[:m.start()] + new + text[m.end():]
    raise ValueError(f"unknown perturbation {kind!r}; known: {KINDS}")


def perturbations(prompts: list[str], seed: int = 0) -> list[tuple[int, str, str]]:
    """(index of the original prompt, kind, perturbed text) for every applicable edit."""
    rng = random.Random(seed)
    out = []
    for i, text in enumerate(prompts):
        for kind in KINDS:
            edited = perturb(text, kind, rng)
            if edited is not None and edited != text:
                out.append((i, kind, edited))
    return out


def flip_rates(original, perturbed, kinds: list[str]) -> dict:
    """Share of edits that change the routed model, overall and per kind of edit."""
    flips = [a != b for a, b in zip(original, perturbed)]
    rates = {"overall": sum(flips) / len(flips) if flips else 0.0, "edits": len(flips)}
    for kind in KINDS:
        mine = [f for f, k in zip(flips, kinds) if k == kind]
        rates[kind] = sum(mine) / len(mine) if mine else None
    return rates
