"""The request and response bodies of `edgeprm serve` as pydantic models: what FastAPI validates is what the OpenAPI
schema says.

The models are built per server (`models(limits)`) because the limits (rows per request) are part of the schema.
Strings that must hold text are checked with Python's own notion of whitespace (`str.strip`, as `Trajectory` does)
and documented with the pattern `\\S`, which Python's `re` reads the same way. Everything a row's schema cannot say
(a row over the model's token limit, two steps ending in the same token, a query without its prompt) is checked by
`scorer.prepare` and answered with the same 422 shape FastAPI uses: `{"detail": [{"loc", "msg", "type"}]}`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictInt, StrictStr, WithJsonSchema, model_validator

from edgeprm.serve.limits import ServeLimits


def _text(value: str) -> str:
    if not value.strip():
        raise ValueError("must be a non-empty string (not only whitespace)")
    return value


Text = Annotated[StrictStr, AfterValidator(_text), WithJsonSchema({"type": "string", "pattern": r"\S"})]


def _no_default(schema: dict) -> None:
    schema.pop("default", None)  # an absent optional field is absent, not null


class Row(BaseModel):
    """One trajectory in edgeprm's row schema: `problem` and `steps` (or a `solution` string, split on the server's
    separator), optional `response` and `id`. Other fields are kept and returned as they came."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"anyOf": [{"required": ["steps"]},
                                                                           {"required": ["solution"]}]})

    id: StrictStr | StrictInt | None = None
    problem: Text
    steps: list[Text] = Field(default=None, min_length=1, json_schema_extra=_no_default)
    solution: Text = Field(default=None, json_schema_extra=_no_default)
    response: Text | None = None

    @model_validator(mode="after")
    def _steps_or_solution(self):
        if self.steps is None and self.solution is None:
            raise ValueError("a row needs 'steps' (a list of strings) or 'solution' (a string)")
        return self


class ScoredRow(Row):
    """The row as sent plus its rewards (`ScoreResult.to_dict(with_id=False)`); `score` is null when truncation left
    no step to aggregate."""

    step_rewards: list[float | None]
    trajectory_reward: float | None
    score: float | None
    truncated: bool
    num_tokens: int


class ScoreResponse(BaseModel):
    rows: list[ScoredRow]


class RewardResponse(BaseModel):
    """One reward per query, in order (OpenRLHF reads `rewards`)."""

    rewards: list[float]


class Message(BaseModel):
    """An error: `detail` says what was wrong and what to do."""

    detail: str


class ValidationItem(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ValidationMessage(BaseModel):
    """A 422: one item per problem found, `loc` = ["body", "rows", index, field...]."""

    detail: list[ValidationItem]


@dataclass(frozen=True)
class Models:
    score_request: type[BaseModel]
    reward_request: type[BaseModel]


def models(limits: ServeLimits) -> Models:
    """The request models of a server with these limits."""
    n = limits.max_rows_per_request

    class ScoreRequest(BaseModel):
        """Rows to score; the response has them in the same order."""

        rows: list[Row] = Field(min_length=1, max_length=n)

    class RewardRequest(BaseModel):
        """OpenRLHF's remote reward-model request: `query` = prompt + response text, one per sample; `prompts`, when
        given, one per query (each query must start with its prompt); `labels` are accepted and not used."""

        query: list[StrictStr] = Field(min_length=1, max_length=n)
        prompts: list[StrictStr] | None = Field(default=None, max_length=n)
        labels: list[Any] | None = Field(default=None, max_length=n)

        @model_validator(mode="after")
        def _same_length(self):
            if self.prompts is not None and len(self.prompts) != len(self.query):
                raise ValueError(f"prompts must be one per query: got {len(self.prompts)} prompts for "
                                 f"{len(self.query)} queries")
            return self

    return Models(ScoreRequest, RewardRequest)
