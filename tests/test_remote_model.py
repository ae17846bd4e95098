"""A remote model (catalogue `runtime: openai`) is a catalogue entry, not new code: the catalogue's checks, the
backend against a real OpenAI-compatible server, an ensemble whose large fallback is remote, and a client's hang-up
that reaches the remote server.

The remote server is this project's own ensemble (the shared fixture on 127.0.0.1): a real OpenAI-compatible API
with real models, standing where a hosted provider (OpenAI, a vLLM server) would be."""
import asyncio
import copy
import dataclasses
import http.server
import threading

import httpx
import pytest
import yaml

from hang_up import hang_up_and_wait_for_quiet, replica_pid
from models.backend import BackendError, GenerationRequest, RequestRefused
from models.catalogue import CATALOGUE_PATH, Catalogue, load_catalogue
from models.registry import make_backend
from models.yaml_source import ConfigError
from router.policy import DEFAULT_POLICY_PATH
from router.serving.config_check import check_serve_config
from router.serving.local_ensemble import free_port, http_ok, serve_config, wait_for
from router.serving.live import deploy_config

TINY, CODER = "smollm2-135m", "qwen2.5-coder-0.5b"
PROMPT = [{"role": "user", "content": "Name three colours of the rainbow."}]
SAMPLING = {"max_tokens": 20, "temperature": 0.0, "seed": 1}


def remote_entry(name: str, base_url: str, model: str = TINY, key_env: str | None = None) -> dict:
    endpoint = {"base_url": base_url, "model": model, "timeout_s": 60}
    if key_env:
        endpoint["api_key_env"] = key_env
    return {"name": name, "display_name": f"{model} at {base_url}", "runtime": "openai", "tasks": ["chat"],
            "context_length": 4096, "cost_per_1k_input": 0.0025, "cost_per_1k_output": 0.01, "endpoint": endpoint}


def catalogue_with(*entries: dict) -> dict:
    data = yaml.safe_load(CATALOGUE_PATH.read_text())
    data["models"] += list(entries)
    return data


@pytest.mark.parametrize("change,message", [
    ({"runtime": "llamacpp"}, "runtime llamacpp needs weights and no endpoint"),
    ({"endpoint": None}, "runtime openai needs an endpoint and no weights"),
    ({"endpoint": {"base_url": "api.example.com/v1", "model": "m"}}, "endpoint.base_url"),
    ({"endpoint": {"base_url": "https://api.example.com/v1", "model": "m", "api_key": "sk-1"}}, "api_key"),
    ({"endpoint": {"base_url": "https://api.example.com/v1", "model": "m", "api_key_env": "MY KEY"}}, "api_key_env"),
], ids=["llamacpp-without-weights", "openai-without-endpoint", "url-without-scheme", "key-in-the-file",
        "bad-env-name"])
def test_the_catalogue_refuses_a_remote_entry_that_cannot_work(change, message):
    entry = {**remote_entry("hosted", "https://api.example.com/v1"), **change}
    with pytest.raises(ValueError, match=message):
        Catalogue.model_validate(catalogue_with(entry))


def test_router_catalogue_selects_another_catalogue_file(tmp_path, monkeypatch):
    path = tmp_path / "catalogue.yaml"
    path.write_text(yaml.safe_dump(catalogue_with(remote_entry("hosted", "https://api.example.com/v1"))))
    monkeypatch.setenv("ROUTER_CATALOGUE", str(path))
    assert load_catalogue().names()[-1] == "hosted"
    assert load_catalogue().model("hosted").identity() == "https://api.example.com/v1#smollm2-135m"
    monkeypatch.delenv("ROUTER_CATALOGUE")
    assert "hosted" not in load_catalogue().names()


def test_a_missing_api_key_is_named_when_the_backend_starts(monkeypatch):
    monkeypatch.delenv("NO_SUCH_ROUTER_KEY", raising=False)
    entry = Catalogue.model_validate(catalogue_with(
        remote_entry("hosted", "https://api.example.com/v1", key_env="NO_SUCH_ROUTER_KEY"))).model("hosted")
    with pytest.raises(BackendError, match="NO_SUCH_ROUTER_KEY.*is not set"):
        make_backend(entry)


