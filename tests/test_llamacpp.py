"""The llama.cpp backend with the real tiny model: a whole answer is gathered from llama.cpp's stream, so its
token counts match the runtime's usage, and an answer its caller stops waiting for stops generating."""
import asyncio
import time

import pytest

from models.backend import GenerationRequest
from models.catalogue import load_catalogue
from models.registry import make_backend

TINY = "smollm2-135m"


@pytest.fixture(scope="module")
def tiny():
    return make_backend(load_catalogue().model(TINY), threads=1)


def test_a_whole_answer_counts_the_whole_prompt_even_from_the_prompt_cache(tiny):
    request = GenerationRequest(messages=[{"role": "user", "content": "Count: 1, 2, 3"}], max_tokens=6)
    first, again = (asyncio.run(tiny.generate(request)) for _ in range(2))
    # the second prompt is nearly all served from llama.cpp's cache; the timings' prompt_n would say 1
    assert first.input_tokens == again.input_tokens > 10
    assert first.text == again.text and again.output_tokens == 6 and again.finish_reason == "length"
    assert again.mean_logprob is not None and again.mean_logprob < 0

    async def streamed():
        return [delta async for delta in tiny.stream(request)]
    last = asyncio.run(streamed())[-1]  # a served stream's usage, which the cost of the answer is computed from
    assert (last.input_tokens, last.output_tokens) == (first.input_tokens, 6)


def test_a_raw_completion_has_text_and_logprobs(tiny):
    answer = asyncio.run(tiny.generate(GenerationRequest(messages=[], prompt="def add(a, b):", max_tokens=8)))
    assert answer.text and answer.output_tokens == 8 and answer.mean_logprob is not None


def test_an_answer_nobody_waits_for_any_more_stops_generating(tiny):
    """A client that leaves, or a policy timeout that moves on, cancels the call: llama.cpp must stop, not run
    to max_tokens holding one of the model's slots (a non-streamed call used to)."""
    long = GenerationRequest(messages=[{"role": "user", "content": "Write a very long story about a robot."}],
                             max_tokens=2000, temperature=0.8)

    async def cpu_after_leaving(seconds: float) -> float:
        task = asyncio.create_task(tiny.generate(long))
        await asyncio.sleep(seconds)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        cpu = time.process_time()
        await asyncio.sleep(3)  # inside the loop: asyncio.run's end would wait for a runaway thread to finish
        return time.process_time() - cpu

    # a generation still running would burn about a core-second a second in this process
    assert asyncio.run(cpu_after_leaving(1.0)) < 0.5
