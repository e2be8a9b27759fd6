"""``daimon-node problem create``: its flags, one declaration each, and the work they drive.

The flags are ``Annotated`` aliases declared once here, so the command's signature is one line a
flag; ``create_from_flags`` turns them into ``ProblemOptions`` and calls the problem kit.
"""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from chain.constants import DEFAULT_MIN_FEE, DEFAULT_QUORUM_PPB, PPB
from chain.errors import (
    CommitterParamsOutOfRange,
    ContributorBondTooSmall,
    InvalidProblem,
    ParameterOutOfRange,
    QuorumOutOfRange,
    SupplyTooLarge,
)

from daimon_node.errors import DaimonError


class ProblemCommandError(DaimonError):
    """A problem command got a bad option."""


def base_units(text: str, flag: str) -> int:
    from daimon_node.cli.chain import parse_amount

    return parse_amount(text, tokens=False, decimals=0, what=flag)


def parse_allocations(items: list[str]) -> tuple[tuple[bytes, int], ...]:
    """``--alloc ADDRESS=AMOUNT`` flags as genesis allocations; an address given twice is refused."""
    from daimon_node.cli.chain import parse_address

    out: dict[bytes, int] = {}
    for item in items:
        address_text, sep, amount_text = item.partition("=")
        if not sep:
            raise ProblemCommandError(f"--alloc {item!r} is not ADDRESS=AMOUNT")
        address = parse_address(address_text, "--alloc address")
        if address in out:
            raise ProblemCommandError(f"--alloc gives address {address_text} twice")
        out[address] = base_units(amount_text, f"--alloc amount for {address_text}")
    return tuple(out.items())


class DELKind(str, Enum):
    """``--del``: which DEL the problem publishes (``problem_kit.DEL_KINDS``)."""

    random = "random"
    learned = "learned"


def learned_del_settings(kind: DELKind, steps: Optional[int], max_seconds: Optional[float]) -> tuple[int, float]:
    """The learned DEL's training steps and time cap: the kit's defaults unless tuned.

    The tuning flags train a DEL, so with ``--del random`` they would be silently
    ignored; say so instead. A learned DEL needs torch: checked here, before any data is read.
    """
    from daimon_node.proofs.problem_del import LEARNED_DEL_SECONDS, LEARNED_DEL_STEPS, require_torch

    if kind is DELKind.random:
        given = [flag for flag, v in (("--del-steps", steps), ("--del-max-seconds", max_seconds)) if v is not None]
        if given:
            raise ProblemCommandError(f"{' and '.join(given)} tune the training of --del learned; "
                                      "--del random is not trained")
        return LEARNED_DEL_STEPS, LEARNED_DEL_SECONDS
    if steps is not None and steps < 1:
        raise ProblemCommandError(f"--del-steps {steps} must be at least 1")
    if max_seconds is not None and max_seconds < 0:
        raise ProblemCommandError(f"--del-max-seconds {max_seconds} must be 0 (no cap) or more")
    require_torch()
    return (LEARNED_DEL_STEPS if steps is None else steps,
            LEARNED_DEL_SECONDS if max_seconds is None else max_seconds)


# The flag that sets each parameter validate_params checks by name.
PARAM_FLAGS = {"t_p": "--t-p", "t_b": "--t-b", "num_classes": "the data's class count"}


def explain_refusal(exc: InvalidProblem) -> str:
    """The chain's typed refusal of a parameter as one line naming the flag that sets it."""
    if isinstance(exc, ParameterOutOfRange):
        flag = PARAM_FLAGS.get(exc.name, "--" + exc.name.replace("_", "-"))
        bound = f"at least {exc.low}" if exc.high is None else f"in {exc.low}..{exc.high}"
        return f"{flag} {exc.value}: the chain requires {exc.name} {bound}"
    if isinstance(exc, QuorumOutOfRange):
        return (f"--quorum-ppb {exc.quorum_ppb}: the chain requires more than half the stake "
                f"({PPB // 2}) and at most all of it ({PPB})")
    if isinstance(exc, ContributorBondTooSmall):
        return (f"--contributor-bond {exc.bond}: below what one season can mint ({exc.season_mint} with this "
                "--reward-a and --reward-scale); a missed reveal must compensate every locked holder")
    if isinstance(exc, CommitterParamsOutOfRange):
        return (f"--committer-delay {exc.delay}: a committer set that changes by transaction needs a delay of "
                f"1..{exc.limit} periods")
    if isinstance(exc, SupplyTooLarge):
        return (f"--alloc total {exc.genesis} plus what the problem can mint ({exc.mintable}) exceeds the largest "
                f"amount the chain encodes ({exc.limit})")
    return f"the chain would refuse this problem: {exc}"