def serve_config_with_remote_fallback(folder, catalogue_file) -> str:
    """The shipped Serve config with a remote large fallback, `hosted`, taken from the app's own catalogue file."""
    config = yaml.safe_load(DEFAULT_POLICY_PATH.read_text())
    app = config["applications"][0]
    app["runtime_env"] = {"env_vars": {"ROUTER_CATALOGUE": str(catalogue_file)}}
    app["args"]["models"] = [TINY, CODER, "hosted"]
    app["deployments"] = [d for d in app["deployments"] if d["name"] != "qwen2.5-coder-1.5b"] + [{"name": "hosted"}]
    policy = app["deployments"][0]["user_config"]["policy"]
    policy["fallback"] = "hosted"
    policy["models"]["hosted"] = policy["models"].pop("qwen2.5-coder-1.5b")
    path = folder / "serve_config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return str(path)


def test_check_config_reads_the_catalogue_named_in_the_apps_runtime_env(tmp_path, monkeypatch):
    monkeypatch.delenv("ROUTER_CATALOGUE", raising=False)
    catalogue_file = tmp_path / "catalogue.yaml"
    catalogue_file.write_text(yaml.safe_dump(catalogue_with(remote_entry("hosted", "https://api.example.com/v1"))))
    config = serve_config_with_remote_fallback(tmp_path, catalogue_file)
    assert "models smollm2-135m, qwen2.5-coder-0.5b, hosted" in check_serve_config(config)
    catalogue_file.unlink()
    with pytest.raises(ConfigError, match=r"serve_config.yaml:\d+: applications.0.runtime_env.env_vars."
                                          r"ROUTER_CATALOGUE: no catalogue file at '.*catalogue.yaml' here"):
        check_serve_config(config)
    catalogue_file.write_text(yaml.safe_dump(catalogue_with(remote_entry("hosted", "api.example.com/v1"))))
    with pytest.raises(ConfigError) as refused:
        check_serve_config(config)
    assert "ROUTER_CATALOGUE: the catalogue" in str(refused.value)
    assert "catalogue.yaml:" in str(refused.value) and "endpoint.base_url" in str(refused.value)


def test_check_config_notes_a_remote_key_variable_set_nowhere_it_can_see(tmp_path, monkeypatch):
    """A note, not a refusal: on a cluster the nodes may set the variable."""
    monkeypatch.delenv("ROUTER_CATALOGUE", raising=False)
    monkeypatch.delenv("NO_SUCH_ROUTER_KEY", raising=False)
    catalogue_file = tmp_path / "catalogue.yaml"
    catalogue_file.write_text(yaml.safe_dump(catalogue_with(
        remote_entry("hosted", "https://api.example.com/v1", key_env="NO_SUCH_ROUTER_KEY"))))
    config = serve_config_with_remote_fallback(tmp_path, catalogue_file)
    summary = check_serve_config(config)
    assert "ready to deploy" in summary
    assert "note: hosted reads its API key from NO_SUCH_ROUTER_KEY, which is set neither in this shell" in summary
    monkeypatch.setenv("NO_SUCH_ROUTER_KEY", "sk-test")
    assert "note:" not in check_serve_config(config)
    monkeypatch.delenv("NO_SUCH_ROUTER_KEY")
    data = yaml.safe_load(open(config))
    data["applications"][0]["runtime_env"]["env_vars"]["NO_SUCH_ROUTER_KEY"] = "sk-test"
    open(config, "w").write(yaml.safe_dump(data, sort_keys=False))
    assert "note:" not in check_serve_config(config)


def backend_for(base_url: str, model: str = TINY):
    return make_backend(Catalogue.model_validate(catalogue_with(remote_entry("hosted", base_url, model))).model("hosted"))


async def _streamed(backend, request):
    return [delta async for delta in backend.stream(request)]


