"""Protocol tools: problem building, the model sandbox and proofs of improvement (docs/architecture.md)."""
