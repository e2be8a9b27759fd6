"""Package boundaries of docs/design.md §2 that a refactor could silently break."""

from __future__ import annotations

import subprocess
import sys


def imported_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    return set(out.stdout.split())


def test_chain_never_imports_torch_trio_or_libp2p() -> None:
    mods = imported_after("import chain.transition, chain.store, chain.devnet, chain.builder")
    for banned in ("torch", "trio", "libp2p", "p2p", "daimon_node"):
        assert banned not in mods, f"chain imported {banned}"
    assert "del_embed.integer" in mods
    others = {m for m in mods if m.startswith("del_embed.") and m != "del_embed.integer"}
    assert not others, f"chain imported more of del_embed than its integer module: {sorted(others)}"


def test_integer_del_does_not_import_torch() -> None:
    assert "torch" not in imported_after("import del_embed.integer")
