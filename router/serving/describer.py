"""Each answer's description for the decision store: its MiniLM embedding and its toxicity, computed after the
answer is sent, in batches, on a lowest-priority thread of the ingress.

On a small machine the models generate on every core; work done beside them slows the next answer. So the
embedding runs here on one niced thread (an encoder of its own with one ONNX thread, so that the work stays on
the niced thread) and only when the cores are otherwise idle; the toxicity of a whole batch is one call to the
moderation specialist. A failure leaves the rows without a description; the answers are long served.
"""
from __future__ import annotations

import logging
import os
import queue
import threading
from typing import Callable

import numpy as np

logger = logging.getLogger("ray.serve")
BATCH_ROWS, BATCH_WAIT_S = 32, 1.0


class AnswerDescriber:
    def __init__(self, encoder_factory: Callable[[], object], toxicity: Callable[[list[str]], list[float]],
                 record: Callable[[dict], None]):
        self._encoder_factory, self._toxicity, self._record = encoder_factory, toxicity, record
        self._queue: queue.Queue = queue.Queue()
        threading.Thread(target=self._run, name="answer-describer", daemon=True).start()

    def describe(self, row: dict, answer: str) -> None:
        """Queue a served answer; its row is written again with the embedding and toxicity when ready."""
        self._queue.put((row, answer))

    def _run(self) -> None:
        try:  # Linux: a thread's own nice value; the scheduler runs it when the models leave a core free
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        except (OSError, AttributeError):
            pass
        encoder = self._encoder_factory()
        while True:
            batch = [self._queue.get()]
            try:
                while len(batch) < BATCH_ROWS:
                    batch.append(self._queue.get(timeout=BATCH_WAIT_S))
            except queue.Empty:
                pass
            self._describe(encoder, batch)

    def _describe(self, encoder, batch: list[tuple[dict, str]]) -> None:
        answers = [answer for _, answer in batch]
        try:
            vectors, toxicity = encoder.encode(answers), self._toxicity(answers)
        except Exception as exc:
            logger.warning("%d answers left without embedding and toxicity: %s", len(batch), exc)
            return
        for (row, _), vector, tox in zip(batch, vectors, toxicity):
            self._record({**row, "response_embedding": np.asarray(vector, "<f4").tobytes(),
                          "response_toxicity": float(tox)})
