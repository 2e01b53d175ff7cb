"""Services own the transaction: they commit once, then enqueue jobs or publish events."""
