"""Typed results of the SDK."""

from __future__ import annotations

from typing import TypeAlias

from pydantic import BaseModel, ConfigDict, Field

from dfserve.client._exceptions import DfserveClientError


class Prediction(BaseModel):
    """One image's classification, as the server computed it."""

    model_config = ConfigDict(frozen=True, protected_namespaces=(), use_attribute_docstrings=True)

    label: str
    """The label with the highest score."""
    score: float = Field(ge=0.0, le=1.0)
    """The score of `label`: a probability in [0, 1]."""
    scores: dict[str, float]
    """Every label's probability, in the model's label order. For a single-logit (sigmoid) detector the two
    values are P(negative) and P(positive) and sum to 1; `scores[<positive label>]` is the number a
    Transformers pipeline reports for that model."""
    model_name: str
    """The model that answered (the ensemble in `file` mode, the engine in `pixels` mode)."""
    model_version: str
    """The version of that model the server ran."""
    random_weights: bool
    """True when the served model was built with random weights (a smoke-test build): its scores mean nothing."""
    path: str | None = None
    """The file the image came from, when the input was a path; None for bytes, file objects and arrays."""
    positive_label: str | None = None
    """The positive class of a single-logit detector (e.g. `fake`), from the served spec; None otherwise."""
    request_id: str | None = None
    """The id the request was sent with (Triton's request ``id``, in its logs and traces); errors carry it too."""

    @property
    def positive_score(self) -> float | None:
        """P(positive class) for a detector (e.g. P(fake)), whichever label won; None without a positive class."""
        return None if self.positive_label is None else self.scores[self.positive_label]


class Health(BaseModel):
    """What `Client.health()` found. Reading it never raises for an unreachable server: `live` is False."""

    model_config = ConfigDict(frozen=True, protected_namespaces=(), use_attribute_docstrings=True)

    url: str
    """The server asked."""
    live: bool
    """The server process answers."""
    ready: bool
    """The server says it is ready for inference."""
    model_ready: bool
    """The entry model (the ensemble by default) is loaded and ready."""
    error: str | None = None
    """Why the server is not live or not ready, when known."""


Result: TypeAlias = Prediction | DfserveClientError
"""One item of `classify_many`: the prediction, or the error that item met (in place, not raised)."""
