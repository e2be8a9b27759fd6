"""Issue 9 pieces without a network: per-season holdout sets, the lookup ONNX model, the cheater."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest

from chain.crypto import KeyPair
from chain.labels import array_to_labels
from chain.season import holdout_commitment
from chain.signing import is_valid_signature
from daimon_node.harness.cheater import build_cheat_model, model_labels
from daimon_node.harness.examples import train_example
from daimon_node.harness.lookup_onnx import lookup_model
from daimon_node.proofs.problem_del import calibrate_consistency
from daimon_node.proofs.problem_errors import ProblemKitError
from daimon_node.proofs.problem_kit import (
    create_problem,
    holdout_for_season,
    load_train_split,
    read_secret,
    season_reveal_for,
)
from daimon_node.proofs.problem_params import ProblemOptions, detectable_margin
from daimon_node.proofs.sandbox import Sandbox

CREATOR = KeyPair.from_label("soundness-creator")


@pytest.fixture(scope="module")
def created(tmp_path_factory):  # type: ignore[no-untyped-def]
    return create_problem(tmp_path_factory.mktemp("sound") / "digits", CREATOR, holdout_fraction=0.3, seasons=3)


@pytest.fixture(scope="module")
def sandbox():  # type: ignore[no-untyped-def]
    with Sandbox() as sb:
        yield sb


def test_holdout_defaults_are_measured_for_the_problem(created) -> None:  # type: ignore[no-untyped-def]
    params = created.problem.params
    m_h = created.problem.holdout.m_h
    x_t = read_secret(created.secret_path)["x_t"]
    assert params.holdout_margin_ppb == detectable_margin(m_h, params.holdout_z_centi)
    assert params.consistency_ppb == calibrate_consistency(created.problem.dels[0], x_t, params.num_classes)
    # a random projection with n = 256 keeps distances to about 10% (1 sigma): the allowance is a few sigma
    assert 100_000_000 <= params.consistency_ppb <= 500_000_000


def test_detectable_margin_shrinks_with_the_holdout() -> None:
    margins = [detectable_margin(m_h, 233) for m_h in (180, 1000, 10_000)]
    assert margins == sorted(margins, reverse=True) and margins[-1] > 0
    # 2 * 2.33 * sqrt(0.15 / 1000) = 5.7% -> rounded up to 6%
    assert margins[1] == 60_000_000
    assert detectable_margin(0, 233) == 0


def test_explicit_holdout_options_are_kept(tmp_path: Path) -> None:
    opts = ProblemOptions(holdout_margin_ppb=20_000_000, consistency_ppb=70_000_000, holdout_z_centi=300)
    made = create_problem(tmp_path / "digits", CREATOR, holdout_fraction=0.2, opts=opts)
    params = made.problem.params
    assert (params.holdout_margin_ppb, params.consistency_ppb, params.holdout_z_centi) == (20_000_000, 70_000_000, 300)


def test_seasons_get_disjoint_sealed_holdouts(created) -> None:  # type: ignore[no-untyped-def]
    secret = read_secret(created.secret_path)
    assert stat.S_IMODE(os.stat(created.secret_path).st_mode) == 0o600
    held = [holdout_for_season(secret, k, created.directory) for k in range(3)]
    assert holdout_for_season(secret, 3, created.directory) is None
    assert held[0].sealed == created.problem.proposal.holdout  # season 0 is the proposal's
    published = {p.name for p in created.directory.iterdir()}
    ids = [h.sealed.z_h_id.hex() for h in held]
    assert len(set(ids)) == 3 and ids[0] in published
    assert not (set(ids[1:]) & published)  # later seasons' inputs stay private until sealed
    for h in held:
        assert h.z_h_bytes is not None
        assert holdout_commitment(h.salt, h.x_h) == h.sealed.commitment
        reveal = season_reveal_for(h, created.problem.chain_id, CREATOR)
        assert reveal.season == h.season and is_valid_signature(reveal, created.problem.chain_id)
    assert len({h.salt for h in held}) == 3
    assert sum(h.sealed.m_h for h in held) == len(created.split.holdout_y)


def test_season_reveal_refuses_a_secret_that_does_not_open(created) -> None:  # type: ignore[no-untyped-def]
    import dataclasses

    h = holdout_for_season(read_secret(created.secret_path), 1, created.directory)
    with pytest.raises(ProblemKitError, match="does not open"):
        season_reveal_for(dataclasses.replace(h, salt=b"x" * 32), created.problem.chain_id, CREATOR)


def test_lookup_model_returns_each_rows_label(sandbox) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(0)
    table = rng.integers(0, 17, (50, 64)).astype(np.float32)
    labels = rng.integers(0, 10, 50)
    model = lookup_model(table, labels, 10)
    (scores,) = sandbox.run(model, [(b"t" * 32, table)], num_classes=10, max_model_bytes=1 << 24)
    assert (scores.argmax(axis=1) == labels).all()
    top2 = np.sort(scores, axis=1)[:, -2:]
    assert (top2[:, 1] - top2[:, 0] == 1.0).all()  # no near-ties


def test_cheater_fools_the_del_and_copies_the_public_model_on_the_holdout(created, sandbox) -> None:  # type: ignore[no-untyped-def]
    problem = created.problem
    x, y = load_train_split(created.directory)
    public = train_example("weak", x, y, 10).onnx_bytes
    cheat = build_cheat_model(problem, public, sandbox, max_seconds=20)
    assert cheat.end_d_ppb[0] < cheat.start_d_ppb[0] // 4
    base = model_labels(public, problem, sandbox)
    got = model_labels(cheat.onnx_bytes, problem, sandbox)
    assert (got[0] == cheat.z_labels[0]).mean() > 0.99  # the table answers Z (duplicate images aside)
    assert (got[1] == base[1]).all()  # and the public model's labels on Z_h
    assert len(cheat.onnx_bytes) <= problem.params.max_model_bytes
    assert array_to_labels(got[1]) == array_to_labels(base[1])
