"""``model submit`` proves against the chain's current season, not the problem directory's first one."""

from __future__ import annotations

import dataclasses
import hashlib
import io
from typing import Any

import numpy as np
import pytest

from chain.crypto import KeyPair
from daimon_node.cli.model import ModelCommandError, season_problem
from daimon_node.proofs.problem_kit import Problem, create_problem
from daimon_node.proofs.problem_params import ProblemOptions


@pytest.fixture(scope="module")
def problem(tmp_path_factory: pytest.TempPathFactory) -> Problem:
    made = create_problem(tmp_path_factory.mktemp("season_cli") / "digits", KeyPair.from_label("creator"),
                          holdout_fraction=0.2, opts=ProblemOptions(t0=1_700_000_000))
    return made.problem


class FakeClient:
    """Serves content by id, as ``daimon_getContent`` does."""

    def __init__(self, *blobs: bytes) -> None:
        self.blobs = {hashlib.sha256(b).digest(): b for b in blobs}
        self.asked: list[bytes] = []

    def get_content(self, content_id: Any) -> bytes:
        cid = content_id if isinstance(content_id, bytes) else bytes.fromhex(content_id.removeprefix("0x"))
        self.asked.append(cid)
        return self.blobs[cid]


def npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def season(index: int, z_h_id: bytes | None, m_h: int = 0, confirmed: bytes | None = None) -> dict[str, Any]:
    holdout = None if z_h_id is None else {"z_h_id": "0x" + z_h_id.hex(), "m_h": m_h, "commitment": "0x" + "ab" * 32}
    return {"season": {"index": index, "sealed": holdout is not None, "holdout": holdout,
                       "confirmed_model": None if confirmed is None else "0x" + confirmed.hex()}}


def test_no_seasons_keeps_the_problem(problem: Problem) -> None:
    assert season_problem(FakeClient(), problem, {"d_c_ppb": [1]}) is problem


def test_unsealed_season_is_a_clear_error(problem: Problem) -> None:
    with pytest.raises(ModelCommandError, match="season 1 has no sealed holdout yet"):
        season_problem(FakeClient(), problem, season(1, None))


def test_season_zero_uses_the_local_holdout_and_fetches_the_confirmed_model(problem: Problem) -> None:
    assert problem.holdout is not None
    model = b"confirmed onnx"
    client = FakeClient(model)
    got = season_problem(client, problem, season(0, problem.holdout.z_h_id, problem.holdout.m_h,
                                                 hashlib.sha256(model).digest()))
    assert got.z_h is problem.z_h and got.confirmed_model == model
    assert client.asked == [hashlib.sha256(model).digest()]
    assert len(got.sizes()) == len(problem.sizes()) + 1


def test_next_season_fetches_its_holdout_inputs(problem: Problem) -> None:
    assert problem.z_h is not None
    z_h1 = problem.z_h[::-1].copy()[:50]
    blob = npy(z_h1)
    cid = hashlib.sha256(blob).digest()
    got = season_problem(FakeClient(blob), problem, season(1, cid, 50))
    assert got.holdout is not None and got.holdout.z_h_id == cid and got.holdout.m_h == 50
    assert np.array_equal(got.z_h, z_h1) and got.confirmed_model is None
    assert dataclasses.replace(got, z_h=None).sizes()[-1] == 50
