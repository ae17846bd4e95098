"""Training rows from the decision store: `router train --from-store URL` turns rated answers into outcome rows
that join the outcome table; `router label --from-store URL --sample N` has the large model grade a sample of the
answers nobody rated.

A stored answer with a verdict says one thing: whether the model that served it (decisions.model) was adequate
for that prompt. The verdict is the user's feedback (score > 0.5: like, 4 or 5 stars; score < 0.5: dislike, 1 or
2 stars; exactly 0.5, 3 stars, is no verdict) or else the grader's (grade 4 or 5 of 5 on SERVED_RUBRIC, from
`router label --from-store`). An outcome row needs a score for every model, so:
- the serving model's score is the verdict, 1 or 0;
- every other model's score is unknown and set to that model's mean score on the NEIGHBOURS table prompts most
  similar to this one (cosine of the router's embeddings): an unknown cell repeats what the table already says
  nearby and adds no evidence of its own. There is no "a larger model is at least as good" inference: on the
  default table it fails for 7% of the prompts (qwen2.5-coder-0.5b misses trivia that smollm2-135m gets right);
- eval_name (the domain family's label) is the nearest table prompt's, task is the router's own as stored, and
  each model's cost is the served answer's token counts at that model's catalogue price.
Features are the stored embedding (the router's own) and the prompt's encoder token count (from the text when
stored, else the served model's input tokens, which include its chat template: a slight overestimate). A row
stored without its text (store_text off) has nothing for the text families (`reads_text`: tfidf, hand, length)
to read: with any such row, only the embedding families are tried (knn, lr, domain, blend and gain-blend of
knn+domain+lr), and the command says so.
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from models.catalogue import Catalogue, load_catalogue
from router.classifier import feature_matrix, file_sha256
from router.offline.outcomes import COST, OutcomeTable, validate_frame
from router.offline.select import CRITERION, Selection, candidates, out_of_fold, sweep_measures

NEIGHBOURS = 5
NEUTRAL = 0.5  # 3 stars: neither a like nor a dislike
DEFAULT_JUDGED = "data/outcomes/store-judged.jsonl"
GRADER_MAX_TOKENS = 96
MAX_GRADED_CHARS = 6000  # of the prompt and of the answer each: the grader's context is 4096 tokens
SERVED_RUBRIC = """You are a strict grader. Decide whether an assistant's answer is an adequate reply to the
user's request: correct, on topic and complete enough to be useful. A fluent answer with a wrong fact, wrong code
or a wrong number is not adequate.

Rubric:
5 - correct and complete.
4 - correct, with a minor flaw.
3 - partly correct, or misses part of the request.
2 - wrong, but on topic.
1 - off topic, empty, or a refusal.

Write one "Comment:" line, then the "Grade:" line.
Request: {prompt}
Assistant's answer: {answer}
"""


# --- reading the store (read-only: no migration, no writer thread) -----------------------------------------------
def redacted(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL at all: nothing in it to hide that we can find
        return url


def read_store(url: str, days: float | None = None) -> list[dict]:
    """Every answered decision (with its feedback score, when rated) of the last `days` days, oldest first."""
    from sqlalchemy import select
    from sqlalchemy.engine import make_url

    from router.store.schema import decisions as d
    from router.store.schema import feedback as f
    from router.store.store import embedding_encoder_column, open_engine

    if days is not None and days <= 0:
        raise ValueError(f"--store-days {days:g}: it must be more than 0")
    try:
        parsed = make_url(url)
    except Exception as exc:
        raise ValueError(f"store URL {url!r} is not a database URL: {exc}") from None
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:") \
            and not Path(parsed.database).expanduser().exists():
        raise ValueError(f"store {redacted(url)}: no such file {parsed.database}")
    engine = open_engine(url)
    query = select(d.c.request_id, d.c.at, d.c.model, d.c.task, d.c.input_tokens, d.c.output_tokens, d.c.cost,
                   d.c.prompt_sha256, d.c.prompt_embedding,
                   embedding_encoder_column(engine, load_catalogue().encoder.name), d.c.prompt_text,
                   d.c.response_text, f.c.score.label("feedback_score")) \
        .join(f, f.c.request_id == d.c.request_id, isouter=True).where(d.c.model.is_not(None)).order_by(d.c.at)
    if days is not None:
        query = query.where(d.c.at >= time.time() - days * 86400)
    try:
        with engine.connect() as connection:
            return [dict(r._mapping) for r in connection.execute(query)]
    except Exception as exc:  # no such database, server, table or column
        raise ValueError(f"store {redacted(url)}: cannot read decisions from it: {str(exc).splitlines()[0]}") from None
    finally:
        engine.dispose()


# --- the grader's verdicts (router label --from-store) ------------------------------------------------------------
class JudgedAnswer(BaseModel):
    """One line of the judged file: the grader's verdict on one stored answer."""
    model_config = ConfigDict(extra="ignore")
    request_id: str = Field(min_length=1)
    model: str = Field(min_length=1)
    score: float = Field(ge=0.0, le=1.0)
    reason: str = ""
    grader: str = ""
    reply: str = ""


