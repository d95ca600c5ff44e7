"""JSON-Schema-constrained decoding for the local transformers backend (`--extract`), with
llguidance and a `transformers.LogitsProcessor`.

Chosen by measurement (notes in the issue #22 work, /work/notes/constrained.md): llguidance
1.9.1 was the only library with no schema-invalid output among generations that stopped, on
the random-weight tiny Qwen3-VL; xgrammar 0.2.9 accepts raw control characters inside
`maxLength` strings (mlc-ai/xgrammar#800), outlines does not enforce integer ranges and
compiles for seconds per schema, lm-format-enforcer does not import on transformers 5.
llguidance ships no transformers processor, hence the one here (hand-written: the mask
application and the budget-aware "closing mode" are ours).

- `LlgJson(tokenizer, vocab_size, stop_ids)` once per loaded model (tokenizer conversion
  ~1-2 s, cached on the loaded model);
- `ctx.processor(schemas, prompt_len, budgets)` once per `generate()` call: one matcher per
  row, a row whose schema is None is left unconstrained;
- closing mode: when a row is within `margin` tokens of its own budget (bytes of the schema's
  smallest instance + 16), among grammar-legal tokens it prefers a stop token, else tokens
  made only of `"`, `]`, `}`, so the JSON closes before the budget runs out (a heuristic:
  the answer is always validated with jsonschema afterwards);
- `finished_ok(i)`: row i's matcher stopped in an accepting state (False: cut off).
"""

from __future__ import annotations

import json

import llguidance
import llguidance.hf
import numpy as np
import torch
import transformers

CLOSERS = set('"]}')
# compact JSON: no free whitespace (a random / weak model loves "\n\n\n..."), "," and ":"
JSON_OPTIONS = {"whitespace_flexible": False, "item_separator": ",", "key_separator": ":"}


class LlgJson:
    def __init__(self, tokenizer, vocab_size: int, stop_token_ids: list[int]):
        self.vocab_size = vocab_size
        self.stop_token_ids = list(stop_token_ids)
        # eos_token: the id the grammar emits at the end (Qwen3-VL: <|im_end|> = 151645)
        self.tok = llguidance.hf.from_tokenizer(
            tokenizer, n_vocab=vocab_size, eos_token=self.stop_token_ids[0]
        )
        # closer tokens: made only of '"', ']' and '}'. Inside a string only those starting
        # with '"' close anything (a ']}' there is just string content); outside, ']' / '}'.
        close_str = torch.zeros(vocab_size, dtype=torch.bool)
        close_out = torch.zeros(vocab_size, dtype=torch.bool)
        for tid in range(min(vocab_size, len(tokenizer))):
            text = tokenizer.convert_tokens_to_string([tokenizer.convert_ids_to_tokens(tid)])
            if text and set(text) <= CLOSERS:
                (close_str if text[0] == '"' else close_out)[tid] = True
        self.close_str, self.close_out = close_str, close_out
        self.closer_mask = close_str | close_out
        self._grammars: dict[str, str] = {}

    def grammar(self, schema: dict | str) -> str:
        key = schema if isinstance(schema, str) else json.dumps(schema, sort_keys=True)
        if key not in self._grammars:
            obj = json.loads(key) if isinstance(schema, str) else schema
            g = llguidance.LLMatcher.grammar_from_json_schema(obj, defaults=JSON_OPTIONS)
            msg = llguidance.LLMatcher.validate_grammar(g, self.tok)  # "" when fine
            if msg:
                raise ValueError(f"unsupported JSON schema: {msg}")
            self._grammars[key] = g
        return self._grammars[key]

    def processor(self, schemas, prompt_len: int, budgets, margin: int | None = None):
        grammars = [None if s is None else self.grammar(s) for s in schemas]
        margins = [
            0 if s is None else (margin if margin is not None else min_instance_bytes(s) + 16)
            for s in schemas
        ]
        return LlgLogitsProcessor(self, grammars, prompt_len, budgets, margins)


