"""After a reorg (a healed partition): nothing the losing branch held is lost.

Its transactions go back to the pool, its settlements go back to their improvers'
to-do list, and sync fetches the heavier chain even when it is not the taller one.
The whole story runs on a live testnet in ``test_fault_partition.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from chain.consensus import period_end
from chain.devnet import Devnet, DevnetConfig
from chain.payloads import Transfer
from daimon_node.daemon.chains import ChainManager, ImportVerdict
from daimon_node.clock import FakeClock
from daimon_node.config import load_config
from daimon_node.keystore import init_data_dir
from daimon_node.daemon.node import Node
from daimon_node.proofs.poi import model_digest
from p2p import ContentStore, SyncHead


def _fork_point() -> Devnet:
    d = Devnet(DevnetConfig())
    d.start()
    d.bond_validators()
    return d


def test_reorg_returns_the_losing_branchs_transactions_to_the_pool(tmp_path: Path) -> None:
    # Branch A: one out-of-turn block (weight 1) carrying a transfer that branch B never saw.
    a = _fork_point()
    other = next(k for k in a.committer_keys if k is not a.committer_for(a.period + 1))
    orphan = a.tx(a.improver_keys[0], Transfer(a.creator.address_bytes, 5))
    a.commit(transactions=[orphan], out_of_turn=other)
    # Branch B, from the same fork point: two in-turn blocks (weight 2 each), another sender's transfer.
    b = _fork_point()
    kept = b.tx(b.improver_keys[1], Transfer(b.creator.address_bytes, 7))
    b.commit(transactions=[kept])
    b.commit()
    manager = _manager(tmp_path / "node", a, period_end(a.params, b.period) + 60)
    handle, _ = manager.add_proposal(a.proposal)
    for block in a.blocks:
        assert manager.import_block(handle, block.encode()).verdict is ImportVerdict.ACCEPTED
    assert orphan.hash not in handle.mempool.txs  # included on branch A
    reports = [manager.import_block(handle, block.encode()) for block in b.blocks[len(a.blocks) - 1:]]
    assert [r.result.status for r in reports if r.result] == ["reorg", "head"]
    assert handle.store.head == b.blocks[-1].hash
    assert orphan.hash in handle.mempool.txs and kept.hash not in handle.mempool.txs
    assert handle.counters.get("txs_returned_by_reorg") == 1
    manager.close()


class PeerServing:
    """Stands in for the network in ``ChainSync.sync_from``: one peer serving ``provider``'s chains."""

    def __init__(self, provider: ChainManager) -> None:
        self.provider = provider

    async def request_head(self, peer: str, chain_id: bytes) -> SyncHead | None:
        return self.provider.get_head(chain_id)

    async def request_blocks(self, peer: str, chain_id: bytes, start: int, count: int) -> list[bytes]:
        return self.provider.get_blocks(chain_id, start, count)

    async def rejudge(self, topic: str | None = None) -> int:
        return 0


def _manager(path: Path, d: Devnet, now: float) -> ChainManager:
    content = ContentStore(path / "content")
    for data in d.contents.values():
        content.put(data)
    return ChainManager(path, content, FakeClock(now))


@pytest.mark.trio
async def test_sync_takes_a_heavier_chain_that_is_no_higher(tmp_path: Path) -> None:
    """After a partition the heavier side need not be the taller one; sync must still fetch it."""
    ours = _fork_point()
    other = next(k for k in ours.committer_keys if k is not ours.committer_for(ours.period + 1))
    ours.commit(transactions=[ours.tx(ours.improver_keys[0], Transfer(ours.creator.address_bytes, 5))],
                out_of_turn=other)  # weight 1
    theirs = _fork_point()
    theirs.commit(transactions=[theirs.tx(theirs.improver_keys[1], Transfer(theirs.creator.address_bytes, 7))])
    assert len(theirs.blocks) == len(ours.blocks)  # same height, in turn: weight 2
    now = period_end(ours.params, ours.period) + 60
    peer = _manager(tmp_path / "peer", theirs, now)
    peer_handle, _ = peer.add_proposal(theirs.proposal)
    for block in theirs.blocks:
        peer.import_block(peer_handle, block.encode())
    keys = init_data_dir(tmp_path / "node")
    config = load_config(None, {"node.data_dir": str(tmp_path / "node"), "rpc.enabled": False})
    node = Node(config, clock=FakeClock(now))
    for data in ours.contents.values():
        node.content.put(data)
    handle, _ = node.chains.add_proposal(ours.proposal)
    for block in ours.blocks:
        node.chains.import_block(handle, block.encode())
    assert keys and handle.store.tip().weight < peer_handle.store.tip().weight
    node.sync.p2p = PeerServing(peer)  # type: ignore[assignment]
    with trio.fail_after(10):
        await node.sync.sync_from(handle, "peer")
    assert handle.store.head == theirs.blocks[-1].hash
    node.chains.close()
    node.sandbox.close()
    peer.close()


