"""The executor's writes: one handler per command kind and the dispatcher that applies a batch."""
