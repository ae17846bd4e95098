"""The RouteLLM benchmark protocol's data handling: MT-Bench decontamination and scoring, prompt-level splits."""
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from routellm_benchmark import STRONG, WEAK, load_mt_bench, split  # noqa: E402

from router.datasets import DATA, load_routellm  # noqa: E402


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
