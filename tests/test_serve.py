"""End to end: real Ray Serve on 127.0.0.1, the real models, the official `openai` client."""
import json
import os
import time

import httpx
import pytest

from router.serving.local_ensemble import http_ok, metric_value, serve_config, wait_for

pytestmark = pytest.mark.serve

SMOL, CODER, LARGE = "smollm2-135m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"
GREETING = "Hi! How are you today?"
CODE = "Write a Python function that reverses a string."
HARD = ("A bakery sells cupcakes for $3 each and cookies for $1.50 each. On Monday it sold 48 cupcakes and twice as "
        "many cookies; on Tuesday it sold 25% fewer cupcakes and 10 more cookies than on Monday. How much money did "
        "the bakery make over both days? Solve it step by step.")


def ask(client, text, model="auto", max_tokens=24):
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": text}], max_tokens=max_tokens, temperature=0)
    return raw.parse(), raw.headers


@pytest.mark.parametrize("text,expected", [(CODE, CODER), (GREETING, SMOL), (HARD, LARGE)],
                         ids=["code->specialist", "greeting->tiny", "multi-step->fallback"])
def test_auto_routes_to_the_right_model(client, text, expected):
    completion, headers = ask(client, text)
    assert completion.model == expected
    assert headers["x-router-model"] == expected
    assert completion.choices[0].message.content.strip()
    scores = json.loads(headers["x-router-scores"])
    assert set(scores) == {SMOL, CODER, LARGE}
    assert headers["x-router-rule"] and headers["x-router-reason"]
    router = completion.model_extra["router"]
    assert router["answered_by"] == expected and router["thresholds"]


APPLES = "Tom has 3 apples and buys 5 more. How many apples does he have?"
PRIME = "Write a Python function that checks whether a number is prime."


def test_a_client_picks_a_policy_profile_with_the_model_name(ensemble, client):
    """'auto:NAME' decides with the profile's thresholds (RouteLLM's per-request threshold): the same prompt goes
    to a cheaper model under the shipped `economy` and to a larger one under `quality`."""
    import openai
    from router.store import DecisionStore

    economy = ensemble.policy()["policy"]["profiles"]["economy"]
    assert [ask(client, APPLES, model=m)[1]["x-router-model"] for m in ("auto", "auto:economy")] == [LARGE, CODER]
    assert [ask(client, PRIME, model=m)[1]["x-router-model"] for m in ("auto", "auto:quality")] == [CODER, LARGE]
    completion, headers = ask(client, APPLES, model="auto:economy")
    router = completion.model_extra["router"]
    assert headers["x-router-profile"] == router["profile"] == "economy" and router["thresholds"] == economy
    assert "x-router-profile" not in ask(client, APPLES)[1]
    with pytest.raises(openai.NotFoundError, match=r"no profile 'nope'; its profiles are \['quality', 'economy'\]"):
        ask(client, APPLES, model="auto:nope")
    routed = httpx.post(f"{ensemble.base}/v1/route", json={"model": "auto:economy",
                                                          "messages": [{"role": "user", "content": APPLES}]}).json()
    assert (routed["model"], routed["profile"]) == (CODER, "economy")
    wait_for(lambda: metric_value(httpx.get(ensemble.metrics, timeout=10).text, "ray_router_requests",
                                  profile="economy", model=CODER), 120, "the profile in router_requests", interval=2)
    store = DecisionStore(os.environ["ROUTER_STORE_URL"])  # the same database the ingress writes
    try:
        row = wait_for(lambda: store.decision(headers["x-request-id"]), 30, "the decision in the store")
        assert (row["profile"], row["model"]) == ("economy", CODER)
    finally:
        store.close()


def test_a_named_model_is_pinned(client):
    completion, headers = ask(client, GREETING, model=LARGE)
    assert completion.model == LARGE and headers["x-router-rule"] == "pinned"


def test_sampling_penalties_reach_the_model(client):
    """presence_penalty and frequency_penalty are applied, not dropped like unknown fields: at temperature 0 the
    same prompt answers the same each time without them and differently with either one."""
    def answer(**penalty):
        return client.chat.completions.create(
            model=SMOL, messages=[{"role": "user", "content": "Repeat the word cat many times."}], max_tokens=30,
            temperature=0, seed=1, **penalty).choices[0].message.content

    plain = answer()
    assert answer() == plain
    assert answer(frequency_penalty=2.0) != plain
    assert answer(presence_penalty=2.0) != plain
    completion = client.completions.create(model=SMOL, prompt="cat cat cat cat", max_tokens=16, temperature=0, seed=1)
    penalised = client.completions.create(model=SMOL, prompt="cat cat cat cat", max_tokens=16, temperature=0, seed=1,
                                          frequency_penalty=2.0)
    assert penalised.choices[0].text != completion.choices[0].text


