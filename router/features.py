"""Request features: the all-MiniLM-L6-v2 int8 ONNX sentence embedding (onnxruntime + tokenizers, no torch)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from models.catalogue import EncoderEntry, load_catalogue
from models.fetch import verified_path
from router.static_encoder import SUFFIX, StaticEncoder, static_encoder


class Encoder:
    """Mean-pooled, L2-normalised 384-d embeddings, as sentence-transformers computes them."""

    def __init__(self, entry: EncoderEntry | None = None, weights_dir: Path | None = None, threads: int = 1):
        entry = entry or load_catalogue().encoder
        model_file, tokenizer_file = (verified_path(w, weights_dir) for w in entry.weights)
        self.name = entry.name
        self.max_tokens = entry.max_input_tokens
        # what the embeddings depend on: the pinned files and the truncation (keys the offline embedding cache)
        self.fingerprint = "-".join(w.sha256[:16] for w in entry.weights) + f"-{self.max_tokens}"
        self.dimensions = entry.dimensions
        self.tokenizer = Tokenizer.from_file(str(tokenizer_file))
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(model_file), options, providers=["CPUExecutionProvider"])

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def encode(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        out = np.zeros((len(texts), self.dimensions), dtype=np.float32)
        if not len(texts):
            return out
        encodings = [self._truncated(e.ids) for e in self.tokenizer.encode_batch(list(texts))]
        for rows in length_groups([len(ids) for ids in encodings], batch_size):
            out[rows] = self._encode_ids([encodings[i] for i in rows])
        return out

    def _truncated(self, ids: list[int]) -> list[int]:
        # keep [CLS] ... [SEP] when truncating, as the tokenizer's own truncation does
        return ids if len(ids) <= self.max_tokens else ids[:self.max_tokens - 1] + [ids[-1]]

    def _encode_ids(self, rows: Sequence[list[int]]) -> np.ndarray:
        ids = np.zeros((len(rows), max(len(r) for r in rows)), dtype=np.int64)
        mask = np.zeros_like(ids)
        for row, tokens in enumerate(rows):
            ids[row, :len(tokens)] = tokens
            mask[row, :len(tokens)] = 1
        hidden = self.session.run(None, {"input_ids": ids, "attention_mask": mask,
                                         "token_type_ids": np.zeros_like(ids)})[0]
        summed = (hidden * mask[:, :, None]).sum(axis=1)
        pooled = summed / np.clip(mask.sum(axis=1, keepdims=True), 1, None)
        return pooled / np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)


def encoder_names(catalogue_encoder: str) -> list[str]:
    """What `router train --encoder` takes: the catalogue's encoder, then the static table distilled from it."""
    return [catalogue_encoder, catalogue_encoder + SUFFIX]


def check_encoder_name(name: str | None, catalogue_encoder: str) -> None:
    if name is not None and name not in encoder_names(catalogue_encoder):
        raise ValueError(f"unknown encoder {name!r}; known: {encoder_names(catalogue_encoder)}")


class Encoders:
    """The encoders a router artifact may name: the catalogue's transformer, and the static table distilled from
    it (router/static_encoder.py). Each is built once, on first use; every one shares the tokenizer, so token
    counts agree."""

    def __init__(self, base: Encoder):
        self.base = base
        self._built: dict[str, Encoder | StaticEncoder] = {base.name: base}

    def names(self) -> list[str]:
        return encoder_names(self.base.name)

    def get(self, name: str | None) -> Encoder | StaticEncoder:
        """The encoder called `name` (None: the catalogue's); ValueError naming the known ones otherwise."""
        check_encoder_name(name, self.base.name)
        name = name or self.base.name
        if name not in self._built:
            self._built[name] = static_encoder(self.base)
        return self._built[name]


def length_groups(lengths: Sequence[int], batch_size: int, slack: float = 1.25) -> list[np.ndarray]:
    """Indices in batches of similar token length: a batch is padded to its longest row and a padded token costs
    as much as a real one, so a batch closes at `batch_size` rows or when a row is `slack` times its shortest."""
    order = np.argsort(lengths, kind="stable")
    groups, start = [], 0
    for end in range(1, len(order) + 1):
        if end == len(order) or end - start == batch_size or lengths[order[end]] > slack * lengths[order[start]] + 2:
            groups.append(order[start:end])
            start = end
    return groups
