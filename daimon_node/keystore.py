"""The node's persisted Ed25519 key in its data directory.

One seed serves as the chain signing key and the libp2p identity, so a node's
address and peer id are bound to each other.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

from chain.crypto import SEED_BYTES, KeyPair

from daimon_node.errors import DataDirError

KEY_FILE: Final[str] = "node_key"


def key_path(data_dir: Path) -> Path:
    return Path(data_dir) / KEY_FILE


def init_data_dir(data_dir: Path, *, seed: bytes | None = None, exist_ok: bool = False) -> KeyPair:
    """Create ``data_dir`` with a new key (mode 0600); refuse to overwrite one."""
    data_dir = Path(data_dir)
    path = key_path(data_dir)
    if path.exists():
        if exist_ok:
            return load_key(data_dir)
        raise DataDirError(f"{data_dir} already holds a node key; refusing to overwrite it")
    data_dir.mkdir(parents=True, exist_ok=True)
    keys = KeyPair(seed) if seed is not None else KeyPair.generate()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(keys.seed.hex() + "\n")
    return keys


def load_key(data_dir: Path) -> KeyPair:
    path = key_path(Path(data_dir))
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        raise DataDirError(f"no node key in {data_dir}; run 'daimon-node init --dir {data_dir}'") from None
    except OSError as exc:
        raise DataDirError(f"cannot read {path}: {exc.strerror}") from None
    try:
        seed = bytes.fromhex(text)
    except ValueError:
        raise DataDirError(f"{path} is not a hex key") from None
    if len(seed) != SEED_BYTES:
        raise DataDirError(f"{path} holds {len(seed)} bytes, expected {SEED_BYTES}")
    return KeyPair(seed)
