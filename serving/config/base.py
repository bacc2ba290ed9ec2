"""What every section of the server config shares: unknown keys are refused, values never change once read."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    # A misspelt key in a YAML file must fail loudly, not be ignored.
    model_config = ConfigDict(extra="forbid", frozen=True)
