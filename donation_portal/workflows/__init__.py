"""Use cases: one module per use case, each owning its unit of work; no Flask."""
