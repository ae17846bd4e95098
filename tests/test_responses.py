"""The Responses API's shapes, checked against the official openai client's own models (validated, not merely
parsed): a whole Response, and the typed events of a stream that finishes, is cut short, or fails mid-way."""
import asyncio
import json

import pytest
from openai.types.responses import Response, ResponseItem, ResponseStreamEvent
from pydantic import TypeAdapter

from router.serving.response_output import input_item_objects, listed_items, response_events, response_object
from router.serving.responses import ResponsesRequest

EVENTS = TypeAdapter(ResponseStreamEvent)
ITEM = TypeAdapter(ResponseItem)
BODY = ResponsesRequest(input="hi", instructions="be brief", max_output_tokens=4)


def _delta(text="", finish=None, tokens_in=0, tokens_out=0) -> dict:
    """A model replica's stream delta (models/backend.py StreamDelta, as the replica sends it)."""
    return {"text": text, "finish_reason": finish, "input_tokens": tokens_in, "output_tokens": tokens_out}


def _events(deltas: list, fail: Exception | None = None) -> tuple[list[dict], list]:
    calls = []

    async def source():
        for d in deltas:
            yield d
        if fail is not None:
            raise fail

    async def run():
        stream = response_events(source(), "smollm2-135m", BODY, lambda exc: calls.append(("failed", exc)),
                                 lambda *finished: calls.append(("finished", finished)))
        return [chunk async for chunk in stream]

    out = []
    for chunk in asyncio.run(run()):
        kind, data = chunk.strip().split("\n")
        event = json.loads(data.removeprefix("data: "))
        assert kind == f"event: {event['type']}"
        EVENTS.validate_python(event)  # the official client's model of this event type accepts it
        out.append(event)
    return out, calls


def test_a_whole_answer_is_a_response_the_client_validates():
    body = response_object("smollm2-135m", BODY, "Hello there", "length", 7, 4, {"answered_by": "smollm2-135m"})
    response = Response.model_validate(body)
    assert response.output_text == "Hello there" and response.status == "incomplete"
    assert response.incomplete_details.reason == "max_output_tokens" and response.usage.total_tokens == 11
    assert response.instructions == "be brief" and body["router"]["answered_by"] == "smollm2-135m"
    done = Response.model_validate(response_object("m", BODY, "Hi", "stop", 7, 1, {}))
    assert (done.status, done.incomplete_details) == ("completed", None)


@pytest.mark.parametrize("finish,status", [("stop", "completed"), ("length", "incomplete")])
def test_a_stream_is_the_apis_typed_events_in_order(finish, status):
    events, calls = _events([_delta("Hel"), _delta("lo"), _delta(finish=finish), _delta(tokens_in=7, tokens_out=2)])
    assert [e["type"] for e in events] == [
        "response.created", "response.output_item.added", "response.content_part.added",
        "response.output_text.delta", "response.output_text.delta", "response.output_text.done",
        "response.content_part.done", "response.output_item.done", f"response.{status}"]
    assert [e["sequence_number"] for e in events] == list(range(9))
    last = Response.model_validate(events[-1]["response"])
    assert last.output_text == "Hello" and last.usage.input_tokens == 7 and last.status == status
    assert events[0]["response"]["id"] == last.id and events[3]["item_id"] == last.output[0].id
    assert calls == [("finished", (7, 2, "Hello"))]


def test_a_failure_mid_stream_ends_with_an_error_and_a_failed_response():
    events, calls = _events([_delta("Hel")], fail=RuntimeError("replica died"))
    assert [e["type"] for e in events][-3:] == ["response.output_text.delta", "error", "response.failed"]
    assert events[-2]["code"] == "model_failed_mid_stream" and "replica died" in events[-2]["message"]
    failed = Response.model_validate(events[-1]["response"])
    assert failed.status == "failed" and failed.error.message == events[-2]["message"]
    assert [kind for kind, _ in calls] == ["failed"]


