"""A static encoder distilled from the shipped MiniLM, for routers that need decisions faster than a transformer.

Model2Vec's recipe (Tulkens and van Dongen, "Model2Vec: Distill a Small Fast Model from any Sentence Transformer",
2024): each WordPiece token's vector is MiniLM's mean-pooled embedding of [CLS] token [SEP] alone, and a prompt's
embedding is the mean of its tokens' vectors, L2-normalised. A decision then costs a tokenization and a table
lookup (bench/encoder_static.md: about 20x the shipped encoder's batched decisions on 2 cores, at the same
cross-validated routing quality on the default table). The table is derived here from the sha256-pinned MiniLM
file, in about 10 s on 2 cores, and cached as a plain .npy array (never a pickle) keyed by that file's fingerprint;
nothing is downloaded.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

if TYPE_CHECKING:
    from router.features import Encoder

SUFFIX = "-static"


def distil(encoder: "Encoder", batch: int = 512) -> np.ndarray:
    """(vocabulary, dimensions): each token's mean-pooled embedding when the encoder reads [CLS] token [SEP] alone."""
    vocabulary = encoder.tokenizer.get_vocab_size()
    cls, sep = encoder.tokenizer.token_to_id("[CLS]"), encoder.tokenizer.token_to_id("[SEP]")
    table = np.zeros((vocabulary, encoder.dimensions), np.float32)
    for start in range(0, vocabulary, batch):
        ids = np.array([[cls, t, sep] for t in range(start, min(vocabulary, start + batch))], np.int64)
        hidden = encoder.session.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids),
                                            "token_type_ids": np.zeros_like(ids)})[0]
        table[start:start + len(ids)] = hidden.mean(axis=1)
    return table


class StaticEncoder:
    """The Encoder interface over a token table: a prompt's embedding is its tokens' mean vector, L2-normalised."""

    def __init__(self, encoder: "Encoder", table: np.ndarray):
        self.name = encoder.name + SUFFIX
        self.tokenizer, self.max_tokens, self.dimensions = encoder.tokenizer, encoder.max_tokens, table.shape[1]
        self.count_tokens = encoder.count_tokens  # the same tokenizer, so the same counts
        self.table = table
        # another embedding: the offline cache must never hand one encoder's vectors to the other
        self.fingerprint = encoder.fingerprint + "-static-mean"

    def encode(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        out = np.zeros((len(texts), self.dimensions), dtype=np.float32)
        if not len(texts):
            return out
        # the shipped encoder's max_tokens counts [CLS] and [SEP]
        ids = [e.ids[:self.max_tokens - 2] for e in self.tokenizer.encode_batch(list(texts), add_special_tokens=False)]
        lengths = np.array([len(i) for i in ids])
        rows = np.flatnonzero(lengths)  # an empty prompt keeps a zero vector
        if len(rows):
            starts = np.concatenate([[0], np.cumsum(lengths[rows])[:-1]])
            sums = np.add.reduceat(self.table[np.concatenate([ids[r] for r in rows])], starts, axis=0)
            out[rows] = sums / lengths[rows, None]
        return out / np.clip(np.linalg.norm(out, axis=1, keepdims=True), 1e-12, None)


def cache_dir() -> Path:
    default = Path.home() / ".cache" / "ensemble-router" / "static"
    return Path(os.environ.get("ROUTER_STATIC_CACHE", default)).expanduser()


def static_encoder(encoder: "Encoder", directory: Path | None = None) -> StaticEncoder:
    """The static encoder of `encoder`, from the cache when a table of the right shape is there, else distilled
    and cached (written to a temporary name first, so an interrupted write is never read back)."""
    directory = directory or cache_dir()
    path = directory / f"{encoder.fingerprint}.npy"
    shape = (encoder.tokenizer.get_vocab_size(), encoder.dimensions)
    try:
        table = np.load(path, allow_pickle=False)
        if table.shape == shape and table.dtype == np.float32 and np.isfinite(table).all():
            return StaticEncoder(encoder, table)
    except (OSError, ValueError):
        pass  # absent or unreadable: distil it again
    table = distil(encoder)
    directory.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    with open(tmp, "wb") as handle:
        np.save(handle, table, allow_pickle=False)
    tmp.replace(path)
    return StaticEncoder(encoder, table)