def test_token_logprobs_come_back_as_openai_returns_them(client):
    """Chat's logprobs/top_logprobs and legacy completions' logprobs, from the model that answered; none unasked."""
    ask = {"model": SMOL, "messages": [{"role": "user", "content": "Name three colours of the rainbow."}],
           "max_tokens": 8, "temperature": 0, "seed": 1}
    answer = client.chat.completions.create(logprobs=True, top_logprobs=2, **ask)
    entries = answer.choices[0].logprobs.content
    assert "".join(e.token for e in entries) == answer.choices[0].message.content
    assert len(entries) == answer.usage.completion_tokens == 8
    for e in entries:  # at temperature 0 the token chosen is the likeliest, and its logprob is its own
        assert len(e.top_logprobs) == 2 and e.top_logprobs[0].logprob >= e.top_logprobs[1].logprob
        assert e.token == e.top_logprobs[0].token and e.logprob == e.top_logprobs[0].logprob <= 0
        assert bytes(e.bytes).decode() == e.token
    plain = client.chat.completions.create(**ask)
    assert plain.choices[0].logprobs is None and plain.choices[0].message.content == answer.choices[0].message.content
    streamed = client.chat.completions.create(logprobs=True, stream=True, **ask)
    tokens = [e for c in streamed if c.choices and c.choices[0].logprobs for e in c.choices[0].logprobs.content]
    assert [(t.token, t.top_logprobs) for t in tokens] == [(e.token, []) for e in entries]
    legacy = client.completions.create(model=SMOL, prompt="def add(a, b):", max_tokens=6, temperature=0, logprobs=2)
    lp = legacy.choices[0].logprobs
    assert "".join(lp.tokens) == legacy.choices[0].text and len(lp.token_logprobs) == len(lp.tokens) == 6
    assert lp.text_offset == [len("".join(lp.tokens[:i])) for i in range(6)]
    assert all(len(top) == 2 and top[token] == logprob for top, token, logprob in
               zip(lp.top_logprobs, lp.tokens, lp.token_logprobs))
    assert client.completions.create(model=SMOL, prompt="def add(a, b):", max_tokens=6).choices[0].logprobs is None


CAT = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
       "required": ["name", "age"], "additionalProperties": False}


def test_a_json_response_format_is_what_the_model_answers_in(client):
    """json_schema and json_object reach the model, whose sampler follows them (llama.cpp's grammar): the tiny
    model, which wraps its JSON in a code fence when merely asked, answers bare JSON of the schema."""
    import openai

    ask = {"model": SMOL, "messages": [{"role": "user", "content": "Describe a cat as JSON with its name and age."}],
           "max_tokens": 48, "temperature": 0, "seed": 1}
    plain = client.chat.completions.create(**ask).choices[0].message.content
    with pytest.raises(json.JSONDecodeError):  # unguided, it is not JSON: what follows is the grammar's doing
        json.loads(plain)
    schema = {"type": "json_schema", "json_schema": {"name": "cat", "schema": CAT, "strict": True}}
    answer = client.chat.completions.create(response_format=schema, **ask)
    assert answer.choices[0].finish_reason == "stop"
    cat = json.loads(answer.choices[0].message.content)
    assert set(cat) == {"name", "age"} and isinstance(cat["name"], str) and isinstance(cat["age"], int)
    streamed = client.chat.completions.create(response_format=schema, stream=True, **ask)
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == \
        answer.choices[0].message.content
    routed = client.chat.completions.create(response_format={"type": "json_object"}, **{**ask, "model": "auto"})
    assert routed.choices[0].message.content.lstrip().startswith("{")
    # a schema JSON Schema allows but llama.cpp cannot follow: each model refuses it, and that is the client's 400
    remote_ref = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"$ref": "https://example.com/s"}}}
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(response_format=remote_ref, **ask)
    message = refused.value.body["message"]
    assert "every candidate model refused the request" in message and "only references into the same document" in \
        message and SMOL in message and LARGE in message
    assert client.chat.completions.create(**ask).choices[0].message.content == plain  # and it keeps serving


def test_the_responses_api_answers_as_the_chat_does(client):
    """OpenAI's Responses API through the official client: the instructions and input are the chat's system and
    user messages, routed the same way; whole, streamed as typed events, and with a JSON schema."""

    colours = "Name three colours of the rainbow."
    chat = client.chat.completions.create(model=SMOL, max_tokens=8, temperature=0, messages=[
        {"role": "system", "content": "Answer in French."}, {"role": "user", "content": colours}])
    raw = client.responses.with_raw_response.create(model=SMOL, instructions="Answer in French.", input=colours,
                                                    max_output_tokens=8, temperature=0)
    answer = raw.parse()
    assert answer.output_text == chat.choices[0].message.content and raw.headers["x-router-model"] == SMOL
    assert (answer.status, answer.incomplete_details.reason) == ("incomplete", "max_output_tokens")
    assert answer.usage.output_tokens == 8 == chat.usage.completion_tokens
    assert answer.usage.input_tokens == chat.usage.prompt_tokens and answer.model_extra["router"]["answered_by"] == SMOL
    events = list(client.responses.create(model=SMOL, instructions="Answer in French.", input=colours,
                                          max_output_tokens=8, temperature=0, stream=True))
    kinds = [e.type for e in events]
    assert kinds[:3] == ["response.created", "response.output_item.added", "response.content_part.added"]
    assert kinds[-4:] == ["response.output_text.done", "response.content_part.done", "response.output_item.done",
                          "response.incomplete"]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == answer.output_text
    assert events[-1].response.output_text == answer.output_text and events[-1].response.usage.output_tokens == 8
    routed = client.responses.with_raw_response.create(model="auto", input=CODE, max_output_tokens=8)
    assert routed.headers["x-router-model"] == CODER and routed.parse().model == CODER
    cat = client.responses.create(model=SMOL, input="Describe a cat as JSON with its name and age.", temperature=0,
                                  max_output_tokens=48, text={"format": {"type": "json_schema", "name": "cat",
                                                                         "schema": CAT}})
    assert cat.status == "completed" and set(json.loads(cat.output_text)) == {"name", "age"}


