"""An evaluation-only strategy (the oracle: it reads the true answer) is refused wherever a served request, or a
server's defaults, could name it; `r2t2 eval` still runs it."""
from __future__ import annotations

import pytest
from pydantic import ValidationError

from r2t2.routing.strategies import strategy_names
from serving.api.options import R2T2Options


@pytest.mark.parametrize("field", ["strategy", "lm_strategy"])
def test_a_request_naming_the_oracle_is_refused_naming_the_field(field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        R2T2Options.model_validate({field: "oracle"})
    assert caught.value.errors()[0]["loc"] == (field,)
    R2T2Options.model_validate({field: "ngd"})


def test_the_schema_offers_only_served_strategies_for_both_fields() -> None:
    properties = R2T2Options.model_json_schema()["properties"]
    for field in ("strategy", "lm_strategy"):
        offered = properties[field]["anyOf"][0]["enum"]
        assert "oracle" not in offered and set(offered) == set(strategy_names(served=True))


def test_server_defaults_naming_the_oracle_are_refused_at_start(tmp_path) -> None:  # noqa: ANN001
    from serving.pipeline.factory import load_pipeline

    for field in ("strategy", "lm_strategy"):
        with pytest.raises(ValueError, match=f"{field} 'oracle' is for evaluation only"):
            load_pipeline({"checkpoint": "embedded", "index_dir": str(tmp_path), "build_default_index": False,
                           "r2t2": {field: "oracle"}})
