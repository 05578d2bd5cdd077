"""The base of every ``/v1`` request body: a field the model does not name is a 422.

Silently dropping an unknown field turns a typo into a different request (a misspelt
``track_opens`` sends mail untracked). The dialects keep their seeds' leniency.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid")