def test_a_stored_response_is_retrieved_continued_and_deleted(client):
    """A response is kept (OpenAI's default): retrieved, its input items listed, continued by previous_response_id
    as the whole conversation would be by the chat (without the earlier instructions), and deleted; with
    store: false, or after the delete, it is not found."""
    import openai

    colours, again = "Name three colours of the rainbow.", "Name one more."
    first = client.responses.create(model=SMOL, instructions="Answer in French.", input=colours,
                                    max_output_tokens=12, temperature=0)
    assert first.store is True and client.responses.retrieve(first.id).output_text == first.output_text
    assert [item.content[0].text for item in client.responses.input_items.list(first.id).data] == [colours]
    follow = client.responses.create(model=SMOL, input=again, previous_response_id=first.id, max_output_tokens=12,
                                     temperature=0)
    chat = client.chat.completions.create(model=SMOL, max_tokens=12, temperature=0, messages=[
        {"role": "user", "content": colours}, {"role": "assistant", "content": first.output_text},
        {"role": "user", "content": again}])
    assert follow.output_text == chat.choices[0].message.content
    assert follow.usage.input_tokens == chat.usage.prompt_tokens
    events = list(client.responses.create(model=SMOL, input=again, previous_response_id=follow.id,
                                          max_output_tokens=4, temperature=0, stream=True))
    assert events[-1].response.store is True
    assert client.responses.retrieve(events[-1].response.id).output_text == events[-1].response.output_text
    client.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError, match="is not stored here"):
        client.responses.retrieve(first.id)
    with pytest.raises(openai.NotFoundError, match="is not stored here") as gone:
        client.responses.create(model=SMOL, input=again, previous_response_id=first.id)
    assert gone.value.body["param"] == "previous_response_id"
    unkept = client.responses.create(model=SMOL, input=colours, max_output_tokens=4, store=False)
    assert unkept.store is False
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(unkept.id)
    assert client.responses.retrieve(follow.id).id == follow.id  # the chain's later links stay


def test_models_endpoint_lists_auto_its_profiles_and_every_model(client):
    assert {m.id for m in client.models.list().data} == {"auto", "auto:economy", "auto:quality", SMOL, CODER, LARGE}
    assert client.models.retrieve("auto:economy").id == "auto:economy"
    assert client.models.retrieve(LARGE).model_extra["fallback"] is True
    assert client.models.retrieve(SMOL).model_extra["fallback"] is False


def test_route_decides_without_generating(ensemble):
    reply = httpx.post(f"{ensemble.base}/v1/route", json={"model": "auto", "messages": [{"role": "user", "content": CODE}]})
    assert reply.status_code == 200
    body = reply.json()
    assert body["model"] == CODER and body["task"] == "code" and "choices" not in body
    assert reply.headers["x-router-model"] == CODER


@pytest.mark.parametrize("body,status,fragment", [
    (b'{"model": "auto", "messages": [', 400, "not valid JSON"),
    (b'{"model": "auto"}', 400, "messages: Field required"),
    (b'{"model": "auto", "messages": "hello"}', 400, "messages"),
    (b'{"model": "auto", "messages": [{"role": "user", "content": "hi"}], "max_tokens": "many"}', 400, "max_tokens"),
    (b'{"model": "auto", "messages": [{"role": "user", "content": "   "}]}', 400, "empty content"),
    (b'{"model": "auto", "messages": [{"role": "wizard", "content": "hi"}]}', 400, "role"),
    (b'{"model": "gpt-9", "messages": [{"role": "user", "content": "hi"}]}', 404, "model 'gpt-9' does not exist"),
], ids=["malformed-json", "missing-messages", "messages-wrong-type", "max-tokens-wrong-type", "empty-content",
        "unknown-role", "unknown-model"])
def test_bad_requests_get_a_4xx_with_a_message(ensemble, body, status, fragment):
    reply = httpx.post(f"{ensemble.base}/v1/chat/completions", content=body,
                       headers={"content-type": "application/json"})
    assert reply.status_code == status
    assert fragment in reply.json()["error"]["message"]
    assert httpx.get(f"{ensemble.base}/healthz").status_code == 200  # and it keeps serving


def test_openai_client_sees_an_unknown_model_as_not_found(client):
    import openai

    with pytest.raises(openai.NotFoundError):
        ask(client, GREETING, model="gpt-9")


def _policy(ensemble) -> dict:
    return ensemble.policy()


def _deploy_policy(ensemble, policy: dict) -> None:
    ensemble.deploy_policy(policy)


def test_live_policy_edits(ensemble, client, tmp_path):
    before = _policy(ensemble)
    original = before["policy"]
    strict = json.loads(json.dumps(original))
    strict["version"] = "everything-to-fallback"
    for name in (SMOL, CODER):
        strict["models"][name]["auto_route"] = False

    # a streamed answer is in flight (its first token read) while the policy changes; it must complete
    with client.chat.completions.with_streaming_response.create(
            model="auto", messages=[{"role": "user", "content": CODE}], max_tokens=120, temperature=0,
            stream=True) as in_flight:
        chunks = in_flight.parse()
        first = next(c for c in chunks if c.choices and c.choices[0].delta.content)  # a model token arrived
        _deploy_policy(ensemble, strict)
        try:
            wait_for(lambda: _policy(ensemble)["version"] == "everything-to-fallback", 60, "the edit to go live")
            after = _policy(ensemble)
            assert after["replica_pid"] == before["replica_pid"]  # swapped in place, no restart
            completion, headers = ask(client, GREETING)
            # out of automatic routing, the small models are not eligible: the fallback answers
            assert completion.model == LARGE and headers["x-router-rule"] == "fallback_no_eligible_model"
            rest = list(chunks)
            assert first.model == CODER and rest[-1].choices[0].finish_reason in ("stop", "length")
        except BaseException:
            _deploy_policy(ensemble, original)
            raise
    try:
        # an invalid edit that reaches the server is refused there, and routing stays as it was
        broken = json.loads(json.dumps(original))
        broken["version"] = "broken"
        broken["fallback"] = "gpt-9"
        broken["models"][SMOL]["threshold"] = "high"
        _deploy_policy(ensemble, broken)
        wait_for(lambda: _policy(ensemble)["last_rejected_edit"], 60, "the bad edit to be refused")
        refused = _policy(ensemble)
        assert refused["version"] == "everything-to-fallback"
        assert "fallback: 'gpt-9' must be one of the policy's models" in refused["last_rejected_edit"]
        assert "models.smollm2-135m.threshold" in refused["last_rejected_edit"]
        assert ask(client, GREETING)[0].model == LARGE
    finally:
        _deploy_policy(ensemble, original)
        wait_for(lambda: _policy(ensemble)["version"] == original["version"], 60, "the original policy")
    assert ask(client, GREETING)[0].model == SMOL