class LlgLogitsProcessor(transformers.LogitsProcessor):
    """Per-row grammar masks (one instance per `generate()` call: it holds row state)."""

    def __init__(self, ctx: LlgJson, grammars, prompt_len, budgets, margins):
        self.ctx = ctx
        self.matchers = [None if g is None else llguidance.LLMatcher(ctx.tok, g) for g in grammars]
        self.prompt_len = prompt_len
        self.budgets = list(budgets)
        self.margins = list(margins)
        self.words = (ctx.vocab_size + 31) // 32
        self.mask = torch.zeros((len(grammars), self.words), dtype=torch.int32)
        self._bits = torch.arange(32, dtype=torch.int32)
        self.failed = [False] * len(grammars)
        self.in_string = [False] * len(grammars)  # tiny JSON lexer state, for closing mode
        self.escape = [False] * len(grammars)

    def _scan(self, i: int, token: int) -> None:
        for b in self.ctx.tok.decode_bytes([token]):
            if self.in_string[i]:
                if self.escape[i]:
                    self.escape[i] = False
                elif b == 0x5C:  # backslash
                    self.escape[i] = True
                elif b == 0x22:  # quote
                    self.in_string[i] = False
            elif b == 0x22:
                self.in_string[i] = True

    def finished_ok(self, i: int) -> bool:
        m = self.matchers[i]
        return m is None or (not self.failed[i] and m.is_stopped() and m.is_accepting())

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor):
        step = input_ids.shape[1] - self.prompt_len
        rows = [i for i, m in enumerate(self.matchers) if m is not None]
        if not rows:
            return scores
        for i in rows:
            m = self.matchers[i]
            if step > 0 and not m.is_stopped() and not self.failed[i]:
                tok = int(input_ids[i, -1])
                if not m.consume_token(tok):
                    self.failed[i] = True  # only if a token outside the mask was forced in
                self._scan(i, tok)
            if m.is_stopped() or self.failed[i] or m.is_error():
                self.mask[i].zero_()  # finished: only stop tokens (HF pads it anyway)
                for t in self.ctx.stop_token_ids:
                    b = t % 32
                    self.mask[i, t // 32] |= (1 << b) if b < 31 else -(1 << 31)
            else:
                v = self.mask[i]
                m.unsafe_compute_mask_ptr(v.data_ptr(), v.numel() * 4)
        idx = torch.tensor(rows)
        # int32 little-endian words -> bytes -> bits (bit k of word w = token 32*w+k)
        packed = self.mask.numpy()[rows].view(np.uint8)
        allowed = torch.from_numpy(np.unpackbits(packed, axis=1, bitorder="little")).bool()
        allowed = allowed[:, : self.ctx.vocab_size]
        for r, i in enumerate(rows):  # closing mode near the row's budget
            m = self.matchers[i]
            if m.is_stopped() or self.failed[i] or self.budgets[i] - step > self.margins[i]:
                continue
            stops = [t for t in self.ctx.stop_token_ids if allowed[r, t]]
            if stops:
                keep = torch.zeros_like(allowed[r])
                keep[stops[0]] = True
            else:
                closers = self.ctx.close_str if self.in_string[i] else self.ctx.close_out
                keep = allowed[r] & closers
                if not keep.any():
                    continue
            allowed[r] = keep
        allowed = allowed.to(scores.device, non_blocking=True)
        V = self.ctx.vocab_size
        if len(rows) == scores.shape[0]:  # every row constrained: mask in place, no copies
            scores[:, :V].masked_fill_(~allowed, float("-inf"))
            scores[:, V:] = float("-inf")
        else:
            idx = idx.to(scores.device)
            sub = scores[idx]
            sub[:, :V].masked_fill_(~allowed, float("-inf"))
            sub[:, V:] = float("-inf")
            scores[idx] = sub
        return scores


def _min_instance(schema):
    """A smallest-ish instance: required properties only, "" / [] / minimum / first enum value."""
    if not isinstance(schema, dict):
        return None
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return min(schema["enum"], key=lambda v: len(json.dumps(v)))
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return min((_min_instance(s) for s in schema[key]), key=lambda v: len(json.dumps(v)))
    t = schema.get("type")
    if isinstance(t, list):
        options = (_min_instance({**schema, "type": x}) for x in t)
        return min(options, key=lambda v: len(json.dumps(v)))
    if t == "object" or "properties" in schema:
        props = schema.get("properties", {})
        return {k: _min_instance(props.get(k, {})) for k in schema.get("required", [])}
    if t == "array":
        return [_min_instance(schema.get("items", {}))] * int(schema.get("minItems", 0))
    if t == "string":
        return "x" * int(schema.get("minLength", 0))
    if t in ("integer", "number"):
        return schema.get("minimum", 0)
    if t == "boolean":
        return True
    return None


def min_instance_bytes(schema) -> int:
    if isinstance(schema, str):
        schema = json.loads(schema)
    return len(json.dumps(_min_instance(schema), separators=(",", ":")).encode())
