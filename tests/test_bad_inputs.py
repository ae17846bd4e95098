"""The catalogue of bad inputs (tests/bad_inputs.yaml), run entry by entry: each gets the 4xx or the error it
must, names the field or the problem, and changes nothing. Test ids are "<kind>-<id>": `-k "not http"` runs the
entries that need no Ray Serve ensemble; `-k http` runs the HTTP ones against the real one (marked serve)."""
from __future__ import annotations

import codecs
import os
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest
import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from router.serving.local_ensemble import wait_for

CATALOGUE = Path(__file__).with_name("bad_inputs.yaml")
Kind = Literal["http", "policy", "table", "store_url", "cli"]
INPUTS = {"http": {"method", "path", "headers", "json", "raw", "raw_bytes", "chunked"},
          "policy": {"yaml", "yaml_bytes"}, "table": {"csv", "csv_bytes", "known_models", "model_costs"},
          "store_url": {"url", "files"}, "cli": {"argv", "files", "files_bytes"}}


class Expect(BaseModel):
    model_config = ConfigDict(extra="forbid")
    status: int | None = None        # http
    message: str | list[str] = []    # http, policy, table, store_url: substrings of the error message
    param: str | None = None         # http: error.param
    code: str | None = None          # http: error.code
    headers: dict[str, str] = {}     # http: response headers
    exit: int = 2                    # cli
    stderr: str | list[str] = []     # cli

    def messages(self) -> list[str]:
        return [self.message] if isinstance(self.message, str) else self.message

    def stderr_parts(self) -> list[str]:
        return [self.stderr] if isinstance(self.stderr, str) else self.stderr


class Entry(BaseModel):
    """One catalogue entry; the fields a kind does not use are refused, so a typo cannot pass silently."""
    model_config = ConfigDict(extra="forbid")
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    kind: Kind
    why: str = Field(min_length=3)
    expect: Expect
    method: Literal["GET", "POST", "PUT", "DELETE"] = "POST"
    path: str | None = None
    headers: dict[str, str | None] = {}
    json_body: Any = Field(None, alias="json")
    raw: str | list | None = None
    raw_bytes: str | None = None
    chunked: bool = False
    yaml_text: str | None = Field(None, alias="yaml")
    yaml_bytes: str | None = None
    csv: str | None = None
    csv_bytes: str | None = None
    known_models: list[str] | None = None
    model_costs: dict[str, float] | None = None
    url: str | None = None
    argv: list[str] | None = None
    files: dict[str, str] = {}
    files_bytes: dict[str, str] = {}

    @model_validator(mode="before")
    @classmethod
    def _inputs_fit_the_kind(cls, data: dict):
        common = {"id", "kind", "why", "expect"}
        stray = set(data) - common - INPUTS.get(data.get("kind"), set())
        if stray:
            raise ValueError(f"{data.get('id')}: fields {sorted(stray)} do not belong to kind {data.get('kind')!r}")
        return data

    @property
    def test_id(self) -> str:
        return f"{self.kind}-{self.id}"


def escaped_bytes(text: str) -> bytes:
    """A catalogue string whose \\xNN escapes are single bytes (for bytes that are not valid UTF-8)."""
    return codecs.escape_decode(text.encode("utf-8"))[0]


def expand(value: Any) -> Any:
    """{$repeat: VALUE, times: N} is VALUE * N (a string or a list), anywhere in a body."""
    if isinstance(value, dict):
        if "$repeat" in value:
            assert set(value) == {"$repeat", "times"} and isinstance(value["$repeat"], (str, list)), value
            return expand(value["$repeat"]) * value["times"]
        return {k: expand(v) for k, v in value.items()}
    if isinstance(value, list):
        return [expand(v) for v in value]
    return value


