"""The RouteLLM benchmark protocol's data handling: MT-Bench decontamination and scoring, prompt-level splits."""
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from routellm_benchmark import STRONG, WEAK, load_mt_bench, split  # noqa: E402

from router.datasets import DATA  # noqa: E402


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
