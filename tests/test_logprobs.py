"""Token logprobs in OpenAI's two shapes: chat's entries (one per token) and legacy completions' parallel lists,
converted both ways by hand-checked cases."""
from models.backend import entries_from_legacy, token_logprob
from router.serving.schemas import legacy_logprobs

RUNTIME_ENTRY = {"id": 19556, "token": "Hi", "bytes": [72, 105], "logprob": -0.5,
                 "top_logprobs": [{"id": 19556, "token": "Hi", "bytes": [72, 105], "logprob": -0.5},
                                  {"id": 26843, "token": "Hello", "logprob": -1.5},
                                  {"id": 17, "token": "!", "logprob": -3.0}]}


def test_a_runtime_entry_takes_openais_fields_and_as_many_alternatives_as_asked():
    assert token_logprob(RUNTIME_ENTRY, 2) == {
        "token": "Hi", "logprob": -0.5, "bytes": [72, 105],
        "top_logprobs": [{"token": "Hi", "logprob": -0.5, "bytes": [72, 105]},
                         {"token": "Hello", "logprob": -1.5, "bytes": [72, 101, 108, 108, 111]}]}  # bytes filled in
    assert token_logprob(RUNTIME_ENTRY, 0)["top_logprobs"] == []


def test_legacy_lists_and_chat_entries_convert_both_ways():
    legacy = {"tokens": ["Hi", " there"], "token_logprobs": [-0.5, -0.25],
              "top_logprobs": [{"Hi": -0.5, "Hey": -2.0}, {" there": -0.25}], "text_offset": [0, 2]}
    entries = [token_logprob(e, 5) for e in entries_from_legacy(legacy)]
    assert entries[1] == {"token": " there", "logprob": -0.25, "bytes": [32, 116, 104, 101, 114, 101],
                          "top_logprobs": [{"token": " there", "logprob": -0.25,
                                            "bytes": [32, 116, 104, 101, 114, 101]}]}
    assert legacy_logprobs(entries) == legacy
    assert legacy_logprobs(entries, offset=10)["text_offset"] == [10, 12]  # a stream's later piece
    assert legacy_logprobs(None) is None
    assert entries_from_legacy({"tokens": ["a"], "token_logprobs": [-1.0], "top_logprobs": None}) == \
        [{"token": "a", "logprob": -1.0, "top_logprobs": []}]
