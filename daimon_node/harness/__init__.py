"""Demo, local testnets and test-only roles; the daemon never imports them (docs/architecture.md)."""