def test_improver_competes_again_when_its_settlement_is_reorged_out(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from daimon_node.daemon.roles import ImproverRole

    canonical = {5: b"\x01" * 32, 7: b"\x02" * 32}
    handle = SimpleNamespace(store=SimpleNamespace(canonical_hash=canonical.get))
    role = ImproverRole([tmp_path / "weak.onnx", tmp_path / "linear.onnx"], index=2,
                        settled_in={0: (5, b"\x01" * 32), 1: (7, b"\x09" * 32)})
    role._resume_reorged_out(handle)  # type: ignore[arg-type]
    assert role.index == 1 and role.settled_in == {0: (5, b"\x01" * 32)} and role.proof is None
    role._resume_reorged_out(handle)  # type: ignore[arg-type]
    assert role.index == 1  # nothing else was undone


@pytest.mark.trio
async def test_roles_do_not_sign_again_what_a_reorg_returned_to_the_pool(tmp_path: Path) -> None:
    """A second bond or registration would take the nonce a client of the same key chose next."""
    from types import SimpleNamespace

    from chain.payloads import RegisterDigest, RegisterValidator
    from chain.proofs import model_claim
    from daimon_node.daemon.mempool import Mempool
    from daimon_node.daemon.roles import ImproverRole, ValidatorRole

    d = Devnet(DevnetConfig())
    d.start()
    keys = d.validator_keys[0]
    model = tmp_path / "model.onnx"
    model.write_bytes(b"not run: only its digest is registered")
    pool = Mempool(d.chain_id)
    claim = model_claim(keys.public_key, model_digest(model.read_bytes()))  # what the improver sends
    for payload in (RegisterValidator(), RegisterDigest(claim)):
        returned = d.tx(keys, payload)
        assert pool.add_tx(returned, d.state).value == "accept"
    handle = SimpleNamespace(started=True, state=d.state, mempool=pool, chain_id=d.chain_id,
                             store=SimpleNamespace(canonical_hash=lambda h: None))
    sent: list[object] = []

    async def submit_tx(h: object, tx: object) -> None:
        sent.append(tx)

    ctx = SimpleNamespace(keys=keys, now=lambda: period_end(d.params, d.period) + 1, submit_tx=submit_tx,
                          content=ContentStore(tmp_path / "content"))
    await ValidatorRole().step(ctx, handle)  # type: ignore[arg-type]
    await ImproverRole([model]).step(ctx, handle)  # type: ignore[arg-type]
    assert sent == []


@pytest.mark.trio
async def test_improver_publishes_its_model_only_after_its_claim_is_in_a_block(tmp_path: Path) -> None:
    """Content in the store is served to any peer that asks (``/daimon/content/1``): a model stored
    before its claim ``H(pk || digest)`` is in a block could be fetched and claimed first by a copier."""
    from types import SimpleNamespace

    from chain.payloads import RegisterDigest
    from chain.proofs import model_claim
    from daimon_node.daemon.mempool import Mempool
    from daimon_node.daemon.roles import ImproverRole

    d = Devnet(DevnetConfig())
    d.start()
    keys = d.improver_keys[0]
    model = tmp_path / "model.onnx"
    model.write_bytes(b"not run: the role stops before proving")
    digest = model_digest(model.read_bytes())
    pool = Mempool(d.chain_id)
    handle = SimpleNamespace(started=True, state=d.state, mempool=pool, chain_id=d.chain_id,
                             store=SimpleNamespace(canonical_hash=lambda h: None))

    async def submit_tx(h: object, tx: object) -> None:
        assert pool.add_tx(tx, handle.state).value == "accept"  # type: ignore[arg-type]

    content = ContentStore(tmp_path / "content")
    ctx = SimpleNamespace(keys=keys, now=lambda: period_end(d.params, d.period) + 1, submit_tx=submit_tx,
                          content=content, fetch_content=None)
    role = ImproverRole([model])
    await role.step(ctx, handle)  # type: ignore[arg-type]
    [sent] = pool.txs.values()
    assert sent.payload == RegisterDigest(model_claim(keys.public_key, digest))
    assert not content.has(digest), "model published while its claim was only in the pool"
    await role.step(ctx, handle)  # type: ignore[arg-type]
    assert len(pool.txs) == 1  # the pooled claim is not signed again
    d.commit(transactions=[sent])
    handle.state = d.state
    await role.step(ctx, handle)  # type: ignore[arg-type]
    assert content.has(digest) and content.is_pinned(digest)


@pytest.mark.trio
async def test_validator_role_lets_its_operator_unbond_and_withdraw(tmp_path: Path) -> None:
    """`daimon-node validator unbond` / `withdraw` with a node's own key: the role must neither vote
    with the unbonding bond nor bond again once the bond is withdrawn (it would lock it at once)."""
    from types import SimpleNamespace

    from chain.payloads import WithdrawBond
    from daimon_node.daemon.mempool import Mempool
    from daimon_node.daemon.roles import ValidatorRole

    d = Devnet(DevnetConfig())
    d.start()
    d.bond_validators()
    keys = d.validator_keys[0]
    pool = Mempool(d.chain_id)
    handle = SimpleNamespace(started=True, state=d.state, mempool=pool, chain_id=d.chain_id)
    sent: list[object] = []

    async def submit_tx(h: object, tx: object) -> None:
        sent.append(tx)

    clock = {"now": period_end(d.params, d.period) + 1}
    ctx = SimpleNamespace(keys=keys, now=lambda: clock["now"], submit_tx=submit_tx)
    role = ValidatorRole()
    await role.step(ctx, handle)  # type: ignore[arg-type]
    d.commit(transactions=[d.tx(keys, WithdrawBond())])
    handle.state = d.state
    await role.step(ctx, handle)  # type: ignore[arg-type]
    assert role.status.startswith("unbonding until period")
    until = d.period + d.params.unbonding_periods
    d.commit(transactions=[d.tx(keys, WithdrawBond())], skip=until - d.period - 1)
    handle.state = d.state
    clock["now"] = period_end(d.params, d.period) + 1
    await role.step(ctx, handle)  # type: ignore[arg-type]
    assert sent == [], "the role bonded again right after its operator withdrew"


@pytest.mark.trio
async def test_improver_reveals_an_earlier_proof_whose_anchor_came_late(monkeypatch: pytest.MonkeyPatch,
                                                                         tmp_path: Path) -> None:
    """The block anchoring the period-k proof may land after the role proved again for k + 1 (a late
    block, a reorg onto a branch that anchored the older one): the anchored one is revealed, or the
    honest improver's anchor is voided as not revealed (seen on the adversarial testnet)."""
    from types import SimpleNamespace

    from daimon_node.daemon import roles
    from daimon_node.daemon.admission import Admission
    from p2p import ValidationResult

    def proof(tag: bytes) -> SimpleNamespace:
        return SimpleNamespace(poi=SimpleNamespace(hash=tag * 32, encode=lambda: b"poi" + tag),
                               reveal=SimpleNamespace(encode=lambda: b"reveal" + tag))

    earlier, later = proof(b"\x01"), proof(b"\x02")
    params = SimpleNamespace(t0=0, t_p=10, t_b=10)
    pending = SimpleNamespace(anchor=SimpleNamespace(poi=earlier.poi), period=3)
    monkeypatch.setattr(roles, "get_meta", lambda state: SimpleNamespace(pending=pending))
    monkeypatch.setattr(roles, "get_problem", lambda state: SimpleNamespace(params=params))
    monkeypatch.setattr(roles, "period_of", lambda params, now: 4)  # the period after the anchor
    published: list[bytes] = []

    async def publish_proof(handle: object, data: bytes) -> Admission:
        published.append(data)
        return Admission(ValidationResult.ACCEPT)

    role = roles.ImproverRole([tmp_path / "model.onnx"])
    role.published = {earlier.poi.hash: earlier, later.poi.hash: later}
    role.proof = later  # proved again before the anchor of the earlier proof arrived
    ctx = SimpleNamespace(now=lambda: 45.0, publish_proof=publish_proof)
    await role._reveal_if_anchored(ctx, SimpleNamespace(state=None))  # type: ignore[arg-type]
    assert published == [b"reveal\x01"]
    await role._reveal_if_anchored(ctx, SimpleNamespace(state=None))  # type: ignore[arg-type]
    assert published == [b"reveal\x01"]  # once
