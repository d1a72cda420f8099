"""Run settings are defined once: the app's generated pyproject carries them, and Flower's run config
converts back to them."""

import tomllib

import pytest

from fedshop.core.settings import RunSettings
from fedshop.operations.app_bundle import CLIENT_APP, SERVER_APP, app_pyproject


def test_the_apps_run_config_is_generated_from_run_settings() -> None:
    app = tomllib.loads(app_pyproject())["tool"]["flwr"]["app"]
    assert app["config"] == RunSettings().to_run_config()
    assert app["components"] == {"serverapp": SERVER_APP, "clientapp": CLIENT_APP}


def test_from_run_config_converts_and_refuses_unknown_keys() -> None:
    settings = RunSettings.from_run_config({"num-server-rounds": 3, "learning-rate": 1, "run-dir": "x"})
    assert settings.num_server_rounds == 3 and settings.learning_rate == 1.0 and settings.run_dir == "x"
    with pytest.raises(ValueError, match="unknown run-config key 'epochs'"):
        RunSettings.from_run_config({"epochs": 2})
    with pytest.raises(ValueError, match="'he' must be true or false"):
        RunSettings.from_run_config({"he": "false"})


def test_round_config_leaves_out_server_only_settings() -> None:
    config = RunSettings(public_context="/srv/public.ctx").training_config()
    assert "public-context" not in config and "run-dir" not in config
    assert config["dp"] is True and config["he"] is True
