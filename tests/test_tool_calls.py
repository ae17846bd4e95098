"""A request with tools goes only to a model that makes tool calls (catalogue `tool_calls: true`), and the calls
come back as OpenAI returns them, whole or streamed.

No model this project ships makes tool calls (the coder GGUFs write a call as text), so the model that makes them
is a fake: a stdlib HTTP server standing in for a hosted provider's API, which is outside this project. It
answers a request with tools by calling the first tool, and a request whose last message is a tool's result with
a sentence that quotes it. Everything else is real: Ray Serve on 127.0.0.1, the router, and the openai client."""
import copy
import http.server
import json
import threading

import httpx
import openai
import pytest

from models.catalogue import Catalogue, load_catalogue
from router.serving.local_ensemble import http_ok, serve_config, wait_for
from router.serving.live import deploy_config
from test_remote_model import RemoteApp, catalogue_with, remote_entry

TINY, HOSTED = "smollm2-135m", "hosted"
WEATHER = [{"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
ARGUMENTS = '{"city": "Paris"}'


class _ToolCallingAPI(http.server.BaseHTTPRequestHandler):
    """A fake of something outside this project: a hosted chat API that makes tool calls. It keeps every body."""

    bodies: list[dict] = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.bodies.append(body)
        last = body["messages"][-1]
        if body.get("tools") and last["role"] != "tool":
            name = (body.get("tool_choice") or {}).get("function", {}).get("name") if isinstance(
                body.get("tool_choice"), dict) else body["tools"][0]["function"]["name"]
            call = {"id": "call_1", "type": "function", "function": {"name": name, "arguments": ARGUMENTS}}
            message, finish = {"role": "assistant", "content": None, "tool_calls": [call]}, "tool_calls"
        else:
            message, finish = {"role": "assistant", "content": f"It says: {last['content']}"}, "stop"
        if body.get("stream"):
            return self._stream(message, finish)
        self._send("application/json", json.dumps({
            "id": "c1", "object": "chat.completion", "created": 0, "model": body["model"],
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19}}).encode())

    def _stream(self, message: dict, finish: str):
        """OpenAI's stream: the call's id and name first, then its arguments in two pieces."""
        if message.get("tool_calls"):
            call = message["tool_calls"][0]
            head = {"index": 0, "id": call["id"], "type": "function",
                    "function": {"name": call["function"]["name"], "arguments": ""}}
            deltas = [{"role": "assistant", "content": None, "tool_calls": [head]},
                      {"tool_calls": [{"index": 0, "function": {"arguments": ARGUMENTS[:9]}}]},
                      {"tool_calls": [{"index": 0, "function": {"arguments": ARGUMENTS[9:]}}]}]
        else:
            deltas = [{"role": "assistant", "content": message["content"]}]
        chunks = [{"choices": [{"index": 0, "delta": d, "finish_reason": None}]} for d in deltas]
        chunks += [{"choices": [{"index": 0, "delta": {}, "finish_reason": finish}]},
                   {"choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19}}]
        frame = {"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": "m"}
        events = "".join(f"data: {json.dumps({**frame, **c})}\n\n" for c in chunks) + "data: [DONE]\n\n"
        self._send("text/event-stream", events.encode())

    def _send(self, kind: str, data: bytes):
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_only_a_remote_model_may_say_it_makes_tool_calls():
    data = catalogue_with()
    data["models"] = [{**m, "tool_calls": True} if m["name"] == TINY else m for m in data["models"]]
    with pytest.raises(ValueError, match=f"model {TINY}: tool_calls is for a remote model"):
        Catalogue.model_validate(data)
    assert not any(m.tool_calls for m in load_catalogue().models)


@pytest.fixture(scope="module")
def tools_app(ensemble, tmp_path_factory):
    """A second application: the tiny model (the first application's, over HTTP) and, as the fallback, `hosted`,
    the fake tool-calling API. The tiny model's threshold 0 makes it confident of everything, so whatever
    reaches `hosted` was sent there because it makes tool calls."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ToolCallingAPI)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    folder = tmp_path_factory.mktemp("tools")
    catalogue = catalogue_with({**remote_entry(HOSTED, f"http://127.0.0.1:{server.server_address[1]}/v1",
                                               "hosted-model"), "tool_calls": True})
    catalogue["models"] = [remote_entry(TINY, f"{ensemble.base}/v1") if m["name"] == TINY else m
                           for m in catalogue["models"]]
    (folder / "catalogue.yaml").write_text(json.dumps(catalogue))
    base = serve_config(ensemble.port)
    app = copy.deepcopy(base["applications"][0])
    app.update(name="tools", route_prefix="/tools",
               runtime_env={"env_vars": {"ROUTER_CATALOGUE": str(folder / "catalogue.yaml")}})
    app["args"]["models"] = [TINY, HOSTED]
    ingress, tiny = (copy.deepcopy(next(d for d in app["deployments"] if d["name"] == n))
                     for n in ("RouterIngress", TINY))
    ingress["user_config"]["policy"].update(version="tools", fallback=HOSTED, profiles={}, models={
        TINY: {"threshold": 0.0, "tasks": ["chat", "code", "math"], "timeout_s": 90},
        HOSTED: {"timeout_s": 30}})
    app["deployments"] = [ingress, tiny, {**tiny, "name": HOSTED}]
    tools = RemoteApp(f"{ensemble.base}/tools", base, app, ensemble.dashboard)
    tools.deploy_policy(tools.policy())
    try:
        wait_for(lambda: http_ok(f"{tools.url}/healthz"), 300, "the tool-calling application")
        yield tools
    finally:
        deploy_config(base, ensemble.dashboard)
        server.shutdown()


@pytest.fixture
def api(tools_app):
    _ToolCallingAPI.bodies.clear()
    return openai.OpenAI(base_url=f"{tools_app.url}/v1", api_key="unused", max_retries=0, timeout=300)


@pytest.mark.serve
def test_a_request_with_tools_goes_to_the_model_that_makes_tool_calls(api):
    plain = api.chat.completions.with_raw_response.create(model="auto", messages=ASK, max_tokens=8)
    assert plain.headers["x-router-model"] == TINY and not _ToolCallingAPI.bodies
    raw = api.chat.completions.with_raw_response.create(model="auto", messages=ASK, tools=WEATHER, max_tokens=64)
    answer, sent = raw.parse(), _ToolCallingAPI.bodies[-1]
    assert raw.headers["x-router-model"] == HOSTED == answer.model
    assert f"only {HOSTED} answer" in answer.model_extra["router"]["reason"]
    call = answer.choices[0].message.tool_calls[0]
    assert (call.id, call.function.name, call.function.arguments) == ("call_1", "get_weather", ARGUMENTS)
    assert answer.choices[0].finish_reason == "tool_calls" and answer.choices[0].message.content is None
    assert sent["tools"] == WEATHER and "tool_choice" not in sent and sent["messages"] == ASK
    # the client runs the tool and sends its result: the conversation reaches the model as it was sent
    turn = ASK + [answer.choices[0].message.model_dump(exclude_none=True),
                  {"role": "tool", "tool_call_id": "call_1", "content": "18C and sunny"}]
    follow = api.chat.completions.create(model="auto", messages=turn, tools=WEATHER, max_tokens=64)
    assert follow.choices[0].message.content == "It says: 18C and sunny" and follow.model == HOSTED
    assert _ToolCallingAPI.bodies[-1]["messages"][1]["tool_calls"][0]["id"] == "call_1"
    assert _ToolCallingAPI.bodies[-1]["messages"][2] == turn[2]
    route = httpx.post(f"{api.base_url}route", json={"messages": ASK, "tools": WEATHER}, timeout=60).json()
    assert route["model"] == HOSTED and route["eligible"] == []


@pytest.mark.serve
def test_streamed_tool_calls_come_back_in_pieces_as_openai_sends_them(api):
    choice = {"type": "function", "function": {"name": "get_weather"}}
    stream = api.chat.completions.create(model="auto", messages=ASK, tools=WEATHER, tool_choice=choice,
                                         parallel_tool_calls=False, stream=True, max_tokens=64)
    pieces = [c.choices[0] for c in stream if c.choices]
    calls = [t for p in pieces for t in p.delta.tool_calls or []]
    assert calls[0].id == "call_1" and calls[0].function.name == "get_weather"
    assert "".join(t.function.arguments or "" for t in calls) == ARGUMENTS and len(calls) == 3
    assert pieces[-1].finish_reason == "tool_calls"
    sent = _ToolCallingAPI.bodies[-1]
    assert (sent["tool_choice"], sent["parallel_tool_calls"], sent["stream"]) == (choice, False, True)


@pytest.mark.serve
def test_tools_with_tool_choice_none_are_a_plain_request_and_a_model_without_tool_calls_is_refused(api):
    raw = api.chat.completions.with_raw_response.create(model="auto", messages=ASK, tools=WEATHER,
                                                        tool_choice="none", max_tokens=8)
    assert raw.headers["x-router-model"] == TINY and not _ToolCallingAPI.bodies
    with pytest.raises(openai.BadRequestError) as refused:
        api.chat.completions.create(model=TINY, messages=ASK, tools=WEATHER, max_tokens=8)
    error = refused.value.body
    assert (error["code"], error["param"]) == ("tool_calls_unsupported", "tools")
    assert error["message"] == f"{TINY} does not make tool calls; the models that do are ['{HOSTED}']"
    assert not _ToolCallingAPI.bodies


@pytest.mark.serve
def test_the_responses_api_routes_function_tools_the_same_way(api):
    """The Responses API's flat function tools, its function_call items and their outputs, whole and streamed."""
    tools = [{"type": "function", **WEATHER[0]["function"]}]
    raw = api.responses.with_raw_response.create(model="auto", input="What is the weather in Paris?", tools=tools)
    answer, sent = raw.parse(), _ToolCallingAPI.bodies[-1]
    assert raw.headers["x-router-model"] == HOSTED and sent["tools"] == WEATHER
    call = answer.output[0]
    assert [i.type for i in answer.output] == ["function_call"] and (call.name, call.arguments) == \
        ("get_weather", ARGUMENTS)
    follow = api.responses.create(model="auto", tools=tools, input=[
        {"role": "user", "content": "What is the weather in Paris?"},
        {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
        {"type": "function_call_output", "call_id": call.call_id, "output": "18C and sunny"}])
    assert follow.output_text == "It says: 18C and sunny"
    assert _ToolCallingAPI.bodies[-1]["messages"][1]["tool_calls"][0]["id"] == call.call_id
    events = list(api.responses.create(model="auto", input="What is the weather in Paris?", tools=tools, stream=True))
    deltas = [e.delta for e in events if e.type == "response.function_call_arguments.delta"]
    assert "".join(deltas) == ARGUMENTS and len(deltas) == 2
    assert events[-1].type == "response.completed" and events[-1].response.output[0].arguments == ARGUMENTS
