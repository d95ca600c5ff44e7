"""Model backends behind one engine interface: local transformers (with the tiny random
checkpoint), OpenAI-compatible HTTP APIs (protocol, async engine, Beam model handler), and the
inference servers vlbeam starts itself (spec, process, GPU groups)."""