def read_judged(path: Path) -> dict[str, JudgedAnswer]:
    judged = {}
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise ValueError(f"{path}: cannot read the judged answers: {exc}") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            entry = JudgedAnswer.model_validate_json(line)
        except ValidationError as exc:
            if n == len(lines):
                continue  # a last line cut by an interruption is judged again
            raise ValueError(f"{path}:{n}: not a judged answer: {exc.errors()[0]['msg']}") from None
        judged[entry.request_id] = entry
    return judged


def served_verdict(row: dict, judged: dict[str, JudgedAnswer]) -> tuple[float, str] | None:
    """(1 or 0 for the serving model, "feedback" or "judged"), or None when the answer has no verdict. A user's
    rating wins over the grader's."""
    score = row.get("feedback_score")
    if score is not None and score != NEUTRAL:
        return (1.0 if score > NEUTRAL else 0.0), "feedback"
    entry = judged.get(row["request_id"])
    if entry is not None and entry.model == row["model"]:
        return (1.0 if entry.score >= 0.5 else 0.0), "judged"
    return None


def grading_prompt(prompt: str, answer: str) -> str:
    return SERVED_RUBRIC.format(prompt=prompt.strip()[:MAX_GRADED_CHARS],
                                answer=answer.strip()[:MAX_GRADED_CHARS] or "(empty)")


def _grader(catalogue: Catalogue, name: str, threads: int | None) -> Callable[[str], str]:
    """The grader model, loaded in this process: a grading prompt in, its reply out."""
    import asyncio

    from models.backend import GenerationRequest
    from models.registry import make_backend

    backend = make_backend(catalogue.model(name), n_parallel=1, threads=threads or max(1, os.cpu_count() or 1))

    def ask(prompt: str) -> str:
        request = GenerationRequest([{"role": "user", "content": prompt}], GRADER_MAX_TOKENS, 0.0, seed=0)
        return asyncio.run(backend.generate(request)).text

    return ask


def judge_store(url: str, out: Path, catalogue: Catalogue, sample: int | None = None, grader: str | None = None,
                days: float | None = None, threads: int | None = None, seed: int = 0,
                ask: Callable[[str], str] | None = None) -> str:
    """Grade a seeded sample of the stored answers that have no verdict yet, appending each verdict to `out`
    (so a re-run continues); `ask` sends a grading prompt to the grader (default: the catalogue's last model)."""
    from tqdm import tqdm

    from router.offline.judges import parse_grade

    grader = grader or catalogue.models[-1].name
    catalogue.model(grader)  # an unknown name fails before any work
    rows = read_store(url, days)
    done = read_judged(out) if out.exists() else {}
    open_rows = [r for r in rows if served_verdict(r, done) is None]
    with_text = [r for r in open_rows if r.get("prompt_text") and r.get("response_text") is not None]
    textless = len(open_rows) - len(with_text)
    order = np.random.default_rng(seed).permutation(len(with_text))
    picked = [with_text[i] for i in order[:sample]]
    print(f"{len(rows)} stored answers, {len(open_rows)} without a verdict; {textless} of them skipped: no "
          f"prompt or answer text (store_text off)", file=sys.stderr)
    ask = ask or (_grader(catalogue, grader, threads) if picked else None)
    adequate = ungraded = 0
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a") as log:
        for row in tqdm(picked, desc="grade", unit="answer", disable=len(picked) < 2):
            reply = ask(grading_prompt(row["prompt_text"], row["response_text"]))
            verdict = parse_grade(reply)
            if not verdict.reason.startswith("grade "):  # no grade in the reply: no verdict, not a failure
                ungraded += 1
                continue
            adequate += int(verdict.score == 1.0)  # grade 4 or 5 (judges.ADEQUATE_GRADE)
            entry = JudgedAnswer(request_id=row["request_id"], model=row["model"], score=verdict.score,
                                 reason=verdict.reason, grader=grader, reply=reply)
            log.write(entry.model_dump_json() + "\n")
            log.flush()
    graded = len(picked) - ungraded
    return (f"graded {graded} of {len(with_text)} unrated answers with {grader} ({adequate} adequate); "
            f"{ungraded} replies had no grade; verdicts in {out}")