@pytest.mark.serve
def test_the_remote_backend_answers_what_the_remote_server_answers(ensemble, client):
    direct = client.chat.completions.create(model=TINY, messages=PROMPT, **SAMPLING)
    backend = backend_for(f"{ensemble.base}/v1")
    request = GenerationRequest(messages=PROMPT, **SAMPLING)
    answer = asyncio.run(backend.generate(request))
    assert answer.text == direct.choices[0].message.content
    assert (answer.input_tokens, answer.output_tokens) == (direct.usage.prompt_tokens, direct.usage.completion_tokens)
    assert answer.finish_reason == direct.choices[0].finish_reason
    deltas = asyncio.run(_streamed(backend, request))
    assert "".join(d.text for d in deltas) == answer.text and len(deltas) > 2
    assert deltas[-1].output_tokens == answer.output_tokens
    completion = asyncio.run(backend.generate(GenerationRequest(messages=[], prompt="def add(a, b):", **SAMPLING)))
    assert completion.text.strip() and completion.output_tokens > 0


@pytest.mark.serve
def test_the_remote_backend_passes_on_token_logprobs_only_when_asked(ensemble, client):
    direct = client.chat.completions.create(model=TINY, messages=PROMPT, logprobs=True, top_logprobs=2, **SAMPLING)
    backend = backend_for(f"{ensemble.base}/v1")
    asked = GenerationRequest(messages=PROMPT, logprobs=2, **SAMPLING)
    answer = asyncio.run(backend.generate(asked))
    assert [(e["token"], e["logprob"], len(e["top_logprobs"])) for e in answer.logprobs] == \
        [(e.token, e.logprob, 2) for e in direct.choices[0].logprobs.content]
    deltas = asyncio.run(_streamed(backend, asked))
    assert [e for d in deltas for e in d.logprobs or []] == answer.logprobs
    assert asyncio.run(backend.generate(GenerationRequest(messages=PROMPT, **SAMPLING))).logprobs is None
    legacy = asyncio.run(backend.generate(GenerationRequest(messages=[], prompt="def add(a, b):", logprobs=1,
                                                            **SAMPLING)))
    assert "".join(e["token"] for e in legacy.logprobs) == legacy.text
    assert all(len(e["top_logprobs"]) == 1 for e in legacy.logprobs)


@pytest.mark.serve
def test_the_remote_backend_passes_on_a_response_format_and_a_refusal_as_one(ensemble, client):
    """The server follows the schema the backend passes on; a 400 from it is a RequestRefused (the client's to fix)."""
    schema = {"type": "json_schema", "json_schema": {"name": "colours", "schema": {
        "type": "object", "properties": {"colours": {"type": "array", "items": {"type": "string"}}},
        "required": ["colours"]}}}
    direct = client.chat.completions.create(model=TINY, messages=PROMPT, response_format=schema, **SAMPLING)
    backend = backend_for(f"{ensemble.base}/v1")
    answer = asyncio.run(backend.generate(GenerationRequest(messages=PROMPT, response_format=schema, **SAMPLING)))
    assert answer.text == direct.choices[0].message.content and answer.text.startswith("{")
    assert answer.text != asyncio.run(backend.generate(GenerationRequest(messages=PROMPT, **SAMPLING))).text
    outside = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"$ref": "https://example.com/s"}}}
    with pytest.raises(RequestRefused, match=r"hosted: .*answered 400: every candidate model refused the request"):
        asyncio.run(backend.generate(GenerationRequest(messages=PROMPT, response_format=outside, **SAMPLING)))


@pytest.mark.serve
def test_a_remote_failure_is_a_backend_error_naming_the_model_and_the_server(ensemble):
    request = GenerationRequest(messages=PROMPT, max_tokens=4)
    with pytest.raises(BackendError, match=r"hosted: .*answered 404: model 'no-such-model' does not exist") as missing:
        asyncio.run(backend_for(f"{ensemble.base}/v1", "no-such-model").generate(request))
    assert not isinstance(missing.value, RequestRefused)  # the next model may be served: a failure, not a refusal
    closed = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(BackendError, match=rf"hosted: {closed} \(model 'smollm2-135m'\): APIConnectionError"):
        asyncio.run(backend_for(closed).generate(request))


