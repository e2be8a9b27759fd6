"""The contributor's holdouts, as its secret file holds them, against what the chain has sealed.

The secret file (``problem create --seasons K``, ``problem add-season``) lists holdouts in
the order they are meant to run. The chain decides which season each one becomes (a
``NewHoldout`` takes the next free season when it lands), so a holdout is found by its
commitment, never by the season number the file guessed; one is still to seal while the
chain has marked neither its inputs nor its commitment (``chain.holdouts``).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from chain.records import ProblemRecord, Season
from chain.state import State, get_account, get_holdout_mark

from daimon_node.proofs.problem_kit import SeasonHoldout, holdout_for_season, read_secret


_read: dict[Path, tuple[tuple[int, int], list[SeasonHoldout]]] = {}  # path -> (mtime_ns, size), holdouts


def secret_holdouts(secret_path: Path, problem_dir: Path | None) -> list[SeasonHoldout]:
    """Every holdout the secret file holds, in its order (none if there is no file); read again
    only when the file changes (``problem add-season`` rewrites it), not on every tick."""
    path = Path(secret_path)
    try:
        stat = path.stat()
    except FileNotFoundError:
        return []
    stamp = (stat.st_mtime_ns, stat.st_size)
    cached = _read.get(path)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    secret = read_secret(path)
    seasons: list[Any] = [int(e["season"]) for e in secret["holdouts"]] or [0]
    found = [h for h in (holdout_for_season(secret, season, problem_dir) for season in seasons) if h is not None]
    _read[path] = (stamp, found)
    return found


def find_holdout(held: list[SeasonHoldout], commitment: bytes, season: int) -> SeasonHoldout | None:
    """The held holdout sealed under ``commitment``, numbered as the chain's ``season``."""
    for h in held:
        if h.sealed.commitment == commitment:
            return replace(h, season=season)
    return None


def is_sealed(state: State, holdout: SeasonHoldout) -> bool:
    """Whether the chain has sealed this holdout (its inputs or its commitment) for some season."""
    return any(get_holdout_mark(state, v) is not None for v in (holdout.sealed.z_h_id, holdout.sealed.commitment))


def next_to_seal(state: State, held: list[SeasonHoldout]) -> SeasonHoldout | None:
    """The first held holdout the chain has not sealed yet, if its inputs are at hand."""
    for h in held:
        if not is_sealed(state, h) and h.z_h_bytes is not None:
            return h
    return None


def may_seal_now(state: State, problem: ProblemRecord, season: Season, address: bytes) -> bool:
    """Seal when no season is open, or one season ahead of the running one while the contributor
    can lock a second bond (and pay the fee): the next season then opens the moment this one
    is judged, without a period in between."""
    if season.holdout is None:
        return True
    params = problem.params
    return season.sealed_ahead == 0 and get_account(state, address).balance >= params.contributor_bond + params.min_fee