# --- store rows -> outcome rows -------------------------------------------------------------------------------
@dataclass
class StoreRows:
    table: OutcomeTable            # the outcome table's rows, then the store's
    features: np.ndarray
    without_text: int              # store rows stored without their prompt text
    provenance: dict = field(default_factory=dict)

    def select(self, table: OutcomeTable, features: np.ndarray, rows: np.ndarray, family: str, folds: int,
               seed: int) -> Selection:
        """select_family, but only among the families that can read these rows."""
        from router.offline.select import select_family

        if not self.without_text:
            return select_family(table, features, rows, family, folds, seed)
        return select_among(table, features, rows, embedding_only(family, self.without_text), folds, seed)


def _reads_embedding_only(name: str, params: dict) -> bool:
    from router.families import FAMILIES

    members = params.get("members") or [{"name": name}]
    return all(not FAMILIES[n].reads_text for n in [name, *(m["name"] for m in members)])


def embedding_only(family: str, without_text: int) -> list[tuple[str, dict]]:
    options = [(n, p) for n, p in candidates(family) if _reads_embedding_only(n, p)]
    if not options:
        raise ValueError(f"--family {family} reads the prompt text, and {without_text} store rows were stored "
                         f"without it (store_text off); use an embedding family: {embedding_families()} or auto")
    return options


def embedding_families() -> str:
    """The families auto tries on rows without text, named from its candidates so that messages cannot drift."""
    return ", ".join(dict.fromkeys(n for n, p in candidates("auto") if _reads_embedding_only(n, p)))


def select_among(table: OutcomeTable, features: np.ndarray, rows: np.ndarray, options: list[tuple[str, dict]],
                 folds: int, seed: int) -> Selection:
    """router.offline.select.select_family over a given list of candidates (same folds, criterion and ties)."""
    from router.families import make_family

    if len(rows) < folds * 2:
        raise ValueError(f"{len(rows)} training rows are too few for {folds}-fold cross-validation")
    scores, costs = table.scores()[rows], table.costs()[rows]
    best, best_value, best_oof, table_rows = None, -np.inf, None, []
    for name, params in options:
        oof = out_of_fold(table, features, rows, name, params, folds, seed)
        measures = sweep_measures(oof, scores, costs, table.models)
        value = measures["area"]
        table_rows.append({"family": name, "params": params, "label": make_family(name, params).label(),
                           "area": round(measures["area"], 6), "aiq": round(measures["aiq"], 6)})
        if value > best_value + 1e-12:
            best, best_value, best_oof = (name, params), value, oof
    return Selection(best[0], best[1], CRITERION + "; embedding families only (store rows without text)", folds,
                     table_rows, best_oof)


def _store_frame(rows: list[tuple[dict, float]], table: OutcomeTable, table_features: np.ndarray,
                 vectors: np.ndarray, catalogue: Catalogue) -> pd.DataFrame:
    """The outcome rows (module docstring): the verdict for the serving model, the nearest table prompts' mean
    score for every other model."""
    keys = table_features[:, :-1].astype(np.float32)
    k = min(NEIGHBOURS, len(keys))
    nearest = np.argsort(-(vectors @ keys.T), axis=1)[:, :k]
    table_scores = table.scores()
    eval_names = table.frame["eval_name"].astype(str).to_numpy() if "eval_name" in table.frame else None
    tasks = table.frame["task"].astype(str).to_numpy() if "task" in table.frame else None
    out = []
    for i, (row, verdict) in enumerate(rows):
        key = row.get("prompt_sha256") or row["request_id"]  # text-less rows of one prompt share a fold
        record = {"sample_id": f"store:{row['request_id']}",
                  "prompt": row.get("prompt_text") or f"<not stored: sha256 {key}>"}
        if eval_names is not None:
            record["eval_name"] = eval_names[nearest[i, 0]]
        if tasks is not None:
            record["task"] = row.get("task") or tasks[nearest[i, 0]]
        imputed = table_scores[nearest[i]].mean(axis=0)
        tokens_in, tokens_out = int(row.get("input_tokens") or 0), int(row.get("output_tokens") or 0)
        for j, model in enumerate(table.models):
            served = model == row["model"]
            record[model] = verdict if served else float(imputed[j])
            record[model + COST] = float(row["cost"]) if served and row.get("cost") is not None \
                else catalogue.model(model).cost(tokens_in, tokens_out)
        out.append(record)
    return pd.DataFrame(out)