DEL_HELP = ("The DEL published for the hidden test labels (measured at m = 10,000 on 2 busy cores, "
            "docs/soundness.md). random (default): an untrained random projection; create takes 5-18 s, "
            "no torch; d is unbiased but noisy (consistency allowance r = 0.32, 5-20% ranking 0.65); its "
            "weights reveal nothing of the labels. learned: the paper's DEL trained with torch (the train "
            "extra); create takes the --del-max-seconds cap, about 320 s; finer ranking (0.90) but d under-reports "
            "small errors (r = 1.0, which voids the holdout's consistency test) and its weights give away "
            "about 87% of the hidden labels.")


# --- the flags --------------------------------------------------------------------------
DatasetOpt = Annotated[Optional[str], typer.Option(
    "--dataset", help='Bundled dataset (digits; the default when no --data or --images is given).')]
OutOpt = Annotated[Path, typer.Option(
    "--out", "-o", help='Problem directory to write (published).')]
KeyDirOpt = Annotated[Path, typer.Option(
    "--key-dir", "-k", help="Creator's data directory.")]
SecretOutOpt = Annotated[Optional[Path], typer.Option(
    "--secret-out", help='Private file for x_t, x_h and the salt (default: OUT.secret.json beside OUT, mode 0600).')]
NameOpt = Annotated[str, typer.Option("--name")]
SymbolOpt = Annotated[str, typer.Option(
    "--symbol", help='Token symbol.')]
TestFractionOpt = Annotated[float, typer.Option(
    "--test-fraction", help='Share of the data in Z (hidden labels x_t).')]
HoldoutFractionOpt = Annotated[float, typer.Option(
    "--holdout-fraction", help='Share in sealed holdouts Z_h, all seasons together (0: none; see docs/soundness.md).')]
TPOpt = Annotated[int, typer.Option(
    "--t-p", help='Problem-definition period, seconds.')]
TBOpt = Annotated[int, typer.Option(
    "--t-b", help='Competition period, seconds.')]
GraceOpt = Annotated[int, typer.Option(
    "--grace", help='Seconds after a period before out-of-turn commits.')]
DeltaPpbOpt = Annotated[int, typer.Option(
    "--delta-ppb", help='Required improvement over d_c, ppb.')]
TieMarginPpbOpt = Annotated[int, typer.Option(
    "--tie-margin-ppb", help='Top-two score gap that is a tie, ppb.')]
MaxAmbiguousOpt = Annotated[Optional[int], typer.Option(
    "--max-ambiguous", help='Default: 1% of labelled positions.')]
MaxModelBytesOpt = Annotated[int, typer.Option("--max-model-bytes")]
MaxInferMsOpt = Annotated[int, typer.Option(
    "--max-infer-ms", help='Wall-time limit of one model run, ms.')]
SeasonPeriodsOpt = Annotated[int, typer.Option(
    "--season-periods", help='Season length S with a holdout.')]
SeasonsOpt = Annotated[int, typer.Option(
    "--seasons", help='Holdout sets to pre-split, one per season (the holdout share is divided among them; later ones stay '
    'private until sealed). On digits one set (m_h = 359) is the smallest that confirms a gain reliably '
    '(docs/soundness.md).')]
HoldoutMarginPpbOpt = Annotated[Optional[int], typer.Option(
    "--holdout-margin-ppb", help='True holdout gain the problem pays for, ppb (default: the smallest m_h resolves).')]
