"""Train the adequacy classifier on an outcome table. Embeddings are cached in chunks, so an interrupted
run resumes where it stopped, and a progress bar shows the rate and ETA."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
from tqdm import tqdm

from router.classifier import OOD_QUANTILE, AdequacyClassifier, feature_matrix
from router.families import Family
from router.features import Encoder
from router.offline.outcomes import OutcomeTable

CHUNK = 256


def cache_dir() -> Path:
    default = Path.home() / ".cache" / "ensemble-router" / "embeddings"
    return Path(os.environ.get("ROUTER_EMBEDDING_CACHE", default)).expanduser()


def embed(texts: list[str], encoder: Encoder, desc: str = "embed") -> tuple[np.ndarray, np.ndarray]:
    """(embeddings, token counts) for `texts`, cached per chunk of prompts."""
    directory = cache_dir()
    directory.mkdir(parents=True, exist_ok=True)
    vectors, counts = [], []
    for start in tqdm(range(0, len(texts), CHUNK), desc=desc, unit="chunk", disable=len(texts) <= CHUNK):
        chunk = texts[start:start + CHUNK]
        # keyed by the encoder's files too: embeddings cached under another encoder must never be reused
        key = hashlib.sha256(("\x00".join(chunk) + f"|{encoder.fingerprint}").encode()).hexdigest()[:32]
        path = directory / f"{key}.npz"
        if path.exists():
            with np.load(path, allow_pickle=False) as cached:
                vectors.append(cached["vectors"])
                counts.append(cached["tokens"])
            continue
        v = encoder.encode(chunk)
        c = np.array([encoder.count_tokens(t) for t in chunk], dtype=np.int64)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, vectors=v, tokens=c)
        tmp.replace(path)
        vectors.append(v)
        counts.append(c)
    if not vectors:
        return np.zeros((0, encoder.dimensions), np.float32), np.zeros(0, np.int64)
    return np.vstack(vectors), np.concatenate(counts)


def split_by_prompt(table: OutcomeTable, test_fraction: float, seed: int, max_train: int | None = None):
    """Train/test row indices with no prompt text in both (some public sets repeat prompts)."""
    rng = np.random.default_rng(seed)
    unique = np.asarray(table.frame["prompt"].unique(), dtype=object)
    unique = unique[rng.permutation(len(unique))]
    n_test = int(round(len(unique) * test_fraction))
    test_prompts = set(unique[:n_test])
    train_prompts = unique[n_test:]
    if max_train is not None:
        train_prompts = train_prompts[:max_train]
    train_set = set(train_prompts)
    is_test = table.frame["prompt"].isin(test_prompts).to_numpy()
    is_train = table.frame["prompt"].isin(train_set).to_numpy()
    return np.flatnonzero(is_train), np.flatnonzero(is_test)


def fit_table(table: OutcomeTable, features: np.ndarray, rows: np.ndarray, family: Family,
              metadata: dict | None = None, ood_quantile: float = OOD_QUANTILE,
              ood_rows: np.ndarray | None = None) -> AdequacyClassifier:
    """Fit `family` on `rows`; the out-of-distribution keys are `ood_rows` (default: `rows`)."""
    from router.offline.select import answer_lengths_of, domains_of, tasks_of

    tasks, texts, lengths = tasks_of(table), table.prompts, answer_lengths_of(table)
    return AdequacyClassifier.fit(family, features[rows], [texts[i] for i in rows], table.scores()[rows],
                                  table.models, None if tasks is None else [tasks[i] for i in rows],
                                  domains_of(table)[rows], ood_quantile, metadata,
                                  None if ood_rows is None else features[ood_rows],
                                  None if lengths is None else lengths[rows])


def table_features(table: OutcomeTable, encoder: Encoder) -> tuple[np.ndarray, np.ndarray]:
    """(features, prompt token counts) for every row of the table."""
    vectors, tokens = embed(table.prompts, encoder)
    return feature_matrix(vectors, tokens), tokens