def test_policy_apply_cli_refuses_a_bad_file_before_sending(ensemble, tmp_path, capsys):
    from router.cli import main

    bad = tmp_path / "bad.yaml"
    bad.write_text("version: x\nfallback: gpt-9\nmodels:\n  smollm2-135m: {threshold: 2x}\n")
    assert main(["policy", "apply", str(bad), "--address", ensemble.dashboard]) == 2
    err = capsys.readouterr().err
    assert "bad.yaml:4: models.smollm2-135m.threshold" in err and "bad.yaml:2: fallback" in err
    assert _policy(ensemble)["version"] != "x"


def test_streaming_names_the_model_before_the_first_token(client):
    with client.chat.completions.with_streaming_response.create(
            model="auto", messages=[{"role": "user", "content": GREETING}], max_tokens=16, temperature=0,
            stream=True) as response:
        assert response.headers["x-router-model"] == SMOL  # known before any token is read
        chunks = list(response.parse())
    assert {c.model for c in chunks} == {SMOL}
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).strip()
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")


def test_train_then_calibrate_gives_a_policy_the_server_accepts_live(ensemble, client, tmp_path):
    import yaml

    from router.cli import main

    artifact = tmp_path / "router.json"
    assert main(["train", "--table", "data/outcomes/default.csv", "--out", str(artifact)]) == 0
    config = serve_config(ensemble.port)
    config_path = tmp_path / "serve_config.yaml"
    policy = config["applications"][0]["deployments"][0]["user_config"]["policy"]
    policy["classifier"] = str(artifact)
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    assert main(["calibrate", "--table", "data/outcomes/default.csv", "--policy", str(config_path),
                 "--keep-quality", "0.95", "--threshold-on", "advantage"]) == 0
    calibrated = yaml.safe_load(config_path.read_text())["applications"][0]["deployments"][0]["user_config"]["policy"]
    assert calibrated["version"].startswith("calibrated-")
    original = _policy(ensemble)["policy"]
    try:
        assert main(["policy", "apply", str(config_path), "--config", str(config_path),
                     "--address", ensemble.dashboard]) == 0
        wait_for(lambda: _policy(ensemble)["version"] == calibrated["version"], 60, "the calibrated policy")
        live = _policy(ensemble)
        assert live["last_rejected_edit"] is None and live["policy"]["classifier"] == str(artifact)
        assert {m: p["threshold"] for m, p in live["policy"]["models"].items()} == \
            {m: p["threshold"] for m, p in calibrated["models"].items()}
        assert httpx.post(f"{ensemble.base}/v1/route", json={"messages": [{"role": "user", "content": CODE}]}
                          ).json()["policy_version"] == calibrated["version"]
        # the thresholds are now held to each small model's standing against the fallback
        assert calibrated["threshold_on"] == live["policy"]["threshold_on"] == "advantage"
        completion, headers = ask(client, CODE, max_tokens=8)
        router = completion.model_extra["router"]
        assert f"standing against {LARGE}" in headers["x-router-reason"] and router["confidence"]
        scores = router["scores"]
        for model, held in router["confidence"].items():
            assert held == pytest.approx((1 + scores[model] - scores[LARGE]) / 2, abs=1e-3)
    finally:
        _deploy_policy(ensemble, original)
        wait_for(lambda: _policy(ensemble)["version"] == original["version"], 60, "the original policy")


def test_every_response_carries_a_request_id(ensemble):
    given = httpx.post(f"{ensemble.base}/v1/route", json={"messages": [{"role": "user", "content": GREETING}]},
                       headers={"x-request-id": "trace-42"})
    assert given.headers["x-request-id"] == "trace-42"
    first = httpx.post(f"{ensemble.base}/v1/chat/completions", content=b"{broken")
    second = httpx.post(f"{ensemble.base}/v1/chat/completions", content=b"{broken")
    assert first.status_code == 400 and first.headers["x-request-id"]
    assert first.headers["x-request-id"] != second.headers["x-request-id"]