ConsistencyPpbOpt = Annotated[Optional[int], typer.Option(
    "--consistency-ppb", help="DEL's relative fidelity allowance, ppb (default: measured on the DEL built).")]
HoldoutZOpt = Annotated[float, typer.Option(
    "--holdout-z", help='z-score of the holdout tests (2.58: one-sided 99.5%).')]
CommitterOpt = Annotated[Optional[list[str]], typer.Option(
    "--committer", help='Committer public key (hex); repeat; default: the creator.')]
T0Opt = Annotated[Optional[int], typer.Option(
    "--t0", help='Creation time, Unix seconds (default: now).')]
DelKindOpt = Annotated[DELKind, typer.Option("--del", case_sensitive=False, help=DEL_HELP)]
DelStepsOpt = Annotated[Optional[int], typer.Option(
    "--del-steps", help='--del learned: training steps (default 3000; on a small machine the time cap ends training first).')]
DelMaxSecondsOpt = Annotated[Optional[float], typer.Option(
    "--del-max-seconds", help='--del learned: stop training after this many seconds (default 300; 0: no cap).')]
SeedOpt = Annotated[int, typer.Option(
    "--seed", help='Split and DEL seed.')]
MinFeeOpt = Annotated[int, typer.Option(
    "--min-fee", help='Least fee of any tx, base units (at least 1: a chain without a fee takes free spam).')]
RewardAOpt = Annotated[int, typer.Option(
    "--reward-a", help='Reward exponent a: an improvement from d_c to d pays scale * (G(d_c) - G(d)) with G(x) = (1 - x)^a '
    '(1..64).')]
RewardScaleOpt = Annotated[str, typer.Option(
    "--reward-scale", help='Reward scale, base units: what a perfect model from scratch earns.')]
ValidatorBondOpt = Annotated[str, typer.Option(
    "--validator-bond", help='Bond a validator locks, base units (at least 1; a vote weighs its bond).')]
ImproverBondOpt = Annotated[str, typer.Option(
    "--improver-bond", help='Bond locked with each anchored proof, base units (at least 1; burned if the proof is false).')]
ContributorBondOpt = Annotated[Optional[str], typer.Option(
    "--contributor-bond", help='Bond behind each sealed holdout, base units (default and least: what a season can mint).')]
MaxVotesOpt = Annotated[int, typer.Option(
    "--max-votes", help='Votes one block may carry (1..256).')]
QuorumPpbOpt = Annotated[int, typer.Option(
    "--quorum-ppb", help='Share of the bonded stake whose votes anchor a proof, ppb (above half, at most 10^9).')]
UnbondingPeriodsOpt = Annotated[int, typer.Option(
    "--unbonding-periods", help="Periods from 'validator unbond' until the bond can be withdrawn (at least 2).")]
RevealWindowOpt = Annotated[int, typer.Option(
    "--reveal-window", help='Periods after a season in which the contributor must reveal its holdout (at least 1).')]
CommitterBondOpt = Annotated[str, typer.Option(
    "--committer-bond", help='Bond a key locks to join the committer set by transaction, base units (0 with --committer-miss-limit '
    '0: the --committer list is fixed, as in Clique).')]
CommitterDelayOpt = Annotated[int, typer.Option(
    "--committer-delay", help='Periods before a committer joining, leaving or removed takes effect (1..32).')]
CommitterMissLimitOpt = Annotated[int, typer.Option(
    "--committer-miss-limit", help='In-turn slots a committer may miss in a row before it is removed and half its bond burns (0: never).')]
AllocOpt = Annotated[Optional[list[str]], typer.Option(
    "--alloc", help='Genesis allocation ADDRESS=AMOUNT (base units); repeat; default: the creator gets 1000 tokens.')]
DataOpt = Annotated[Optional[Path], typer.Option(
    "--data", help='Your labelled data: an .npz with X and y, a .csv/.tsv (with --label-column), or a folder with one '
    'subfolder of PNG/JPEG images per class.')]
ImagesOpt = Annotated[Optional[Path], typer.Option(
    "--images", help='IDX images file (MNIST/FashionMNIST format, gzipped or not); goes with --labels.')]
