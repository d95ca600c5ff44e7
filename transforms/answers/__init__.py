"""A model's answers, read: degenerate answers and retries, and grounding answers parsed into
time spans. Pure code that imports only `schemas` and itself."""