def test_every_answer_lands_in_the_store_and_feedback_rates_it(ensemble, client):
    from router.store import DecisionStore

    completion, headers = ask(client, GREETING)
    request_id = headers["x-request-id"]
    store = DecisionStore(os.environ["ROUTER_STORE_URL"])  # the same database the ingress writes
    try:
        row = wait_for(lambda: store.decision(request_id), 30, "the decision in the store")
        assert (row["model"], row["chosen"], row["rule"]) == (SMOL, SMOL, headers["x-router-rule"])
        assert row["endpoint"] == "chat.completions" and row["policy_version"] == headers["x-router-policy-version"]
        assert set(row["scores"]) == {SMOL, CODER, LARGE} and row["thresholds"] and row["task"] == "chat"
        assert len(row["prompt_embedding"]) == 384 * 4 and len(row["prompt_sha256"]) == 64
        assert row["prompt_embedding_encoder"] == "minilm-l6-v2"  # the shipped router's own encoder
        assert row["input_tokens"] > 0 and row["output_tokens"] > 0 and row["cost"] > 0 and row["latency_s"] > 0
        assert row["prompt_text"] is None and row["response_text"] is None  # text is off by default

        url = f"{ensemble.base}/v1/feedback"
        reply = httpx.post(url, json={"request_id": request_id, "rating": "dislike", "comment": "too short",
                                      "metadata": {"ui": "thumbs"}})
        assert reply.status_code == 200 and reply.headers["x-request-id"]
        assert (reply.json()["model"], reply.json()["score"], reply.json()["rating"]) == (SMOL, 0.0, "dislike")
        got = store.feedback_for(request_id)
        assert (got["score"], got["rating"], got["comment"], got["extra"]) == (0.0, "dislike", "too short", {"ui": "thumbs"})
        assert httpx.post(url, json={"request_id": request_id, "rating": 5}).status_code == 200
        assert (store.feedback_for(request_id)["rating"], store.feedback_for(request_id)["score"]) == ("5", 1.0)

        unknown = httpx.post(url, json={"request_id": "never-seen", "score": 1})
        assert unknown.status_code == 404 and "never-seen" in unknown.json()["error"]["message"]
        for bad, field in (({"request_id": request_id, "rating": 7}, "rating"),
                           ({"request_id": request_id, "score": 7}, "score"),
                           ({"request_id": request_id}, "give a score")):
            reply = httpx.post(url, json=bad)
            assert reply.status_code == 400 and field in reply.json()["error"]["message"], reply.text
    finally:
        store.close()


def test_the_answer_cache_gives_a_greedy_answer_again_and_an_edit_starts_afresh(ensemble, client):
    """Policy `cache` on: the same greedy request gets the same answer without a generation (cost 0 in the store),
    whole or streamed (a stream is replayed as one); a sampled one is not cached; a policy edit (a new version)
    misses."""
    from router.store import DecisionStore

    original = _policy(ensemble)["policy"]
    cached = json.loads(json.dumps(original))
    cached["version"], cached["cache"] = "answer-cache", {"enabled": True, "ttl_s": 600, "max_entries": 8}
    _deploy_policy(ensemble, cached)
    store = DecisionStore(os.environ["ROUTER_STORE_URL"])  # the same database the ingress writes
    try:
        wait_for(lambda: _policy(ensemble)["version"] == "answer-cache", 60, "the caching policy")
        first, first_headers = ask(client, GREETING)
        again, headers = ask(client, GREETING)
        assert (first_headers["x-router-cache"], headers["x-router-cache"]) == ("miss", "hit")
        assert again.choices[0].message.content == first.choices[0].message.content and again.id != first.id
        assert again.model_extra["router"]["cache"] == "hit" and again.model == first.model == SMOL
        assert headers["x-router-rule"] == first_headers["x-router-rule"]  # decided as usual
        row = wait_for(lambda: store.decision(headers["x-request-id"]), 30, "the cache hit's row")
        assert row["cost"] == 0.0 and row["model"] == SMOL and row["output_tokens"] == again.usage.completion_tokens
        assert wait_for(lambda: store.decision(first_headers["x-request-id"]), 30, "the miss's row")["cost"] > 0

        def greet(text: str, cache_control: str | None = None):
            return client.chat.completions.with_raw_response.create(
                model="auto", messages=[{"role": "user", "content": text}], max_tokens=24, temperature=0,
                extra_headers={"cache-control": cache_control} if cache_control else None).headers

        assert greet(GREETING, "no-cache")["x-router-cache"] == "bypass"  # the client asked for a fresh answer
        assert "x-router-cache" not in greet("Hello there!", "no-store")  # nothing of it kept...
        assert greet("Hello there!")["x-router-cache"] == "miss"  # ...so the same request misses
        sampled = client.chat.completions.with_raw_response.create(
            model="auto", messages=[{"role": "user", "content": GREETING}], max_tokens=24, temperature=0.7)
        assert "x-router-cache" not in sampled.headers

        def stream():
            raw = client.chat.completions.with_raw_response.create(
                model="auto", messages=[{"role": "user", "content": GREETING}], max_tokens=24, temperature=0,
                stream=True, stream_options={"include_usage": True})
            chunks = list(raw.parse())  # read to its end
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            return raw.headers, text, [c.choices[0].finish_reason for c in chunks if c.choices], chunks[-1].usage

        streamed = [stream(), stream()]
        assert [headers["x-router-cache"] for headers, *_ in streamed] == ["miss", "hit"]  # not the whole answer's
        (_, text, finishes, usage), (hit_headers, hit_text, hit_finishes, hit_usage) = streamed
        assert hit_text == text and text and hit_finishes == finishes and hit_usage == usage
        assert hit_headers["x-router-model"] == SMOL and finishes[-1] in ("stop", "length")
        row = wait_for(lambda: store.decision(hit_headers["x-request-id"]), 30, "the streamed hit's row")
        assert row["cost"] == 0.0 and row["output_tokens"] == usage.completion_tokens

        def respond():  # the Responses API's events: the same chat to the model, so rendered from the same deltas
            raw = client.responses.with_raw_response.create(model="auto", input=GREETING, max_output_tokens=24,
                                                             temperature=0, stream=True, store=False)
            done = [event for event in raw.parse() if event.type in ("response.completed", "response.incomplete")]
            return raw.headers["x-router-cache"], done[0].response.output_text

        (miss, said), (hit, said_again) = respond(), respond()
        assert (miss, hit) == ("hit", "hit") and said_again == said == text
        _deploy_policy(ensemble, {**cached, "version": "answer-cache-2"})
        wait_for(lambda: _policy(ensemble)["version"] == "answer-cache-2", 60, "the edited caching policy")
        assert ask(client, GREETING)[1]["x-router-cache"] == "miss"
    finally:
        store.close()
        _deploy_policy(ensemble, original)
        wait_for(lambda: _policy(ensemble)["version"] == original["version"], 60, "the original policy")
    assert "x-router-cache" not in ask(client, GREETING)[1]  # off, as shipped


