"""The model catalogue (models/catalogue.yaml): what each model is, where its weights come from, what it costs."""
from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from models.yaml_source import load_yaml_model

CATALOGUE_PATH = Path(__file__).with_name("catalogue.yaml")
CATALOGUE_ENV = "ROUTER_CATALOGUE"  # another catalogue file, e.g. one that adds a remote model


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)  # an infinite cost breaks arithmetic


class WheelMember(Strict):
    package: str = Field(pattern=r"^[A-Za-z0-9_.\-]+==[A-Za-z0-9_.\-]+$", description="a pinned PyPI requirement")
    member: str


class NumberedParts(Strict):
    """Parts split over packages named with a running number, joined in order."""

    package: str
    member: str
    count: int = Field(ge=1)

    def expand(self) -> list[WheelMember]:
        return [WheelMember(package=self.package.format(n=n), member=self.member.format(n=n))
                for n in range(1, self.count + 1)]


class WeightFile(Strict):
    file: str = Field(pattern=r"^[A-Za-z0-9_.\-]+$")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size_bytes: int = Field(gt=0)
    parts: list[WheelMember] | None = None
    numbered_parts: NumberedParts | None = None

    @model_validator(mode="after")
    def _one_source(self):
        if (self.parts is None) == (self.numbered_parts is None):
            raise ValueError("give exactly one of parts or numbered_parts")
        return self

    def sources(self) -> list[WheelMember]:
        return list(self.parts) if self.parts is not None else self.numbered_parts.expand()


class EncoderEntry(Strict):
    name: str
    display_name: str
    runtime: Literal["onnx"]
    dimensions: int
    max_input_tokens: int
    weights: list[WeightFile]


class ModerationEntry(Strict):
    name: str
    display_name: str
    runtime: Literal["sklearn-joblib"]
    weights: list[WeightFile] = Field(min_length=2, max_length=2, description="the model, then the vectorizer")


class RemoteEndpoint(Strict):
    """A model served elsewhere behind an OpenAI-compatible API (OpenAI, vLLM, a llama.cpp server)."""

    base_url: str = Field(pattern=r"^https?://[^\s/]+", description="the API's base, e.g. https://api.openai.com/v1")
    model: str = Field(min_length=1, description="the model's name at that API")
    api_key_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
                                    description="the environment variable that holds the API key; the key "
                                                "itself never goes in the catalogue")
    timeout_s: float = Field(120.0, gt=0, description="how long to wait for the server: for the whole answer when "
                                                      "not streamed, between chunks when streamed; the policy's "
                                                      "timeout_s and fallback still apply")


class ModelEntry(Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9.\-]*$")
    display_name: str
    runtime: Literal["llamacpp", "openai"]
    params_billion: float | None = Field(None, gt=0, description="unknown for most hosted models")
    tasks: list[str] = Field(min_length=1)
    context_length: int = Field(gt=0)
    cost_per_1k_input: float = Field(ge=0)
    cost_per_1k_output: float = Field(ge=0)
    weights: list[WeightFile] = Field(default_factory=list, description="llamacpp: the GGUF file")
    endpoint: RemoteEndpoint | None = Field(None, description="openai: where the model is served")
    tool_calls: bool = Field(False, description="the model answers a chat's `tools` with OpenAI tool calls; a "
                                                "request with tools goes only to such models")
    logprobs: bool = Field(True, description="the server returns token logprobs; some hosted models refuse them, "
                                             "and a policy may not give such a model a cascade floor")

    @model_validator(mode="after")
    def _runtime_needs(self):
        if self.tool_calls and self.runtime != "openai":
            # measured: the coder GGUFs here answer a tools request with the call as text (no <tool_call> tags)
            raise ValueError(f"model {self.name}: tool_calls is for a remote model (runtime openai); llama.cpp's "
                             "tool-call parsing is not wired in, and the GGUF models measured write calls as text")
        if not self.logprobs and self.runtime != "openai":
            raise ValueError(f"model {self.name}: logprobs: false is for a remote model (runtime openai); "
                             "llama.cpp always returns them")
        if self.runtime == "llamacpp" and (not self.weights or self.endpoint is not None):
            raise ValueError(f"model {self.name}: runtime llamacpp needs weights and no endpoint")
        if self.runtime == "openai" and (self.endpoint is None or self.weights):
            raise ValueError(f"model {self.name}: runtime openai needs an endpoint and no weights")
        return self

    def identity(self) -> str:
        """What pins this model's answers: its weights' sha256, or the remote API and model name."""
        return self.weights[0].sha256 if self.weights else f"{self.endpoint.base_url}#{self.endpoint.model}"

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        return (input_tokens * self.cost_per_1k_input + output_tokens * self.cost_per_1k_output) / 1000.0


class Catalogue(Strict):
    encoder: EncoderEntry
    moderation: ModerationEntry
    models: list[ModelEntry]

    @model_validator(mode="after")
    def _unique_names(self):
        names = [m.name for m in self.models]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"model names must be unique; repeated: {dupes}")
        return self

    def model(self, name: str) -> ModelEntry:
        for m in self.models:
            if m.name == name:
                return m
        raise KeyError(f"unknown model {name!r}; the catalogue has {self.names()}")

    def names(self) -> list[str]:
        return [m.name for m in self.models]


def load_catalogue(path: str | Path | None = None) -> Catalogue:
    """The catalogue at `path`, else at $ROUTER_CATALOGUE, else the package's own."""
    path = Path(path or os.environ.get(CATALOGUE_ENV) or CATALOGUE_PATH)
    return _load(path, _stamp(path))


def _stamp(path: Path) -> tuple[int, int] | None:
    """The file's modification time and size, so an edited catalogue is read again; None lets the load name it."""
    try:
        info = path.stat()
    except OSError:
        return None
    return info.st_mtime_ns, info.st_size


@lru_cache(maxsize=4)
def _load(path: Path, stamp: tuple[int, int] | None) -> Catalogue:
    return load_yaml_model(Catalogue, path)
