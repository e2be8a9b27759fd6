"""The single-process devnet demo behind ``make demo``.

A contributor publishes a problem over scikit-learn's bundled digits (real
images, real labels: x_t is the hidden test half); three improvers train real
classifiers of rising quality and compete over several periods; validators vote;
committers rotate. Every block is signed and applied by the consensus code,
imported into a LevelDB store, re-opened, and the chain is printed: blocks,
distances and balances.

    python -m daimon_node.harness.devnet_demo [--dir DIR]   (make devnet)
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from chain.crypto import KeyPair
from chain.devnet import Devnet, DevnetConfig
from chain.state import get_meta
from chain.store import ChainStore
from chain.types import Block, ImprovementBody
from del_embed.integer import PPB, error_ppb


def train_improvers(seed: int = 0) -> tuple[np.ndarray, list[tuple[str, np.ndarray]]]:
    """Real digits classifiers of different quality; returns x_t and their test predictions."""
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.svm import SVC

    digits = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        digits.data, digits.target, test_size=0.5, random_state=seed, stratify=digits.target
    )

    def pool4(x: np.ndarray) -> np.ndarray:  # 8x8 -> 2x2 means: a deliberately weak input
        return x.reshape(-1, 2, 4, 2, 4).mean(axis=(2, 4)).reshape(len(x), -1)

    weak = LogisticRegression(max_iter=2000).fit(pool4(x_train), y_train).predict(pool4(x_test))
    knn = KNeighborsClassifier(n_neighbors=1).fit(x_train[:150], y_train[:150]).predict(x_test)
    svc = SVC(gamma=0.001).fit(x_train, y_train).predict(x_test)
    tiny = KNeighborsClassifier(n_neighbors=1).fit(x_train[:40], y_train[:40]).predict(x_test)
    return y_test.astype(np.int64), [
        ("logreg-2x2 pixels", weak.astype(np.int64)),
        ("1-NN on 150 images", knn.astype(np.int64)),
        ("SVC full pixels", svc.astype(np.int64)),
        ("1-NN on 40 images", tiny.astype(np.int64)),
    ]


def short(key: bytes) -> str:
    return key.hex()[:8]


def fmt_tokens(amount: int, decimals: int = 18) -> str:
    return f"{amount / 10**decimals:,.6f}"


def run(data_dir: Path, console: Console) -> None:
    console.print("[bold]DaiMoN single-process devnet[/bold]: digits problem, 3 improvers, 4 validators, 3 committers")
    truth, improvers = train_improvers()
    d = Devnet(DevnetConfig(n=64, t_p=60, t_b=60), truth_labels=truth)
    d.start()
    d.bond_validators()
    names = {}
    # The last model is worse than the best before it: it cannot beat d_c, so its
    # settlement fails, its improver bond burns and the validators who voted for it are slashed.
    for (name, labels), keys in zip(improvers, d.improver_keys):
        names[keys.address] = name
        err = error_ppb(labels, truth) / PPB
        console.print(f"  improver {keys.address[:8]} ({name}): true test error {err:.1%}")
        d.improve(keys, labels)

    db_path = data_dir / "chain"
    with ChainStore(db_path) as store:
        for block in d.blocks:
            store.import_block(Block.decode(block.encode()), d.env)
    with ChainStore(db_path) as store:
        assert store.state.root == d.state.root, "reopened store differs from the devnet"
        console.print(f"imported {store.height + 1} blocks into LevelDB at {db_path}; reopened head "
                      f"{store.head.hex()[:16]} with the same state root")

    table = Table(title="blocks")
    for col in ("height", "period", "committer", "txs", "anchored PoI", "votes", "settlement", "distance d", "improver reward"):
        table.add_column(col)
    for block, receipt in zip(d.blocks, d.receipts):
        h = block.header
        body = block.body
        if not isinstance(body, ImprovementBody):
            table.add_row("0", "0", short(h.committer), "-", "problem block", "-", "-", "-", "-")
            continue
        s = receipt.settlement
        table.add_row(
            str(h.height), str(h.period), short(h.committer), str(len(body.transactions)),
            short(body.anchor.poi.hash) if body.anchor else "",
            str(len(body.anchor.votes)) if body.anchor else "",
            f"{s.outcome} {s.reason}".strip() if s else "",
            ",".join(f"{x / PPB:.4f}" for x in s.distances) if s else "",
            fmt_tokens(s.improver_reward) if s and s.improver_reward else "",
        )
    console.print(table)
    meta = get_meta(d.state)
    console.print(f"best distance d_c = {meta.d_c[0] / PPB:.4f}; minted {fmt_tokens(meta.minted)} DEV, "
                  f"burned {fmt_tokens(meta.burned)} DEV")
    bal = Table(title="balances (DEV)")
    for col in ("role", "address", "spendable", "locked"):
        bal.add_column(col)
    people: list[tuple[str, KeyPair]] = (
        [(f"improver: {names.get(k.address, '-')}", k) for k in d.improver_keys]
        + [(f"validator {i}", k) for i, k in enumerate(d.validator_keys)]
        + [(f"committer {i}", k) for i, k in enumerate(d.committer_keys)]
    )
    for role, keys in people:
        spendable, locked = d.balance(keys)
        bal.add_row(role, keys.address[:12], fmt_tokens(spendable), fmt_tokens(locked))
    console.print(bal)


def main() -> None:
    ap = argparse.ArgumentParser(description="Run the single-process DaiMoN devnet demo.")
    ap.add_argument("--dir", type=Path, default=None, help="where to put the LevelDB store (default: a temp dir)")
    args = ap.parse_args()
    console = Console(width=150)
    if args.dir is not None:
        args.dir.mkdir(parents=True, exist_ok=True)
        run(args.dir, console)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            run(Path(tmp), console)


if __name__ == "__main__":
    main()
