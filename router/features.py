"""Request features: the all-MiniLM-L6-v2 int8 ONNX sentence embedding (onnxruntime + tokenizers, no torch)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from models.catalogue import EncoderEntry, load_catalogue
from models.fetch import verified_path


class Encoder:
    """Mean-pooled, L2-normalised 384-d embeddings, as sentence-transformers computes them."""

    def __init__(self, entry: EncoderEntry | None = None, weights_dir: Path | None = None, threads: int = 1):
        entry = entry or load_catalogue().encoder
        model_file, tokenizer_file = (verified_path(w, weights_dir) for w in entry.weights)
        self.max_tokens = entry.max_input_tokens
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
        # batches of similar length: each batch is padded to its longest text, so mixed lengths waste most work
        order = np.argsort([len(t) for t in texts], kind="stable")
        for start in range(0, len(texts), batch_size):
            rows = order[start:start + batch_size]
            out[rows] = self._encode_batch([texts[i] for i in rows])
        return out

    def _encode_batch(self, texts: Sequence[str]) -> np.ndarray:
        encodings = self.tokenizer.encode_batch(list(texts))
        width = min(self.max_tokens, max(len(e.ids) for e in encodings))
        ids = np.zeros((len(texts), width), dtype=np.int64)
        mask = np.zeros_like(ids)
        for row, enc in enumerate(encodings):
            # keep [CLS] ... [SEP] when truncating, as the tokenizer's own truncation does
            tokens = enc.ids if len(enc.ids) <= width else enc.ids[:width - 1] + [enc.ids[-1]]
            ids[row, :len(tokens)] = tokens
            mask[row, :len(tokens)] = 1
        hidden = self.session.run(None, {"input_ids": ids, "attention_mask": mask,
                                         "token_type_ids": np.zeros_like(ids)})[0]
        summed = (hidden * mask[:, :, None]).sum(axis=1)
        pooled = summed / np.clip(mask.sum(axis=1, keepdims=True), 1, None)
        return pooled / np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
