"""The HTTP service's typed contract: the questions it takes and the answers it gives, as pydantic models.

The answers are the `Recommender`'s dicts, validated against these models on the way out, so
the OpenAPI schema (`/openapi.json`, the page at `/docs`) is what a client receives. One
question model serves both `GET /v1/recommend` (as query parameters) and each entry of a
`POST /v1/recommend` batch (as JSON).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from gamerec.recommender import MAX_BATCH, MAX_ITEMS, MAX_K


def _split(value: object) -> object:
    """`items=A,B`, `items=A&items=B` and a JSON list alike: the strings split at commas, blanks dropped."""
    if isinstance(value, str):
        value = [value]
    if isinstance(value, list) and all(isinstance(part, str) for part in value):
        return [asin.strip() for part in value for asin in part.split(",") if asin.strip()]
    return value  # not a list of strings: pydantic's own error says what is expected


Asins = Annotated[list[Annotated[str, Field(max_length=40)]], BeforeValidator(_split), Field(max_length=MAX_ITEMS)]
Name = Annotated[str, Field(min_length=1, max_length=200)]


class Question(BaseModel):
    """One question: what a known user, or someone who played a list of games, should play next."""

    model_config = ConfigDict(extra="forbid")

    user: Name | None = Field(None, description="a reviewer id of the data (give user or items)")
    items: Asins | None = Field(None, description="the games played, oldest first: ASIN,ASIN,... (give user or items)")
    k: int = Field(10, ge=1, le=MAX_K, description=f"how many games, 1 to {MAX_K}")
    platform: Name | None = Field(None, description="only games of this platform (e.g. PlayStation 4; any case)")
    brand: Name | None = Field(None, description="only games of this brand (any case)")
    min_price: float | None = Field(None, ge=0, description="only games with a price of at least this")
    max_price: float | None = Field(None, ge=0, description="only games with a price of at most this")
    exclude: Asins = Field(default_factory=list, description="games never to recommend: ASIN,ASIN,...")


class Batch(BaseModel):
    """Many questions in one request, answered in order."""

    model_config = ConfigDict(extra="forbid")

    queries: list[Question] = Field(min_length=1, max_length=MAX_BATCH, description=f"1 to {MAX_BATCH} questions")


class Because(BaseModel):
    """The user's (or the list's) game nearest to a recommended game in the item tower's space."""

    asin: str
    title: str
    similarity: float = Field(description="inner product of the two games' vectors (a cosine when normalised)")


class Game(BaseModel):
    """One recommended game."""

    rank: int
    asin: str
    title: str
    brand: str
    platform: str = Field(description="empty when the metadata names none")
    price: float | None
    score: float = Field(description="the model's score (cosine of user and game); reviews for the popularity list")
    because: Because | None = Field(description="'because you played ...'; null for the popularity list and /similar")


class Answer(BaseModel):
    """The answer to one question."""

    model_version: str
    query: Question = Field(description="the question as answered")
    source: Literal["model", "popularity"] = Field(description="popularity: the user is not in the data")
    owned: int = Field(description="games left out as the user's own (or as given)")
    note: str | None
    items: list[Game]


class BatchAnswer(BaseModel):
    """One answer per question of a batch, in order."""

    model_version: str
    answers: list[Answer]


class SimilarQuery(BaseModel):
    """The game asked about."""

    item: str
    title: str
    k: int


class SimilarAnswer(BaseModel):
    """The games nearest to one game."""

    model_version: str
    query: SimilarQuery
    source: Literal["model"]
    items: list[Game]


class Health(BaseModel):
    """What the service has loaded."""

    status: Literal["ok"]
    model_version: str
    sampler: str | None
    index: Literal["flat", "hnsw"]
    items: int
    users: int
    user_tower: Literal["numpy", "numpy_attention", "torch", "none"] = Field(
        description="how lists of games are embedded; none: this model cannot (it needs the user id)")
    platforms: list[str] = Field(description="the values the platform filter takes")


class Error(BaseModel):
    """Every error (404, 405, 413, 422): one line saying what is wrong and what was expected."""

    detail: str
    model_version: str