def test_a_model_that_times_out_falls_back_with_the_reason_stated(ensemble, client):
    original = _policy(ensemble)["policy"]
    slow = json.loads(json.dumps(original))
    slow["version"] = "coder-times-out"
    slow["models"][CODER]["timeout_s"] = 0.001
    _deploy_policy(ensemble, slow)
    try:
        wait_for(lambda: _policy(ensemble)["version"] == "coder-times-out", 60, "the timeout policy")
        completion, headers = ask(client, CODE)
        assert headers["x-router-rule"] == "cheapest_confident"  # the router chose the code model...
        assert completion.model == LARGE and headers["x-router-model"] == LARGE  # ...the fallback answered
        assert "qwen2.5-coder-0.5b timed out after 0.001s" in headers["x-router-fallback"]
        assert completion.model_extra["router"]["fallback"].startswith("qwen2.5-coder-0.5b timed out")
        assert completion.choices[0].message.content.strip()
    finally:
        _deploy_policy(ensemble, original)
        wait_for(lambda: _policy(ensemble)["version"] == original["version"], 60, "the original policy")


def test_embeddings_through_the_official_client(client, ensemble):
    import math

    import openai

    result = client.embeddings.create(model="auto", input=["How do I sort a list in Python?",
                                                           "Sorting a Python list", "The weather is nice today."])
    vectors = [d.embedding for d in result.data]
    assert result.model == "minilm-l6-v2" and len(vectors) == 3 and all(len(v) == 384 for v in vectors)
    assert all(abs(math.sqrt(sum(x * x for x in v)) - 1) < 1e-3 for v in vectors)
    cos = lambda a, b: sum(x * y for x, y in zip(a, b))  # noqa: E731
    assert cos(vectors[0], vectors[1]) > cos(vectors[0], vectors[2]) + 0.2
    as_floats = httpx.post(f"{ensemble.base}/v1/embeddings", json={"model": "minilm-l6-v2", "input": "Sorting a Python list",
                                                                   "encoding_format": "float"}).json()
    assert max(abs(a - b) for a, b in zip(as_floats["data"][0]["embedding"], vectors[1])) < 1e-5
    assert result.usage.prompt_tokens > 0
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="gpt-9", input="hi")
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model="auto", input=["fine", "  "])


def test_a_conversation_keeps_its_tier(client):
    import uuid

    session = f"conv-{uuid.uuid4().hex[:8]}"

    def turn(text, user):
        raw = client.chat.completions.with_raw_response.create(
            model="auto", messages=[{"role": "user", "content": text}], max_tokens=16, temperature=0, user=user)
        return raw.parse().model, raw.headers["x-router-rule"]

    assert turn(CODE, session)[0] == CODER
    assert turn("Thank you, that's great!", session) == (CODER, "session_floor")
    assert turn("Thank you, that's great!", f"other-{session}")[0] == SMOL  # a new conversation starts cheap


def test_a_chain_of_responses_keeps_its_tier(client):
    """previous_response_id makes a conversation: a follow-up keeps the tier its chain reached, with no session id."""
    def turn(text, previous=None):
        raw = client.responses.with_raw_response.create(model="auto", input=text, max_output_tokens=8, temperature=0,
                                                        previous_response_id=previous)
        return raw.parse(), raw.headers["x-router-rule"]

    first, _ = turn(CODE)
    assert first.model == CODER
    second, rule = turn("Thank you, that's great!", first.id)
    assert (second.model, rule) == (CODER, "session_floor")
    assert (turn("Thanks again!", second.id)[0].model, turn("Thank you, that's great!")[0].model) == (CODER, SMOL)


def test_past_capacity_requests_get_answers_or_fast_503s(ensemble):
    import asyncio

    sent = 60  # the tiny model takes 8 at a time and queues 32 more (serve_config.yaml)

    async def one(http):
        started = time.monotonic()
        reply = await http.post(f"{ensemble.base}/v1/chat/completions", json={
            "model": SMOL, "messages": [{"role": "user", "content": GREETING}], "max_tokens": 24, "temperature": 0})
        return reply.status_code, reply.headers.get("retry-after"), time.monotonic() - started

    async def flood():
        async with httpx.AsyncClient(timeout=180) as http:
            return await asyncio.wait_for(asyncio.gather(*(one(http) for _ in range(sent))), timeout=300)

    results = asyncio.run(flood())
    answered = [r for r in results if r[0] == 200]
    rejected = [r for r in results if r[0] in (429, 503)]
    assert len(answered) + len(rejected) == sent
    assert answered and rejected
    assert all(r[1] for r in rejected)  # Retry-After on every rejection
    assert max(r[2] for r in rejected) < min(5.0, max(r[2] for r in answered))  # rejections are fast
    assert httpx.get(f"{ensemble.base}/healthz").status_code == 200


def test_metric_names_appear_on_rays_metrics_endpoint_after_traffic(ensemble, client):
    from router.serving.telemetry import NAMES

    ask(client, GREETING)
    ask(client, CODE)
    # the names are a contract with dashboards: a rename must fail this test
    assert NAMES == {"decision_latency": "router_decision_latency_ms", "requests": "router_requests",
                     "fallbacks": "router_fallbacks", "confidence": "router_classifier_confidence",
                     "cost": "router_cost_dollars", "tokens": "router_tokens",
                     "escalations": "router_cascade_escalations", "feedback": "router_feedback",
                     "policy_refused": "router_policy_refused", "decision_batch": "router_decision_batch_size",
                     "refusals": "router_refusals", "cache": "router_answer_cache"}
    expected = ["ray_router_decision_latency_ms_bucket", "ray_router_requests", "ray_router_classifier_confidence_bucket",
                "ray_router_cost_dollars", "ray_router_tokens", "ray_router_decision_batch_size_bucket"]

    def exported():
        try:
            text = httpx.get(ensemble.metrics, timeout=10).text
        except httpx.HTTPError:
            return None
        return text if all(name in text for name in expected) else None

    text = wait_for(exported, 120, "the router's metrics on Ray's metrics endpoint", interval=2)
    assert 'model="smollm2-135m"' in text and 'rule="cheapest_confident"' in text


