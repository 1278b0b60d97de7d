"""Cached prefixes for the torch backend: KV spans shared between sessions, and the batched incremental forward.

A causal PRM's hidden state at a token depends only on the tokens before it, so scoring can be append-only and
exact: a step-by-step session, a beam's forks and the candidates of one problem all reuse the keys and values of
the tokens they share and run the backbone only on what is new.

- `Span`: the keys and values of one run of tokens, per layer, with a link to the span before it. Spans form a
  tree: every fork of a session points at the same spans, so a beam of 4 x 4 expansions holds its shared prefix
  once. (transformers' `DynamicCache` appends by concatenation, which would copy the whole prefix into every
  branch on its first new token; the tree is why spans exist at all.)
- `Cached`: one sequence's view of the tree, the first `length` tokens of the chain that ends at `tip`. Cropping
  (to the common prefix of a re-tokenized text, or for a rollback) is a new view, never a copy.
- `forward_cached`: one batched forward over the new tokens of many views of different lengths. Each forward runs
  on a transformers `DynamicCache` built from the views (the past left-padded and masked, the new tokens
  right-padded), in chunks of `chunk_tokens` new tokens so that peak activation memory stays bounded however long
  the sequence is (chunked prefill). It returns the hidden rows at the positions asked for and the new views.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch


@dataclass(eq=False)
class Span:
    """Keys and values of tokens [start, start + len(ids)), per layer [1, kv_heads, n, head_dim]."""

    parent: Span | None
    start: int
    ids: tuple[int, ...]
    kv: tuple[tuple[torch.Tensor, torch.Tensor], ...]

    @property
    def end(self) -> int:
        return self.start + len(self.ids)

    def narrowed(self, length: int) -> Span:
        """The first `length - start` tokens of this span, as views (no copy)."""
        n = length - self.start
        if n == len(self.ids):
            return self
        return Span(self.parent, self.start, self.ids[:n], tuple((k[:, :, :n], v[:, :, :n]) for k, v in self.kv))


@dataclass(frozen=True, eq=False)
class Cached:
    """One sequence's cached tokens: the first `length` tokens of the span chain that ends at `tip`."""

    tip: Span | None = None
    length: int = 0
    ids: tuple[int, ...] = ()

    def crop(self, length: int) -> Cached:
        """The first `length` tokens (a view of the same spans)."""
        if length >= self.length:
            return self
        tip = self.tip
        while tip is not None and tip.start >= length:
            tip = tip.parent
        return Cached(tip, length, self.ids[:length]) if length else Cached()

    def chain(self) -> list[Span]:
        """The spans from the first to the tip, the tip narrowed to `length`."""
        out, tip = [], self.tip
        while tip is not None:
            out.append(tip)
            tip = tip.parent
        out.reverse()
        if out:
            out[-1] = out[-1].narrowed(self.length)
        return out

    def spans(self) -> int:
        return len(self.chain())


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two id sequences."""
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


@functools.cache
def _cache_keyword(forward) -> str:
    """The backbone's name for its cache argument: `cache` in transformers 5.2x, `past_key_values` before."""
    params = inspect.signature(forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _padded_past(views: Sequence[Cached], num_layers: int):
    """Per layer, the views' keys and values left-padded with zeros to the longest: [B, kv_heads, P, head_dim]."""
    p = max(v.length for v in views)
    if p == 0:
        return None
    chains = [v.chain() for v in views]
    ref = next(c for c in chains if c)[0].kv
    layers = []
    for layer in range(num_layers):
        k0, v0 = ref[layer]
        keys = k0.new_zeros((len(views), k0.shape[1], p, k0.shape[3]))
        values = v0.new_zeros((len(views), v0.shape[1], p, v0.shape[3]))
        for b, (view, chain) in enumerate(zip(views, chains)):
            at = p - view.length
            for span in chain:
                k, v = span.kv[layer]
                n = k.shape[2]
                keys[b, :, at : at + n] = k[0]
                values[b, :, at : at + n] = v[0]
                at += n
        layers.append((keys, values))
    return layers


def forward_cached(backbone, views: Sequence[Cached], new_ids: Sequence[Sequence[int]],
                   want: Sequence[Iterable[int]], chunk_tokens: int | None, device: torch.device
                   ) -> tuple[list[Cached], list[dict[int, torch.Tensor]]]:
    """Run the backbone over each view's new tokens, attending to its cached ones, in one batch.

    views[b] is row b's cached prefix, new_ids[b] the tokens that follow it, want[b] the absolute positions (in
    [views[b].length, views[b].length + len(new_ids[b]))) whose final hidden rows [H] to return. New tokens are fed
    `chunk_tokens` at a time (None: all at once). Returns the views extended by the new tokens (a new span each)
    and, per row, {position: hidden row}. A row with no new tokens keeps its view.
    """
    from transformers import DynamicCache

    b = len(views)
    starts = [v.length for v in views]
    lengths = [len(n) for n in new_ids]
    n_max = max(lengths, default=0)
    if n_max == 0:
        return list(views), [{} for _ in views]
    wanted = [{p - s for p in w} for w, s in zip(want, starts)]  # relative to each row's first new token
    p_max = max(starts)
    ids = torch.zeros((b, n_max), dtype=torch.long)
    mask = torch.zeros((b, p_max + n_max), dtype=torch.long)
    for r, (s, n, toks) in enumerate(zip(starts, lengths, new_ids)):
        ids[r, :n] = torch.tensor(list(toks), dtype=torch.long)
        mask[r, p_max - s : p_max + n] = 1
    positions = torch.tensor(starts).unsqueeze(1) + torch.arange(n_max).unsqueeze(0)
    ids, mask, positions = ids.to(device), mask.to(device), positions.to(device)
    num_layers = backbone.config.num_hidden_layers
    past = _padded_past(views, num_layers)
    cache = DynamicCache(config=backbone.config) if past is None else DynamicCache(ddp_cache_data=past)
    keyword = _cache_keyword(type(backbone).forward)
    step = n_max if not chunk_tokens else chunk_tokens
    rows: list[dict[int, torch.Tensor]] = [{} for _ in views]
    with torch.inference_mode():
        for c0 in range(0, n_max, step):
            c1 = min(n_max, c0 + step)
            out = backbone(input_ids=ids[:, c0:c1], attention_mask=mask[:, : p_max + c1],
                           position_ids=positions[:, c0:c1], use_cache=True, **{keyword: cache})
            hidden = out.last_hidden_state
            for r in range(b):
                for rel in sorted(q for q in wanted[r] if c0 <= q < min(c1, lengths[r])):
                    rows[r][starts[r] + rel] = hidden[r, rel - c0].clone()
            del out, hidden
        new_views = []
        for r, (view, s, n) in enumerate(zip(views, starts, lengths)):
            if n == 0:
                new_views.append(view)
                continue
            kv = tuple((layer.keys[r : r + 1, :, p_max : p_max + n].clone(),
                        layer.values[r : r + 1, :, p_max : p_max + n].clone()) for layer in cache.layers)
            parent = None if view.tip is None else view.tip.narrowed(s)
            tip = Span(parent, s, tuple(new_ids[r]), kv)
            new_views.append(Cached(tip, s + n, view.ids + tuple(new_ids[r])))
    return new_views, rows
