"""Every shipped config loads; typos and wrong types are refused with one clear message."""

from __future__ import annotations

from pathlib import Path

import pytest

from daimon_node.config import load_config
from daimon_node.errors import ConfigError

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.toml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_config_loads(path: Path) -> None:
    cfg = load_config(path)
    assert cfg.node.data_dir
    assert cfg.p2p.listen.startswith("/ip4/")


def test_every_role_has_a_config() -> None:
    names = {p.stem for p in CONFIGS}
    assert {"devnet", "contributor", "improver", "validator", "committer", "runner"} <= names


def test_unknown_key_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[rpc]\nprot = 1\n")
    with pytest.raises(ConfigError, match="unknown config key rpc.prot"):
        load_config(bad)


def test_wrong_type_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[rpc]\nport = "8545"\n')
    with pytest.raises(ConfigError, match="rpc.port must be int"):
        load_config(bad)


def test_flag_overrides_file() -> None:
    cfg = load_config(CONFIGS[0], {"rpc.port": 9999, "roles.validator.enabled": False})
    assert cfg.rpc.port == 9999 and cfg.roles.validator.enabled is False


def test_runner_serve_defaults_to_confirmed_and_refuses_a_typo(tmp_path: Path) -> None:
    assert load_config(None).roles.runner.serve == "confirmed"
    assert load_config(None, {"roles.runner.serve": "provisional"}).roles.runner.serve == "provisional"
    bad = tmp_path / "bad.toml"
    bad.write_text('[roles.runner]\nserve = "confirmd"\n')
    with pytest.raises(ConfigError, match="roles.runner.serve must be one of 'confirmed', 'provisional', not 'confirmd'"):
        load_config(bad)