class _NoChoices(http.server.BaseHTTPRequestHandler):
    """A fake of something outside this project: a server that claims the API but answers a body with no choices."""

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        body = b'{"object": "chat.completion", "id": "x"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_an_answer_without_choices_is_a_backend_error_naming_the_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NoChoices)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}/v1"
    try:
        with pytest.raises(BackendError, match=rf"hosted: {base} \(model 'smollm2-135m'\) answered without choices"):
            asyncio.run(backend_for(base).generate(GenerationRequest(messages=PROMPT, max_tokens=4)))
    finally:
        server.shutdown()


@pytest.fixture(scope="module")
def remote_app(ensemble, tmp_path_factory):
    """A second application on the same cluster whose large fallback, `upstream`, is remote: the first
    application's tiny model, called over HTTP. Its code specialist is remote too, at an address where no server
    listens (it keeps the specialist's name because the router's classifier scores models by name)."""
    folder = tmp_path_factory.mktemp("remote")
    catalogue = catalogue_with(remote_entry("upstream", f"{ensemble.base}/v1", key_env="UPSTREAM_KEY"))
    catalogue["models"] = [remote_entry(CODER, f"http://127.0.0.1:{free_port()}/v1") if m["name"] == CODER else m
                           for m in catalogue["models"]]
    (folder / "catalogue.yaml").write_text(yaml.safe_dump(catalogue))
    base = serve_config(ensemble.port)
    app = copy.deepcopy(base["applications"][0])
    app.update(name="remote", route_prefix="/remote", runtime_env={"env_vars": {
        "ROUTER_CATALOGUE": str(folder / "catalogue.yaml"), "UPSTREAM_KEY": "unused-on-loopback"}})
    app["args"]["models"] = [TINY, CODER, "upstream"]
    ingress, tiny = (copy.deepcopy(next(d for d in app["deployments"] if d["name"] == n))
                     for n in ("RouterIngress", TINY))
    policy = ingress["user_config"]["policy"]
    policy.update(version="remote-fallback", fallback="upstream", profiles={}, models={
        TINY: {"threshold": 0.99, "tasks": ["chat"], "timeout_s": 90},
        CODER: {"threshold": 0.0, "tasks": ["chat", "code", "math"], "timeout_s": 30},  # always confident
        "upstream": {"threshold": 0.0, "timeout_s": 90}})
    app["deployments"] = [ingress, tiny, {**tiny, "name": CODER}, {**tiny, "name": "upstream"}]
    remote = RemoteApp(f"{ensemble.base}/remote", base, app, ensemble.dashboard)
    remote.deploy_policy(policy)
    try:
        wait_for(lambda: http_ok(f"{remote.url}/healthz"), 300, "the remote-fallback application")
        yield remote
    finally:
        deploy_config(base, ensemble.dashboard)  # the first application is unchanged, so it keeps serving


@dataclasses.dataclass
class RemoteApp:
    url: str
    base: dict  # the first application's config, which every deploy keeps as it is
    app: dict
    dashboard: str

    def policy(self) -> dict:
        return copy.deepcopy(self.app["deployments"][0]["user_config"]["policy"])

    def deploy_policy(self, policy: dict) -> None:
        """A live edit of the remote application's policy, as `serve deploy` makes one."""
        app = copy.deepcopy(self.app)
        app["deployments"][0]["user_config"]["policy"] = policy
        deploy_config({**self.base, "applications": [*self.base["applications"], app]}, self.dashboard)