def load_catalogue() -> list[Entry]:
    entries = [Entry.model_validate(item) for item in yaml.safe_load(CATALOGUE.read_text(encoding="utf-8"))]
    ids = [e.test_id for e in entries]
    assert len(ids) == len(set(ids)), f"duplicate ids: {sorted({i for i in ids if ids.count(i) > 1})}"
    return entries


ENTRIES = load_catalogue()


def of_kind(*kinds: str) -> list:
    return [pytest.param(e, id=e.test_id) for e in ENTRIES if e.kind in kinds]


def assert_contains(text: str, parts: list[str], what: str) -> None:
    missing = [p for p in parts if p not in text]
    assert not missing, f"{what} lacks {missing}:\n{text}"


def write_files(entry: Entry, folder: Path) -> None:
    for name, text in entry.files.items():
        (folder / name).write_text(text, encoding="utf-8")
    for name, text in entry.files_bytes.items():
        (folder / name).write_bytes(escaped_bytes(text))


def test_the_catalogue_is_big_enough_and_covers_every_endpoint():
    kinds = [e.kind for e in ENTRIES]
    assert len(ENTRIES) >= 60 and kinds.count("http") >= 25
    assert set(kinds) == set(INPUTS)
    paths = {e.path for e in ENTRIES if e.kind == "http"}
    assert {"/v1/chat/completions", "/v1/completions", "/v1/route", "/v1/embeddings", "/v1/moderations",
            "/v1/feedback", "/v1/models", "/v1/policy", "/healthz"} <= paths
    for e in ENTRIES:  # every entry says what it must get
        if e.kind == "http":
            assert e.path and e.expect.status, e.id
            assert e.expect.status == 200 or e.expect.messages(), e.id
        elif e.kind == "cli":
            assert e.argv is not None and e.expect.stderr_parts(), e.id
        else:
            assert e.expect.messages(), e.id


# --- policy ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("entry", of_kind("policy"))
def test_policy(entry: Entry, tmp_path):
    from models.yaml_source import ConfigError
    from router.policy import load_policy

    path = tmp_path / "policy.yaml"
    if entry.yaml_bytes is not None:
        path.write_bytes(escaped_bytes(entry.yaml_bytes))
    else:
        path.write_text(entry.yaml_text, encoding="utf-8")
    with pytest.raises(ConfigError) as refused:
        load_policy(path)
    assert_contains(str(refused.value), entry.expect.messages(), "the ConfigError")


# --- outcome tables --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("entry", of_kind("table"))
def test_table(entry: Entry, tmp_path):
    from router.offline.outcomes import OutcomeError, load_outcomes

    path = tmp_path / "table.csv"
    if entry.csv_bytes is not None:
        path.write_bytes(escaped_bytes(entry.csv_bytes))
    else:
        path.write_text(entry.csv, encoding="utf-8")
    with pytest.raises(OutcomeError) as refused:
        load_outcomes(path, entry.known_models, entry.model_costs)
    assert_contains(str(refused.value), entry.expect.messages(), "the OutcomeError")


# --- store URLs ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("entry", of_kind("store_url"))
def test_store_url(entry: Entry, tmp_path, monkeypatch):
    from router.store import DecisionStore

    monkeypatch.delenv("ROUTER_STORE_URL", raising=False)  # the URL under test, not the environment's
    write_files(entry, tmp_path)
    with pytest.raises(ValueError) as refused:
        DecisionStore(entry.url.replace("{tmp}", str(tmp_path))).close()
    assert_contains(str(refused.value), entry.expect.messages(), "the ValueError")


# --- CLI -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("entry", of_kind("cli"))
def test_cli(entry: Entry, tmp_path, capsys, monkeypatch):
    from router.cli import main

    monkeypatch.setenv("ROUTER_STORE_URL", f"sqlite:///{tmp_path / 'default-store.db'}")  # never the user's store
    write_files(entry, tmp_path)
    argv = [arg.replace("{tmp}", str(tmp_path)) for arg in entry.argv]
    try:
        code = main(argv)
    except SystemExit as exited:  # argparse's errors
        code = exited.code
    err = capsys.readouterr().err
    assert code == entry.expect.exit, f"exit code {code}, stderr:\n{err}"
    assert "Traceback" not in err, err
    assert_contains(err, entry.expect.stderr_parts(), "stderr")