LabelsOpt = Annotated[Optional[Path], typer.Option(
    "--labels", help='IDX labels file; goes with --images.')]
LabelColumnOpt = Annotated[Optional[str], typer.Option(
    "--label-column", help='CSV: the column holding the labels (every other column is a numeric feature).')]
ImageSizeOpt = Annotated[Optional[str], typer.Option(
    "--image-size", help='Image folder: resize every image to W or WxH pixels (needed when sizes differ).')]
GrayscaleOpt = Annotated[Optional[bool], typer.Option(
    "--grayscale/--rgb", help='Image folder: inputs (H, W) or (H, W, 3) uint8 (default: grayscale when every image is).')]


def create_cmd(
    *,
    dataset: DatasetOpt = None,
    out: OutOpt,
    key_dir: KeyDirOpt = Path(".daimon"),
    secret_out: SecretOutOpt = None,
    name: NameOpt = "digits",
    symbol: SymbolOpt = "DIG",
    test_fraction: TestFractionOpt = 0.3,
    holdout_fraction: HoldoutFractionOpt = 0.2,
    t_p: TPOpt = 60,
    t_b: TBOpt = 60,
    grace: GraceOpt = 30,
    delta_ppb: DeltaPpbOpt = 1_000_000,
    tie_margin_ppb: TieMarginPpbOpt = 100_000,
    max_ambiguous: MaxAmbiguousOpt = None,
    max_model_bytes: MaxModelBytesOpt = 16 * 2**20,
    max_infer_ms: MaxInferMsOpt = 10_000,
    season_periods: SeasonPeriodsOpt = 4,
    seasons: SeasonsOpt = 1,
    holdout_margin_ppb: HoldoutMarginPpbOpt = None,
    consistency_ppb: ConsistencyPpbOpt = None,
    holdout_z: HoldoutZOpt = 2.58,
    committer: CommitterOpt = None,
    t0: T0Opt = None,
    del_kind: DelKindOpt = DELKind.random,
    del_steps: DelStepsOpt = None,
    del_max_seconds: DelMaxSecondsOpt = None,
    seed: SeedOpt = 0,
    min_fee: MinFeeOpt = DEFAULT_MIN_FEE,
    reward_a: RewardAOpt = 3,
    reward_scale: RewardScaleOpt = str(10**18),
    validator_bond: ValidatorBondOpt = str(10**18),
    improver_bond: ImproverBondOpt = str(10**17),
    contributor_bond: ContributorBondOpt = None,
    max_votes: MaxVotesOpt = 16,
    quorum_ppb: QuorumPpbOpt = DEFAULT_QUORUM_PPB,
    unbonding_periods: UnbondingPeriodsOpt = 2,
    reveal_window: RevealWindowOpt = 2,
    committer_bond: CommitterBondOpt = "0",
    committer_delay: CommitterDelayOpt = 2,
    committer_miss_limit: CommitterMissLimitOpt = 0,
    alloc: AllocOpt = None,
    data: DataOpt = None,
    images: ImagesOpt = None,
    labels: LabelsOpt = None,
    label_column: LabelColumnOpt = None,
    image_size: ImageSizeOpt = None,
    grayscale: GrayscaleOpt = None,
) -> None:
    """Create a problem: split the dataset, build the DEL, sign the proposal and test tuple.

    The data's input spec (shape, dtype, value range) goes into the problem:
    validators refuse a model whose input or output does not fit it.
    """
    create_from_flags(**locals())