def test_limits_and_api_key_come_from_the_live_policy(ensemble, tmp_path):
    import openai

    key_file = tmp_path / "api_key"
    key_file.write_text("s3cret-key\n")
    original = _policy(ensemble)["policy"]
    guarded = json.loads(json.dumps(original))
    guarded["version"] = "guarded"
    guarded["limits"] = {"max_body_bytes": 4000, "max_messages": 2, "max_output_tokens": 64, "max_input_tokens": 200}
    guarded["access"] = {"api_key_file": str(key_file)}
    _deploy_policy(ensemble, guarded)
    url = f"{ensemble.base}/v1/chat/completions"
    auth = {"authorization": "Bearer s3cret-key"}
    msg = lambda text: {"role": "user", "content": text}  # noqa: E731
    try:
        wait_for(lambda: _policy(ensemble)["version"] == "guarded", 60, "the guarded policy")
        assert httpx.post(url, json={"messages": [msg(GREETING)]}).status_code == 401
        assert httpx.post(url, json={"messages": [msg(GREETING)]},
                          headers={"authorization": "Bearer wrong"}).status_code == 401
        assert httpx.get(f"{ensemble.base}/v1/models").status_code == 401
        assert httpx.get(f"{ensemble.base}/v1/models/auto").status_code == 401
        # a malformed body without the key is refused for the key, before anything is said about the body
        assert httpx.post(url, json={"messages": "not a list"}).status_code == 401
        assert httpx.post(url, json={"messages": "not a list"}, headers=auth).status_code == 400
        assert httpx.get(f"{ensemble.base}/healthz").status_code == 200  # health stays open
        # CORS is off: a browser preflight from another origin gets no allow-origin header
        preflight = httpx.options(url, headers={"origin": "http://elsewhere.example",
                                                "access-control-request-method": "POST"})
        assert "access-control-allow-origin" not in preflight.headers
        keyed = openai.OpenAI(base_url=f"{ensemble.base}/v1", api_key="s3cret-key", max_retries=0)
        assert keyed.chat.completions.create(model="auto", messages=[msg(GREETING)], max_tokens=8).model == SMOL
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"{ensemble.base}/v1", api_key="nope", max_retries=0).models.list()

        def status(body):
            reply = httpx.post(url, json=body, headers=auth)
            return reply.status_code, reply.json()["error"]["message"] if reply.status_code != 200 else ""

        assert status({"messages": [msg("a"), msg("b"), msg("c")]}) == (400, "3 messages exceed the limit of 2")
        assert status({"messages": [msg(GREETING)], "max_tokens": 100}) == (400, "max_tokens 100 exceeds the limit of 64")
        code, text = status({"messages": [msg("word " * 300)]})
        assert code == 400 and "input tokens exceed the limit of 200" in text
        code, text = status({"messages": [msg("x" * 5000)]})
        assert code == 413 and "exceeds the limit of 4000" in text
    finally:
        _deploy_policy(ensemble, original)
        wait_for(lambda: _policy(ensemble)["version"] == original["version"], 60, "the original policy")
    assert httpx.get(f"{ensemble.base}/v1/models").status_code == 200


def test_cascade_escalates_a_low_confidence_answer_and_keeps_a_confident_one(ensemble, client):
    original = _policy(ensemble)["policy"]

    def with_floor(version, floor):
        edited = json.loads(json.dumps(original))
        edited["version"] = version
        edited["models"][SMOL]["cascade_min_logprob"] = floor
        _deploy_policy(ensemble, edited)
        wait_for(lambda: _policy(ensemble)["version"] == version, 60, f"policy {version}")

    try:
        with_floor("cascade-strict", -0.0001)  # no real answer is that confident: always escalate
        completion, headers = ask(client, GREETING)
        steps = completion.model_extra["router"]["cascade"]
        assert headers["x-router-rule"] == "cheapest_confident" and completion.model != SMOL
        assert steps[0]["model"] == SMOL and steps[0]["mean_logprob"] < -0.0001 and steps[0]["cost"] > 0
        assert headers["x-router-cascade"].startswith(f"{SMOL}:")

        with_floor("cascade-lenient", -50.0)  # any answer is confident enough: no escalation
        completion, headers = ask(client, GREETING)
        assert completion.model == SMOL and completion.model_extra["router"]["cascade"] == []
        assert "x-router-cascade" not in headers
    finally:
        _deploy_policy(ensemble, original)
        wait_for(lambda: _policy(ensemble)["version"] == original["version"], 60, "the original policy")


def test_moderations_through_the_official_client(client, ensemble):
    result = client.moderations.create(model="auto", input=["You are a stupid idiot.", "Have a lovely day!"])
    rude, kind = result.results
    assert rude.flagged and rude.categories.harassment and rude.category_scores.harassment > 0.9
    assert not kind.flagged and kind.category_scores.harassment < 0.35
    assert result.model == "profanity-check"

    # inside the policy's uncertain band, the large model decides with the moderation prompt
    original = _policy(ensemble)["policy"]
    unsure = json.loads(json.dumps(original))
    unsure["version"] = "moderation-all-uncertain"
    unsure["moderation"] = {"uncertain_band": [0.0, 1.0]}
    _deploy_policy(ensemble, unsure)
    try:
        wait_for(lambda: _policy(ensemble)["version"] == "moderation-all-uncertain", 60, "the moderation policy")
        reply = httpx.post(f"{ensemble.base}/v1/moderations", json={"input": "I will hurt you, you worthless idiot."})
        decided = reply.json()["results"][0]
        assert decided["decided_by"] == LARGE and decided["flagged"] is True
    finally:
        _deploy_policy(ensemble, original)
        wait_for(lambda: _policy(ensemble)["version"] == original["version"], 60, "the original policy")


