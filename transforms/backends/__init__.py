"""Model backends behind one engine interface: local transformers (with the tiny random
checkpoint), and OpenAI-compatible HTTP APIs (protocol, async engine, Beam model handler)."""