def create_from_flags(
    *, dataset, out, key_dir, secret_out, name, symbol, test_fraction, holdout_fraction, t_p, t_b, grace, delta_ppb, tie_margin_ppb, max_ambiguous, max_model_bytes, max_infer_ms, season_periods, seasons, holdout_margin_ppb, consistency_ppb, holdout_z, committer, t0, del_kind, del_steps, del_max_seconds, seed, min_fee, reward_a, reward_scale, validator_bond, improver_bond, contributor_bond, max_votes, quorum_ppb, unbonding_periods, reveal_window, committer_bond, committer_delay, committer_miss_limit, alloc, data, images, labels, label_column, image_size, grayscale,
) -> None:
    """Build ``ProblemOptions`` from the flags, create the problem, print what a contributor needs next."""
    from daimon_node.proofs.datasets import DataOptions, parse_image_size, select_dataset
    from daimon_node.keystore import load_key
    from daimon_node.proofs.problem_errors import ProblemKitError
    from daimon_node.proofs.problem_kit import create_problem
    from daimon_node.proofs.problem_params import ProblemOptions

    learned_steps, learned_seconds = learned_del_settings(del_kind, del_steps, del_max_seconds)
    ds = select_dataset(dataset, data, images, labels,
                        DataOptions(label_column, parse_image_size(image_size), grayscale))

    committers = parse_committers(committer or [])
    keys = load_key(key_dir)
    opts = ProblemOptions(
        name=name, token_symbol=symbol, t_p=t_p, t_b=t_b, grace=grace, delta_ppb=delta_ppb,
        committers=committers, tie_margin_ppb=tie_margin_ppb, max_ambiguous=max_ambiguous,
        max_model_bytes=max_model_bytes, max_infer_ms=max_infer_ms, season_periods=season_periods,
        t0=t0, del_kind=del_kind.value, del_steps=learned_steps, del_max_seconds=learned_seconds, seed=seed,
        holdout_margin_ppb=holdout_margin_ppb, consistency_ppb=consistency_ppb,
        holdout_z_centi=int(round(holdout_z * 100)), min_fee=min_fee,
        reward_a=reward_a, reward_scale=base_units(reward_scale, "--reward-scale"),
        validator_bond=base_units(validator_bond, "--validator-bond"),
        improver_bond=base_units(improver_bond, "--improver-bond"),
        contributor_bond=None if contributor_bond is None else base_units(contributor_bond, "--contributor-bond"),
        max_votes=max_votes, quorum_ppb=quorum_ppb, unbonding_periods=unbonding_periods, reveal_window=reveal_window,
        committer_bond=base_units(committer_bond, "--committer-bond"), committer_delay=committer_delay,
        committer_miss_limit=committer_miss_limit,
        genesis=parse_allocations(alloc or []),
    )
    if min_fee < 1:
        raise ProblemCommandError(f"--min-fee {min_fee} must be at least 1")
    if not 0 < opts.holdout_z_centi <= 1000:
        raise ProblemCommandError(f"--holdout-z {holdout_z} is outside (0, 10]")
    try:
        created = create_problem(out, keys, dataset=ds, test_fraction=test_fraction,
                                 holdout_fraction=holdout_fraction, opts=opts, secret_path=secret_out, seasons=seasons)
    except ProblemKitError as err:
        if isinstance(err.__cause__, InvalidProblem):
            raise ProblemCommandError(explain_refusal(err.__cause__)) from None
        raise
    print_created(created, ds)


def print_created(created: Any, ds: Any) -> None:
    from daimon_node.proofs.problem_kit import problem_summary

    p = created.problem
    typer.echo(json.dumps({
        "chain_id": p.chain_id.hex(),
        "directory": str(created.directory),
        "secret": str(created.secret_path),
        "m": p.tuples[0].m,
        "m_h": p.holdout.m_h if p.holdout else 0,
        "holdout_margin_ppb": p.params.holdout_margin_ppb,
        "consistency_ppb": p.params.consistency_ppb,
        "train": len(created.split.train_y),
        "input_spec": problem_summary(p.proposal)["params"]["input_spec"],
        "classes": list(ds.class_names) or [str(c) for c in range(ds.num_classes)],
    }, indent=2))


def parse_committers(texts: list[str]) -> tuple[bytes, ...]:
    committers: tuple[bytes, ...] = ()
    for text in texts:
        try:
            pk = bytes.fromhex(text)
        except ValueError:
            pk = b""
        if len(pk) != 32:
            raise ProblemCommandError(f"--committer {text[:16]}... is not a 32-byte hex public key")
        committers += (pk,)
    return committers