def test_legacy_completions_are_routed_too(client):
    raw = client.completions.with_raw_response.create(model="auto", prompt="Hello there! How are you?", max_tokens=12,
                                                      temperature=0)
    completion = raw.parse()
    assert completion.model == SMOL and raw.headers["x-router-model"] == SMOL
    assert completion.choices[0].text.strip() and completion.usage.completion_tokens > 0
    pinned = client.completions.create(model=LARGE, prompt="def add(a, b):", max_tokens=12, temperature=0)
    assert pinned.model == LARGE and pinned.choices[0].text


def test_legacy_completions_stream_too(client):
    with client.completions.with_streaming_response.create(
            model="auto", prompt="Hello there! How are you?", max_tokens=12, temperature=0, stream=True) as response:
        assert response.headers["x-router-model"] == SMOL  # known before any token is read
        chunks = list(response.parse())
    assert {c.model for c in chunks} == {SMOL} and {c.object for c in chunks} == {"text_completion"}
    assert "".join(c.choices[0].text for c in chunks).strip()
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")


def test_a_stream_asked_for_its_usage_ends_with_a_usage_chunk(client):
    """OpenAI's stream_options.include_usage: the last chunk before [DONE] has no choices and the usage, which
    counts the whole prompt whether or not llama.cpp's prompt cache served it."""
    def usage_chunk(create, **kwargs):
        chunks = list(create(model=SMOL, max_tokens=6, temperature=0, stream=True,
                             stream_options={"include_usage": True}, **kwargs))
        assert all(c.usage is None for c in chunks[:-1]) and chunks[-1].choices == []
        return chunks[-1].usage

    ask = {"messages": [{"role": "user", "content": "Name three colours."}]}
    first, again = usage_chunk(client.chat.completions.create, **ask), usage_chunk(client.chat.completions.create, **ask)
    plain = client.chat.completions.create(model=SMOL, max_tokens=6, temperature=0, **ask).usage
    assert first.prompt_tokens == again.prompt_tokens == plain.prompt_tokens > 10
    assert first.completion_tokens == 6 and first.total_tokens == first.prompt_tokens + 6
    text = usage_chunk(client.completions.create, prompt="def add(a, b):")
    assert text.prompt_tokens > 0 and text.completion_tokens == 6
    without = list(client.chat.completions.create(model=SMOL, max_tokens=4, temperature=0, stream=True, **ask))
    assert all(c.choices for c in without)  # no usage chunk unless asked for


def test_a_stream_comes_in_fewer_pieces_than_tokens_and_says_the_same_as_the_whole_answer(client):
    """serve_config.yaml's stream_interval_ms: the tokens that come within it go out as one piece, so 48 tokens
    take fewer content chunks than tokens, and the pieces join into the very answer a plain request gets."""
    ask = {"model": SMOL, "max_tokens": 48, "temperature": 0,
           "messages": [{"role": "user", "content": "Write a long story about a robot who learns to paint."}]}
    chunks = list(client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **ask))
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    whole = client.chat.completions.create(**ask)
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens == 48
    assert len(pieces) < 48
    assert "".join(pieces) == whole.choices[0].message.content


def _replica_actor(deployment: str):
    import ray

    for actor in ray.util.list_named_actors(all_namespaces=True):
        if "REPLICA" in actor["name"] and f"#{deployment}#" in actor["name"]:
            return ray.get_actor(actor["name"], namespace=actor["namespace"])
    raise LookupError(f"no replica of {deployment}")


def test_a_replica_killed_mid_stream_ends_the_stream_with_an_error_event(ensemble, client):
    import ray

    body = {"model": SMOL, "stream": True, "max_tokens": 400, "temperature": 0,
            "messages": [{"role": "user", "content": "Count from 1 to 400, one number per line."}]}
    events, killed = [], False
    with httpx.stream("POST", f"{ensemble.base}/v1/chat/completions", json=body, timeout=120) as reply:
        assert reply.status_code == 200 and reply.headers["x-router-model"] == SMOL
        for line in reply.iter_lines():
            if not line.startswith("data: "):
                continue
            events.append(line[6:])
            if len(events) == 4 and not killed:  # a few tokens are out: kill the replica that makes them
                ray.kill(_replica_actor(SMOL), no_restart=False)
                killed = True
    assert killed and events[-1] == "[DONE]"  # the stream ended; nothing hangs
    error = json.loads(events[-2])["error"]
    assert "smollm2-135m failed mid-stream" in error["message"] and error["type"] == "server_error"
    assert all("choices" in json.loads(e) for e in events[:-2])  # every event before it was a normal chunk
    # while Serve replaces the replica, a request for the tiny model still gets one answer: from the tiny model
    # if its new replica is already up, otherwise from the next candidate with the reason stated
    completion, headers = ask(client, GREETING)
    assert completion.choices[0].message.content.strip()
    assert completion.model == SMOL or SMOL in headers["x-router-fallback"]
    # Serve replaces the replica; the ensemble is healthy again and the tiny model answers
    wait_for(lambda: http_ok(f"{ensemble.base}/healthz"), 180, "a new smollm2-135m replica")
    assert ask(client, GREETING, model=SMOL)[0].model == SMOL
