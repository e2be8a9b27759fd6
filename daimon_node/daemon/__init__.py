"""The daemon: the node, its chains, admission, roles and committer (docs/architecture.md)."""
