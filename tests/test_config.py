import pytest

from gamerec import config
from gamerec.config import PrepareParams, SyntheticParams, TextParams
from gamerec.errors import GamerecError


def test_defaults_and_nested_group():
    p = config.parse(PrepareParams, {"min_interactions": 3, "text": {"min_count": 1}}, "prepare")
    assert p.min_interactions == 3
    assert p.text == TextParams(min_count=1)
    assert p.split == "leave_last_out"


def test_raw_dir_inside_the_repo_or_absolute():
    assert config.parse(PrepareParams, {"raw_dir": "data/raw/../raw/x"}, "prepare").raw_dir == "data/raw/../raw/x"
    assert config.parse(PrepareParams, {"raw_dir": "/srv/amazon"}, "prepare").raw_dir == "/srv/amazon"


def test_int_is_accepted_for_float():
    assert config.parse(SyntheticParams, {"genre_focus": 1}, "synthetic").genre_focus == 1.0


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"split": "random"}, "prepare.split = 'random' is not valid; expected one of 'leave_last_out', 'global_time'"),
        ({"min_interactions": "5"}, "prepare.min_interactions = '5' is not valid; expected an integer"),
        ({"min_interactions": 0}, "prepare.min_interactions = 0 is out of range; expected at least 1"),
        ({"max_bad_fraction": 1.5}, "prepare.max_bad_fraction = 1.5 is out of range; expected between 0.0 and 1.0"),
        ({"min_interaction": 5}, "unknown key prepare.min_interaction; did you mean prepare.min_interactions?"),
        ({"text": {"max_vocab": True}}, "prepare.text.max_vocab = True is not valid; expected an integer"),
        ({"val_quantile": 0.9, "test_quantile": 0.8}, "prepare.val_quantile = 0.9 must be below prepare.test_quantile = 0.8"),
        ([1, 2], "prepare must be a mapping"),
        ({"raw_dir": "../shared/data"}, "prepare.raw_dir = '../shared/data' points outside the repository"),
        ({"raw_dir": "data/../../x"}, "points outside the repository"),
    ],
)
def test_bad_values_name_key_value_and_allowed(raw, message):
    with pytest.raises(GamerecError) as err:
        config.parse(PrepareParams, raw, "prepare")
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_read_params_errors(tmp_path):
    with pytest.raises(GamerecError, match="not found"):
        config.read_params(tmp_path / "params.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("prepare:\n  raw_dir: [unclosed\n")
    with pytest.raises(GamerecError, match=r"bad.yaml line \d+: not valid YAML"):
        config.read_params(bad)


def test_repository_params_are_valid():
    params = config.read_params()
    config.parse(SyntheticParams, params["synthetic"], "synthetic")
    config.parse(PrepareParams, params["prepare"], "prepare")


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"user_id": False, "history": 0}, "model.user_id = false needs model.history > 0"),
        ({"pooling": "max", "history": 5}, "model.pooling = 'max' is not valid; expected one of 'mean', 'recency'"),
        ({"causal": "yes"}, "model.causal = 'yes' is not valid; expected true or false"),
    ],
)
def test_bad_model_params(raw, message):
    with pytest.raises(GamerecError) as err:
        config.parse(config.ModelParams, raw, "model")
    assert message in str(err.value) and "\n" not in str(err.value)


def test_history_only_user_tower_is_valid():
    params = config.parse(config.ModelParams, {"user_id": False, "history": 20, "causal": True, "pooling": "recency"}, "model")
    assert (params.user_id, params.history, params.causal, params.pooling) == (False, 20, True, "recency")
