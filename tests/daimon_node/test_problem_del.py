"""``problem create --del random|learned``: both choices build the DEL they name; the tuning flags of
the learned DEL are refused with the random one; a learned DEL without torch fails in one line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from chain.crypto import KeyPair
from daimon_node.cli.app import app
from daimon_node.cli.problem_create import DELKind, learned_del_settings
from daimon_node.errors import DaimonError
from daimon_node.keystore import init_data_dir
from daimon_node.proofs.problem_del import LEARNED_DEL_SECONDS, LEARNED_DEL_STEPS
from daimon_node.proofs.problem_errors import DELNeedsTorch, UnknownDELKind
from daimon_node.proofs.problem_kit import PROBLEM_FILE, PROPOSAL_FILE, create_problem, load_problem
from daimon_node.proofs.problem_params import ProblemOptions


def create(tmp_path: Path, *flags: str):  # type: ignore[no-untyped-def]
    creator = tmp_path / "creator"
    if not creator.exists():
        init_data_dir(creator, seed=b"\x16" * 32)
    prob = tmp_path / "prob"
    result = CliRunner().invoke(app, ["problem", "create", "--out", str(prob), "--key-dir", str(creator),
                                      "--t0", "1700000000", *flags])
    return result, prob


def assert_refused_in_one_line(result, prob: Path, *words: str) -> None:  # type: ignore[no-untyped-def]
    assert result.exit_code == 1 and isinstance(result.exception, DaimonError), (result.output, result.exception)
    message = str(result.exception)
    assert all(w in message for w in words) and "\n" not in message, message
    assert not (prob / PROPOSAL_FILE).exists()


@pytest.mark.parametrize("flags", [(), ("--del", "random")])
def test_random_del_is_the_default_and_the_explicit_choice(tmp_path: Path, flags: tuple[str, ...]) -> None:
    result, prob = create(tmp_path, *flags)
    assert result.exit_code == 0, result.output
    assert json.loads((prob / PROBLEM_FILE).read_text())["del"]["kind"] == "random-projection"
    assert load_problem(prob).dels[0].config["kind"] == "random-projection"


def test_learned_del_is_trained_with_the_given_steps(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    # Two steps: the flag must reach the trainer, not train a useful DEL (the benchmark measures that).
    result, prob = create(tmp_path, "--del", "learned", "--del-steps", "2", "--del-max-seconds", "0")
    assert result.exit_code == 0, result.output
    summary = json.loads((prob / PROBLEM_FILE).read_text())
    assert summary["del"]["kind"] == "trained"
    config = load_problem(prob).dels[0].config
    assert config["del_config"]["steps"] == 2 and config["del_config"]["max_seconds"] == 0.0
    assert config["history"]["steps_done"] == 2
    # Published: only what f_int evaluates, not the trainer's float weights (three times the bytes).
    from safetensors.numpy import load

    tensors = load((prob / load_problem(prob).tuples[0].del_id.hex()).read_bytes())
    assert sorted(tensors) == ["int.b1", "int.b2", "int.w1", "int.w2"]


def test_learned_del_defaults_to_the_kits_steps_and_cap() -> None:
    pytest.importorskip("torch")
    assert learned_del_settings(DELKind.learned, None, None) == (LEARNED_DEL_STEPS, LEARNED_DEL_SECONDS)
    assert learned_del_settings(DELKind.learned, 7, 0.0) == (7, 0.0)


@pytest.mark.parametrize("flags, words", [
    (("--del-steps", "500"), ("--del-steps", "--del random is not trained")),
    (("--del", "random", "--del-max-seconds", "30"), ("--del-max-seconds", "--del random is not trained")),
    (("--del", "learned", "--del-steps", "0"), ("--del-steps 0", "at least 1")),
    (("--del", "learned", "--del-max-seconds", "-1"), ("--del-max-seconds -1", "0 (no cap) or more")),
])
def test_invalid_del_flags_are_refused_in_one_line(tmp_path: Path, flags: tuple[str, ...], words: tuple[str, ...]) -> None:
    if "learned" in flags:
        pytest.importorskip("torch")
    result, prob = create(tmp_path, *flags)
    assert_refused_in_one_line(result, prob, *words)


def test_invalid_learned_del_without_torch_fails_before_any_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError, as where it is absent
    result, prob = create(tmp_path, "--del", "learned")
    assert isinstance(result.exception, DELNeedsTorch)
    assert_refused_in_one_line(result, prob, "torch", "pip install '.[train]'", "--del random")
    with pytest.raises(DELNeedsTorch):  # the kit refuses it too, before splitting or writing anything
        create_problem(tmp_path / "kit", KeyPair.from_label("del-creator"), opts=ProblemOptions(del_kind="learned"))
    assert not (tmp_path / "kit").exists()


def test_invalid_del_kind_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UnknownDELKind) as info:
        create_problem(tmp_path / "kit", KeyPair.from_label("del-creator"), opts=ProblemOptions(del_kind="pca"))
    assert info.value.kind == "pca" and not (tmp_path / "kit").exists()
    result, _ = create(tmp_path, "--del", "pca")
    assert result.exit_code == 2 and "pca" in result.output  # typer's usage error names the bad choice


def test_tuning_flags_state_the_kits_defaults() -> None:
    """The help text carries the defaults as literals (the CLI does not import the kit to start); they must
    be the kit's."""
    import typer

    command = typer.main.get_command(app).commands["problem"].commands["create"]  # type: ignore[attr-defined]
    helps = {p.opts[0]: p.help for p in command.params if p.opts}
    assert f"default {LEARNED_DEL_STEPS};" in helps["--del-steps"]
    assert f"default {LEARNED_DEL_SECONDS:g};" in helps["--del-max-seconds"]
