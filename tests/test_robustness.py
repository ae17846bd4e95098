"""Prompt perturbations and decision flip rates."""
import random

from router.offline.robustness import flip_rates, perturb, perturbations


def test_each_perturbation_changes_the_text_a_little():
    rng = random.Random(0)
    text = "Write a Python function that sorts a list."
    assert perturb(text, "case", rng) == text.lower()
    assert perturb(text, "whitespace", rng).split() == text.split()
    typo = perturb(text, "typo", rng)
    assert typo != text and sorted(typo) == sorted(text) and len(typo) == len(text)
    assert perturb(text, "synonym", rng) in {"Create a Python function that sorts a list.",
                                             "Write a Python routine that sorts a list.",
                                             "Write a Python function that sorts a array."}


def test_prompts_without_material_get_no_edit():
    rng = random.Random(0)
    assert perturb("Hi!", "typo", rng) is None
    assert perturb("Zzz qqq.", "synonym", rng) is None
    kinds = [k for _, k, _ in perturbations(["Hi!"])]
    assert "typo" not in kinds and "case" in kinds


def test_flip_rates_overall_and_per_kind():
    rates = flip_rates([0, 0, 1, 1], [0, 1, 1, 0], ["case", "typo", "typo", "synonym"])
    assert rates["overall"] == 0.5 and rates["case"] == 0.0 and rates["typo"] == 0.5 and rates["synonym"] == 1.0
    assert rates["whitespace"] is None and rates["edits"] == 4
