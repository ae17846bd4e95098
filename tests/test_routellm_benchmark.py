"""The RouteLLM benchmark protocol's data handling: MT-Bench decontamination and scoring, prompt-level splits."""
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from routellm_benchmark import STRONG, WEAK, load_mt_bench, split  # noqa: E402

from router.offline.datasets import DATA, load_routellm  # noqa: E402


def test_mt_bench_drops_contaminated_questions_and_averages_both_turns():
    mt = load_mt_bench()
    contaminated = set(pd.read_json(DATA / "mt_bench/contaminated_prompts.jsonl", lines=True)["eval_prompt"])
    questions = pd.read_json(DATA / "mt_bench/question.jsonl", lines=True)
    dropped = questions["turns"].apply(lambda t: t[0] in contaminated or t[1] in contaminated).sum()
    assert len(mt) == len(questions) - dropped and dropped > 0
    assert not mt["prompt"].isin(contaminated).any()
    judgements = pd.read_json(DATA / "mt_bench/judgements.jsonl", lines=True)
    qid = int(mt["question_id"].iloc[0])
    turns = judgements[(judgements.question_id == qid) & (judgements.model == "gpt-4-1106-preview")]["score"]
    assert len(turns) == 2 and mt[STRONG].iloc[0] == turns.mean()
    assert mt[WEAK].between(1, 10).all()


def test_split_is_by_unique_prompt_and_caps_training():
    frame = pd.DataFrame({"prompt": ["a", "a", "b", "c", "d", "d", "e"]})
    train, test = split(frame, max_train=2, seed=0)
    train_prompts, test_prompts = set(frame.prompt[train]), set(frame.prompt[test])
    assert len(train_prompts) == 2 and not train_prompts & test_prompts
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(len(frame)))


def test_overlapping_train_and_test_prompts_are_refused():
    from routellm_benchmark import ProtocolError, assert_disjoint
    assert_disjoint(["a", "b"], ["c"])
    with pytest.raises(ProtocolError, match="1 prompt"):
        assert_disjoint(["a", "b"], ["b", "c"])


def test_learning_curve_keeps_one_test_set_and_nests_training_sets():
    from routellm_learning_curve import nested_splits
    prompts = ["a", "a", "b", "c", "d", "d", "e", "f", "g"]
    test, train = nested_splits(prompts, test_size=2, sizes=[2, 4, None], seed=1)
    test_prompts = {prompts[i] for i in test}
    sets = {n: {prompts[i] for i in rows} for n, rows in train.items()}
    assert len(test_prompts) == 2 and sorted(sets) == [2, 4, 5]  # None = the 5 prompts outside the test set
    assert sets[2] < sets[4] < sets[5] and not sets[5] & test_prompts
    assert sets[5] | test_prompts == set(prompts)
    with pytest.raises(ValueError, match="training size 6 exceeds the 5 prompts"):
        nested_splits(prompts, test_size=2, sizes=[6], seed=1)
    with pytest.raises(ValueError, match="leaves no training prompt"):
        nested_splits(prompts, test_size=7, sizes=[1], seed=1)


def test_subject_prior_is_the_smoothed_training_mean_of_the_subject():
    from routellm_learning_curve import subject_prior
    # overall training mean 0.5; subject x: (1 + 1 + 2*0.5) / (2 + 2) = 0.75; unseen subject z: the overall mean
    got = subject_prior(["x", "x", "y", "y"], [1.0, 1.0, 0.0, 0.0], ["x", "y", "z"], smoothing=2.0)
    assert got.tolist() == [0.75, 0.25, 0.5]


def test_answer_length_variant_learns_from_answers_only_where_the_data_has_them():
    from routellm_variants import TrainSet, answer_length
    rng = np.random.default_rng(0)
    prompts = np.array([f"Q{i}: " + "word " * (i % 7) + "1 + 2" * (i % 3) for i in range(40)], dtype=object)
    x = rng.normal(size=(40, 5))
    lengths = np.log1p(50 + 30 * (np.arange(40) % 7))  # longer questions get longer answers here
    t = TrainSet(x=x, prompts=prompts, weak=np.zeros(40), strong=np.ones(40), domain=np.array(["g"] * 40),
                 answer_length=lengths)
    assert np.corrcoef(answer_length(t)(x, prompts), lengths)[0, 1] > 0.5
    no_answers = TrainSet(**{**t.__dict__, "answer_length": np.full(40, np.nan)})
    assert np.all(answer_length(no_answers)(x, prompts) == 0.0)  # MMLU has no answers: no opinion, not a crash


def test_small_lm_letter_probabilities_renormalise_over_the_options():
    from routellm_small_lm_signal import entropy, letter_probs, uncertainty
    top = [{"token": "To", "logprob": math.log(0.5)}, {"token": "B", "logprob": math.log(0.3)},
           {"token": " A", "logprob": math.log(0.1)}, {"token": "D", "logprob": math.log(0.1)}]
    probs = letter_probs(top)  # "To" is not an option; C is missing from the top tokens
    assert probs == pytest.approx([0.2, 0.6, 0.0, 0.2])
    assert uncertainty(probs) == pytest.approx(0.4)
    assert letter_probs([{"token": "The", "logprob": -0.1}]) == [0.25] * 4  # no letter at all: no opinion
    assert entropy([0.25] * 4) == pytest.approx(math.log(4)) and entropy([1.0, 0, 0, 0]) == 0.0


def test_benchmark_command_follows_the_protocol(tmp_path):
    """One seed of the real command on the shipped RouteLLM data: caps, decontamination, disjoint splits."""
    from routellm_benchmark import main
    main(["--out", str(tmp_path), "--seeds", "1", "--router", "knn64-gain", "--variants", "knn64-gain",
          "--latency-prompts", "3"])
    mmlu, gsm8k = load_routellm("mmlu"), load_routellm("gsm8k")
    for bench, table, cap in (("mmlu", mmlu, 1500), ("gsm8k", gsm8k, 300)):
        train = set(pd.read_csv(tmp_path / f"{bench}-seed1-train.csv")["prompt"])
        test = pd.read_csv(tmp_path / f"{bench}-seed1-test.csv")
        contaminated = set(pd.read_json(DATA / bench / "contaminated_prompts.jsonl", lines=True)["eval_prompt"])
        assert len(train) == cap and not train & set(test["prompt"])
        assert not (train | set(test["prompt"])) & contaminated
        assert len(test) + table.frame["prompt"].isin(train).sum() == len(table)  # every other row is tested
        assert test["score"].notna().all()
    mt_train = set(pd.read_csv(tmp_path / "mt_bench-seed1-train.csv")["prompt"])
    mt_test = pd.read_csv(tmp_path / "mt_bench-seed1-test.csv")
    assert not mt_train & set(load_mt_bench()["prompt"]) and len(mt_test) == len(load_mt_bench())
    results = (tmp_path / "results.md").read_text()
    assert "| mmlu | knn64-gain |" in results and "RouteLLM best" in results
