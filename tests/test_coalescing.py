"""The stream coalescer on its own: which deltas it merges, what it sends at once, and that it closes the model's
stream. The sources here are hand-made async generators standing in for a model runtime's stream, so that the
arrival times are known; the real models' streams go through it in the end-to-end streaming tests."""
import asyncio
import time

import pytest

from router.serving.coalescing import coalesced, merge_deltas


def delta(text="", finish=None, out=0, logprobs=None, tool_calls=None):
    return {"text": text, "finish_reason": finish, "input_tokens": 5, "output_tokens": out, "logprobs": logprobs,
            "tool_calls": tool_calls}


async def source(deltas, gap_s=0.0, fail: Exception | None = None, closed: list | None = None):
    try:
        for d in deltas:
            await asyncio.sleep(gap_s)
            yield d
        if fail is not None:
            raise fail
    finally:
        if closed is not None:
            closed.append(True)


async def timed(pieces):
    started, seen = time.perf_counter(), []
    async for piece in pieces:
        seen.append((time.perf_counter() - started, piece))
    return seen


def test_merge_joins_text_and_logprobs_and_keeps_the_last_finish_and_the_largest_counts():
    merged = merge_deltas([delta("Hel", out=1, logprobs=[{"token": "Hel"}]), delta("lo", out=2),
                           delta("", finish="stop", out=2, logprobs=[{"token": ""}])])
    assert merged == {"text": "Hello", "finish_reason": "stop", "input_tokens": 5, "output_tokens": 2,
                      "logprobs": [{"token": "Hel"}, {"token": ""}], "tool_calls": None}
    assert merge_deltas([delta("a"), delta("b")])["logprobs"] is None  # not asked stays not asked


def test_interval_zero_passes_every_delta_through_unchanged():
    deltas = [delta(), delta("a", out=1), delta("b", out=2), delta(finish="stop", out=2)]
    seen = asyncio.run(timed(coalesced(source(deltas), 0)))
    assert [piece for _, piece in seen] == deltas


def test_the_first_token_goes_at_once_the_rest_in_fewer_pieces_and_nothing_is_lost():
    deltas = [delta()] + [delta(f"t{i} ", out=i + 1) for i in range(20)] + [delta(finish="length", out=20)]
    seen = asyncio.run(timed(coalesced(source(deltas, gap_s=0.01), 0.1)))
    pieces = [piece for _, piece in seen]
    assert pieces[0] == delta() and pieces[1]["text"] == "t0 "  # the role delta, then the first token alone
    assert seen[1][0] < 0.09  # not held for the interval (it came after two 10 ms gaps)
    assert "".join(p["text"] for p in pieces) == "".join(d["text"] for d in deltas)
    assert len(pieces) < len(deltas) / 2
    assert pieces[-1]["finish_reason"] == "length" and pieces[-1]["output_tokens"] == 20


def test_the_end_of_the_stream_goes_at_once_not_after_the_interval():
    deltas = [delta("a", out=1), delta("b", out=2), delta("c", finish="stop", out=3)]
    seen = asyncio.run(timed(coalesced(source(deltas, gap_s=0.01), 5.0)))
    assert [p["text"] for _, p in seen] == ["a", "bc"]
    assert seen[-1][0] < 2.0


def test_a_failure_mid_stream_comes_after_the_tokens_before_it():
    async def run():
        got = []
        with pytest.raises(RuntimeError, match="runtime died"):
            async for piece in coalesced(source([delta("a"), delta("b"), delta("c")], gap_s=0.01,
                                                fail=RuntimeError("runtime died")), 5.0):
                got.append(piece["text"])
        return got

    assert "".join(asyncio.run(run())) == "abc"


def test_a_tool_call_piece_goes_alone():
    call = [{"index": 0, "function": {"arguments": "{}"}}]
    deltas = [delta("a"), delta("b"), delta(tool_calls=call), delta("c"), delta(finish="tool_calls")]
    pieces = [p for _, p in asyncio.run(timed(coalesced(source(deltas, gap_s=0.01), 5.0)))]
    assert [p["tool_calls"] for p in pieces if p["tool_calls"]] == [call]
    assert [p["text"] for p in pieces] == ["a", "b", "", "c"]
    assert pieces[-1]["finish_reason"] == "tool_calls"


def test_a_consumer_that_stops_early_closes_the_models_stream():
    closed = []

    async def run():
        pieces = coalesced(source([delta(str(i)) for i in range(100)], gap_s=0.01, closed=closed), 0.05)
        async for _ in pieces:
            break
        await pieces.aclose()
        await asyncio.sleep(0)

    asyncio.run(run())
    assert closed == [True]