# --- HTTP, against the real ensemble ---------------------------------------------------------------------------
def request_body(entry: Entry) -> tuple[bytes | None, dict[str, str]]:
    headers = {}
    if entry.json_body is not None:
        import json

        body = json.dumps(expand(entry.json_body), ensure_ascii=False).encode("utf-8")
    elif entry.raw is not None:
        raw = expand(entry.raw)
        body = ("".join(raw) if isinstance(raw, list) else raw).encode("utf-8")
    elif entry.raw_bytes is not None:
        body = escaped_bytes(entry.raw_bytes)
    else:
        return None, {k: v for k, v in entry.headers.items() if v is not None}
    headers["content-type"] = "application/json"
    headers.update(entry.headers)
    return body, {k: v for k, v in headers.items() if v is not None}


class LiveState:
    """What no bad input may change: the live policy (and any refused edit) and the decision store."""

    def __init__(self, base: str):
        from router.store import DecisionStore

        self.base = base
        self.store = DecisionStore(os.environ["ROUTER_STORE_URL"])  # the database the ingress writes

    def snapshot(self) -> dict:
        from sqlalchemy import func, select

        from router.store.schema import decisions, feedback

        policy = httpx.get(f"{self.base}/v1/policy", timeout=30).json()
        with self.store.engine.connect() as connection:
            rows = connection.execute(select(func.count()).select_from(decisions)).scalar_one()
            rated = sorted(tuple(r) for r in connection.execute(select(feedback)))
        return {"version": policy["version"], "refused": policy.get("refused_edit"), "decisions": rows,
                "feedback": rated}


def settled(state: "LiveState") -> dict:
    """The snapshot once two in a row agree: rows still in the ingress's write batch (200 ms) have landed."""
    last: list = [None]

    def stable():
        now = state.snapshot()
        same, last[0] = now == last[0], now
        return now if same else None
    return wait_for(stable, 30, "the store to settle", interval=0.3)


@pytest.fixture(scope="module")
def live_state(ensemble):
    state = LiveState(ensemble.base)
    state.before = settled(state)
    yield state
    state.store.close()


@pytest.mark.serve
@pytest.mark.parametrize("entry", of_kind("http"))
def test_http(entry: Entry, ensemble, live_state):
    body, headers = request_body(entry)
    if entry.chunked:  # an iterator has no length: httpx sends it chunked, without content-length
        content = iter([body])
    else:
        content = body
    reply = httpx.request(entry.method, f"{ensemble.base}{entry.path}", content=content, headers=headers, timeout=120)
    expect = entry.expect
    assert reply.status_code == expect.status, f"{reply.status_code}: {reply.text[:500]}"
    if expect.status >= 400:
        error = reply.json()["error"]  # OpenAI's error shape, always
        assert_contains(error["message"], expect.messages(), "error.message")
        if expect.param is not None:
            assert error["param"] == expect.param, error
        if expect.code is not None:
            assert error["code"] == expect.code, error
    for name, value in expect.headers.items():
        assert reply.headers.get(name) == value, (name, reply.headers.get(name))
    assert live_state.snapshot() == live_state.before  # neither the live policy nor the store changed


@pytest.mark.serve
def test_http_serving_survives_the_catalogue(ensemble, live_state):
    """After every HTTP entry: the ensemble still answers, and (once the write batch would have landed) nothing
    reached the store."""
    assert httpx.get(f"{ensemble.base}/healthz", timeout=60).status_code == 200
    assert httpx.post(f"{ensemble.base}/v1/route", json={"messages": [{"role": "user", "content": "hi"}]},
                      timeout=60).status_code == 200
    assert settled(live_state) == live_state.before