@pytest.mark.serve
def test_an_ensemble_whose_fallback_is_remote_answers_through_it(remote_app, client):
    from openai import OpenAI

    remote = OpenAI(base_url=f"{remote_app.url}/v1", api_key="unused", max_retries=0, timeout=300)
    assert {m.id for m in remote.models.list().data} == {"auto", TINY, CODER, "upstream"}
    raw = remote.chat.completions.with_raw_response.create(model="upstream", messages=PROMPT, **SAMPLING)
    answer = raw.parse()
    assert raw.headers["x-router-model"] == "upstream" == answer.model
    expected = client.chat.completions.create(model=TINY, messages=PROMPT, **SAMPLING).choices[0].message.content
    assert answer.choices[0].message.content == expected
    assert answer.usage.completion_tokens > 0
    streamed = remote.chat.completions.create(model="upstream", messages=PROMPT, stream=True, **SAMPLING)
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == expected


@pytest.mark.serve
def test_a_chosen_remote_model_that_fails_falls_back_with_the_reason_stated(remote_app, client):
    reply = httpx.post(f"{remote_app.url}/v1/chat/completions", timeout=300,
                       json={"model": "auto", "messages": PROMPT, **SAMPLING})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["router"]["model"] == CODER and reply.headers["x-router-model"] == "upstream"
    assert CODER in reply.headers["x-router-fallback"] and "APIConnectionError" in body["router"]["fallback"]
    expected = client.chat.completions.create(model=TINY, messages=PROMPT, **SAMPLING).choices[0].message.content
    assert body["choices"][0]["message"]["content"] == expected


@pytest.mark.serve
@pytest.mark.parametrize("stream", [False, True])
def test_a_client_that_leaves_a_remote_answer_stops_the_remote_servers_generation(remote_app, ensemble, stream):
    """The remote backend closes its stream to the remote server when its caller goes, and this router as the
    remote server then stops its model: the first application's tiny model, which answers for `upstream`."""
    hang_up_and_wait_for_quiet(remote_app.url, "upstream", replica_pid(ensemble, TINY, app="router"), stream)


@pytest.mark.serve
def test_a_cascade_floor_on_a_remote_model_judges_the_remote_answers_own_confidence(remote_app, client):
    """The router asks a remote model for token logprobs when the model has a cascade floor, and only then: the
    client that did not ask gets none. A floor just above the answer's mean logprob escalates; just below, not."""
    direct = client.chat.completions.create(model=TINY, messages=PROMPT, logprobs=True, **SAMPLING)
    tokens = [t.logprob for t in direct.choices[0].logprobs.content]
    confidence = sum(tokens) / len(tokens)
    policy = remote_app.policy()
    # the remote model answers when named, never by auto-routing (the classifier has no scores for it)
    policy.update(fallback=TINY)
    policy["models"]["upstream"]["auto_route"] = False

    def ask(floor: float) -> httpx.Response:
        policy["version"] = f"remote-floor-{floor:.4f}"
        policy["models"]["upstream"]["cascade_min_logprob"] = floor
        remote_app.deploy_policy(policy)
        wait_for(lambda: httpx.get(f"{remote_app.url}/v1/policy", timeout=30).json()["version"] == policy["version"],
                 60, "the edit to go live")
        reply = httpx.post(f"{remote_app.url}/v1/chat/completions", timeout=300,
                           json={"model": "upstream", "messages": PROMPT, **SAMPLING})
        assert reply.status_code == 200, reply.text
        return reply

    try:
        escalated = ask(round(confidence + 0.01, 4))
        steps = escalated.json()["router"]["cascade"]
        assert escalated.headers["x-router-model"] == TINY and [s["model"] for s in steps] == ["upstream"]
        assert steps[0]["mean_logprob"] == pytest.approx(confidence, abs=1e-4)
        assert escalated.json()["choices"][0]["logprobs"] is None
        kept = ask(round(confidence - 0.01, 4))
        assert kept.headers["x-router-model"] == "upstream" and kept.json()["router"]["cascade"] in (None, [])
        assert kept.json()["choices"][0]["message"]["content"] == direct.choices[0].message.content
    finally:
        remote_app.deploy_policy(remote_app.policy())
        wait_for(lambda: httpx.get(f"{remote_app.url}/v1/policy", timeout=30).json()["version"] == "remote-fallback",
                 60, "the fixture's policy")
