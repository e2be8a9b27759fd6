"""The command line: thin typer commands over the RPC client and the proof tools (docs/architecture.md)."""
