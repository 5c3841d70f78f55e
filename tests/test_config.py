"""config.example.toml documents every setting, with the defaults the server really uses."""

from __future__ import annotations

import tomllib

import msgspec

from conftest import REPO
from faas.config import Config, load_config


def test_example_config_lists_every_key_with_its_default():
    example = tomllib.loads((REPO / "config.example.toml").read_text())
    defaults = msgspec.to_builtins(Config())
    for table, values in defaults.items():
        assert table in example, f"[{table}] is missing from config.example.toml"
        for key in values:
            if key == "interpreters":
                continue  # a map of examples, commented out
            assert key in example[table], f"{table}.{key} is missing from config.example.toml"
    assert msgspec.to_builtins(load_config(REPO / "config.example.toml", environ={})) == defaults


def test_environment_overrides_file(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[account]\nregion = "eu-west-1"\n[async]\nretry_delays = [1.0]\n')
    config = load_config(path, environ={"FAAS_ACCOUNT__REGION": "ap-south-1", "FAAS_RUNTIME__FREEZE": "false"},
                         overrides={"server": {"port": 1234}})
    assert config.account.region == "ap-south-1"
    assert config.async_.retry_delays == [1.0]
    assert config.runtime.freeze is False
    assert config.server.port == 1234