def _iso(at: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))


def merge_store(args, table: OutcomeTable, features: np.ndarray, catalogue: Catalogue, encoder) -> StoreRows:
    """The table's rows and features, then the store's rows with a verdict (args: from_store, judged,
    store_days, table)."""
    from router.store import store_url

    url = args.from_store or store_url(None)
    judged_path = Path(args.judged) if args.judged else None
    judged = read_judged(judged_path) if judged_path else {}
    rows = read_store(url, args.store_days)
    if not rows:
        window = f" in the last {args.store_days:g} days" if args.store_days is not None else ""
        raise ValueError(f"store {redacted(url)}: no answered requests{window}")
    skipped = {"no_verdict": 0, "no_embedding": 0, "other_encoder": 0, "unknown_model": 0}
    kept, sources = [], {"feedback": 0, "judged": 0}
    for row in rows:
        verdict = served_verdict(row, judged)
        blob = row.get("prompt_embedding")
        if verdict is None:
            skipped["no_verdict"] += 1
        elif blob is None or len(blob) != 4 * encoder.dimensions:
            skipped["no_embedding"] += 1
        elif row["prompt_embedding_encoder"] != encoder.name:
            skipped["other_encoder"] += 1  # routed while another encoder's router served: not these features
        elif row["model"] not in table.models:
            skipped["unknown_model"] += 1
        else:
            kept.append((row, verdict[0]))
            sources[verdict[1]] += 1
    if not kept:
        raise ValueError(f"store {redacted(url)}: none of its {len(rows)} answers has a usable verdict ({skipped}); "
                         f"rate answers (POST /v1/feedback) or grade a sample "
                         f"(router label --from-store URL --sample N)")
    vectors = np.vstack([np.frombuffer(r["prompt_embedding"], "<f4") for r, _ in kept]).astype(np.float32)
    tokens = [encoder.count_tokens(r["prompt_text"]) if r.get("prompt_text") else int(r.get("input_tokens") or 0)
              for r, _ in kept]
    frame = _store_frame(kept, table, features, vectors, catalogue)
    without_text = sum(not r.get("prompt_text") for r, _ in kept)
    merged = validate_frame(pd.concat([table.frame, frame], ignore_index=True), f"{args.table} + store",
                            table.models)
    print(f"from the store: {len(kept)} rows ({sources['feedback']} rated, {sources['judged']} graded) of "
          f"{len(rows)} answers in {redacted(url)}; skipped: {skipped}", file=sys.stderr)
    if without_text:
        print(f"{without_text} store rows have no prompt text (store_text off): only the embedding families "
              f"({embedding_families()}) are tried", file=sys.stderr)
    ats = [r["at"] for r, _ in kept]
    provenance = {
        "table": {"path": args.table, "sha256": file_sha256(args.table), "n": len(table)},
        "store": {"url": redacted(url), "n": len(kept), "n_feedback": sources["feedback"],
                  "n_judged": sources["judged"], "without_text": without_text, "skipped": skipped,
                  "window": {"days": args.store_days, "first": _iso(min(ats)), "last": _iso(max(ats))},
                  "judged": None if judged_path is None else {"path": str(judged_path),
                                                              "sha256": file_sha256(judged_path)},
                  "unknown_models": f"mean score of the {NEIGHBOURS} most similar table prompts"}}
    return StoreRows(merged, np.vstack([features, feature_matrix(vectors, tokens)]), without_text, provenance)