WEATHER = {"type": "function", "name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


def test_function_calls_and_their_outputs_become_the_chats_tool_messages():
    body = ResponsesRequest(tools=[WEATHER], tool_choice={"type": "function", "name": "get_weather"}, input=[
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": '{"city": "Paris"}'},
        {"type": "function_call", "call_id": "c2", "name": "get_weather", "arguments": '{"city": "Rome"}'},
        {"type": "function_call_output", "call_id": "c1", "output": "18C"},
        {"type": "function_call_output", "call_id": "c2", "output": "22C"}])
    chat = body.chat
    assert chat.needs_tool_calls() and chat.tool_choice.function == {"name": "get_weather"}
    fields = chat.tool_fields()
    assert fields["tools"] == [{"type": "function", "function": {k: v for k, v in WEATHER.items() if k != "type"}}]
    assert fields["messages"][1:] == [
        {"role": "assistant", "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
            {"id": "c2", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "18C"},
        {"role": "tool", "tool_call_id": "c2", "content": "22C"}]


def test_a_whole_answer_that_calls_a_function_is_a_function_call_item():
    call = {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
    body = ResponsesRequest(input="Weather in Paris?", tools=[WEATHER])
    response = Response.model_validate(response_object("hosted", body, "", "tool_calls", 9, 5, {}, [call]))
    assert [item.type for item in response.output] == ["function_call"] and response.status == "completed"
    assert (response.output[0].call_id, response.output[0].arguments) == ("c1", '{"city": "Paris"}')
    assert response.tools[0].name == "get_weather" and response.tool_choice == "auto"


def test_streamed_function_calls_are_items_with_their_argument_deltas():
    pieces = [{"index": 0, "id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": ""}},
              {"index": 0, "function": {"arguments": '{"city": '}}, {"index": 0, "function": {"arguments": '"Paris"}'}}]
    deltas = [{**_delta(), "tool_calls": [piece]} for piece in pieces] + [_delta(finish="tool_calls"),
                                                                          _delta(tokens_in=9, tokens_out=5)]
    events, calls = _events(deltas)
    assert [e["type"] for e in events] == [
        "response.created", "response.output_item.added", "response.function_call_arguments.delta",
        "response.function_call_arguments.delta", "response.function_call_arguments.done",
        "response.output_item.done", "response.completed"]
    assert events[4]["arguments"] == '{"city": "Paris"}' and events[4]["name"] == "get_weather"
    last = Response.model_validate(events[-1]["response"])
    assert [(i.type, i.call_id, i.arguments) for i in last.output] == [("function_call", "c1", '{"city": "Paris"}')]
    assert calls == [("finished", (9, 5, ""))]


def test_a_continued_response_puts_the_stored_conversation_first_without_its_instructions():
    first = ResponsesRequest(input="Name a colour.", instructions="Answer in French.")
    answer = response_object("m", first, "Rouge", "stop", 5, 1, {})
    history = first.conversation_after(answer["output"])
    assert history == [{"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Rouge"}]
    follow = ResponsesRequest(input="And another?", instructions="Be brief.", previous_response_id=answer["id"])
    follow.continue_from(history)
    assert [(m.role, m.content) for m in follow.chat.messages] == [
        ("system", "Be brief."), ("user", "Name a colour."), ("assistant", "Rouge"), ("user", "And another?")]
    assert follow.conversation_after([])[:3] == [*history, {"role": "user", "content": "And another?"}]
    with pytest.raises(ValueError, match="at most 256 items"):
        follow.continue_from(history * 200)


def test_a_stored_function_call_is_continued_by_its_output():
    body = ResponsesRequest(input="Weather in Paris?", tools=[{"type": "function", "name": "get_weather"}])
    call = {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
    answer = response_object("hosted", body, "", "tool_calls", 9, 5, {}, [call])
    history = body.conversation_after(answer["output"])
    assert history[-1] == {"role": "assistant", "content": None, "tool_calls": [call]}
    follow = ResponsesRequest(input=[{"type": "function_call_output", "call_id": "c1", "output": "18C"}],
                              tools=[{"type": "function", "name": "get_weather"}], previous_response_id=answer["id"])
    follow.continue_from(history)
    assert [m.role for m in follow.chat.messages] == ["user", "assistant", "tool"]
    assert follow.chat.messages[1].model_extra["tool_calls"] == [call]
    with pytest.raises(ValueError, match="at least one message must have role 'user'"):  # nothing to continue
        ResponsesRequest(input=[{"type": "function_call_output", "call_id": "c1", "output": "18C"}])


def test_input_items_are_listed_as_the_client_validates_them():
    body = ResponsesRequest(input=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
                                   {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
                                   {"type": "function_call_output", "call_id": "c1", "output": "42"}])
    items = input_item_objects(body)
    parsed = [ITEM.validate_python(item) for item in items]  # the official client's model of each item
    assert [item.type for item in parsed] == ["message", "message", "function_call", "function_call_output"]
    assert parsed[0].content[0].text == "hi" and parsed[1].content[0].type == "output_text"
    newest = listed_items(items, "desc", 2, None)
    assert [i["type"] for i in newest["data"]] == ["function_call_output", "function_call"] and newest["has_more"]
    rest = listed_items(items, "desc", 2, newest["last_id"])
    assert [i["id"] for i in rest["data"]] == [items[1]["id"], items[0]["id"]] and not rest["has_more"]
    assert listed_items(items, "asc", 20, None)["first_id"] == items[0]["id"]
    with pytest.raises(ValueError, match="is not an input item of this response"):
        listed_items(items, "asc", 20, "msg_other")

