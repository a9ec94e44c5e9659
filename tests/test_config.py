"""Configuration: defaults, file, environment and flags, in that order."""

from __future__ import annotations

from pathlib import Path

import pytest

from voxline.config import load_config
from voxline.errors import ConfigError


def test_defaults_need_no_file_and_no_environment() -> None:
    config = load_config(env={})
    assert config.asr.model == "tiny.en" and config.server.port == 8000


def test_file_then_environment_then_flags_each_override_the_last(tmp_path: Path) -> None:
    path = tmp_path / "voxline.toml"
    path.write_text('[server]\nport = 9000\nhost = "0.0.0.0"\n[asr]\nmodel = "base"\n')
    config = load_config(path, env={"VOXLINE_SERVER__PORT": "9100"}, overrides={"asr": {"model": "/models/x"}})
    assert (config.server.host, config.server.port, config.asr.model) == ("0.0.0.0", 9100, "/models/x")


def test_unknown_settings_and_bad_values_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"server\.prot"):
        load_config(env={"VOXLINE_SERVER__PROT": "1"})
    with pytest.raises(ConfigError, match=r"server\.port"):
        load_config(env={"VOXLINE_SERVER__PORT": "eighty"})
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml", env={})
