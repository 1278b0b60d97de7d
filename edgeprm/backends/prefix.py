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

# New tokens per batch row when several items continue one cached view (see `pack_rows`): enough for a beam's
# expansions side by side; longer continuations get a row each, so masked-out attention stays a small share.
PACK_TOKENS = 256


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
    """Per layer, the views' keys and values left-padded with zeros to the longest: [B, kv_heads, P, head_dim].

    Views of the same spans (a beam's expansions) are concatenated once and copied into each of their rows."""
    p = max(v.length for v in views)
    if p == 0:
        return None
    groups: dict[tuple[int, int], list[int]] = {}
    for b, view in enumerate(views):
        if view.length:
            groups.setdefault((id(view.tip), view.length), []).append(b)
    chains = {key: views[rows[0]].chain() for key, rows in groups.items()}
    k0, v0 = next(iter(chains.values()))[0].kv[0]
    layers = []
    for layer in range(num_layers):
        keys = k0.new_zeros((len(views), k0.shape[1], p, k0.shape[3]))
        values = v0.new_zeros((len(views), v0.shape[1], p, v0.shape[3]))
        for key, rows in groups.items():
            chain = chains[key]
            k = torch.cat([span.kv[layer][0] for span in chain], dim=2) if len(chain) > 1 else chain[0].kv[layer][0]
            v = torch.cat([span.kv[layer][1] for span in chain], dim=2) if len(chain) > 1 else chain[0].kv[layer][1]
            n = k.shape[2]
            keys[rows, :, p - n :] = k
            values[rows, :, p - n :] = v
        layers.append((keys, values))
    return layers


def _dynamic_cache(backbone, past):
    """A transformers DynamicCache holding `past` (per layer [B, kv_heads, P, head_dim]) without copying it (the
    constructor's own `update` would concatenate every layer onto an empty tensor)."""
    from transformers import DynamicCache

    if past is None:
        return DynamicCache(config=backbone.config)
    cache = DynamicCache(ddp_cache_data=[(k[:, :, :0], v[:, :, :0]) for k, v in past])
    for layer, (k, v) in zip(cache.layers, past):
        layer.keys, layer.values = k, v
    assert cache.get_seq_length() == past[0][0].shape[2], "DynamicCache layers hold .keys and .values"
    return cache


def pack_rows(views: Sequence[Cached], lengths: Sequence[int], pack_tokens: int = PACK_TOKENS) -> list[list[int]]:
    """Items with new tokens grouped into batch rows: items continuing the same view share a row (their new tokens
    side by side, each attending to the view and to itself) up to `pack_tokens` new tokens a row."""
    rows: list[list[int]] = []
    tokens: list[int] = []
    open_row: dict[tuple[int, int], int] = {}
    for i, (view, n) in enumerate(zip(views, lengths)):
        if n == 0:
            continue
        key = (id(view.tip), view.length)
        r = open_row.get(key)
        if r is not None and tokens[r] + n <= pack_tokens:
            rows[r].append(i)
            tokens[r] += n
        else:
            open_row[key] = len(rows)
            rows.append([i])
            tokens.append(n)
    return rows


def forward_cached(backbone, views: Sequence[Cached], new_ids: Sequence[Sequence[int]],
                   want: Sequence[Iterable[int]], chunk_tokens: int | None, device: torch.device,
                   keep_views: bool = True) -> tuple[list[Cached], list[dict[int, torch.Tensor]]]:
    """Run the backbone over each view's new tokens, attending to its cached ones, in one batch.

    views[i] is item i's cached prefix, new_ids[i] the tokens that follow it, want[i] the absolute positions (in
    [views[i].length, views[i].length + len(new_ids[i]))) whose final hidden rows [H] to return. Items that
    continue the same view (a beam's expansions, a problem's candidates) share one batch row and one copy of the
    view's keys and values (`pack_rows`); a 4-D mask keeps each item to the view and its own tokens, so every
    hidden state equals that of the item run alone. New tokens are fed `chunk_tokens` columns at a time (None: all
    at once). Returns the views extended by their new tokens (a new span each; with `keep_views=False` the views
    given, so that whole-trajectory scoring copies no keys and values out of the batch) and, per item,
    {position: row}.
    """
    lengths = [len(n) for n in new_ids]
    rows = pack_rows(views, lengths)
    out_views, out_rows = list(views), [{} for _ in views]
    if not rows:
        return out_views, out_rows
    starts = [views[r[0]].length for r in rows]  # each row's cached length
    offset = {}  # item -> (row, column of its first new token)
    widths = []
    for r, items in enumerate(rows):
        col = 0
        for i in items:
            offset[i] = (r, col)
            col += lengths[i]
        widths.append(col)
    b, n_max, p_max = len(rows), max(widths), max(starts)
    ids = torch.zeros((b, n_max), dtype=torch.long)
    positions = torch.zeros((b, n_max), dtype=torch.long)
    first = torch.arange(n_max).repeat(b, 1)  # per column, the column of its item's first token (pads: itself)
    for i, (r, col) in offset.items():
        n = lengths[i]
        ids[r, col : col + n] = torch.tensor(list(new_ids[i]), dtype=torch.long)
        positions[r, col : col + n] = starts[r] + torch.arange(n)
        first[r, col : col + n] = col
    past_mask = torch.zeros((b, p_max), dtype=torch.bool)
    for r, s in enumerate(starts):
        past_mask[r, p_max - s :] = True
    ids, positions, first, past_mask = ids.to(device), positions.to(device), first.to(device), past_mask.to(device)
    cache = _dynamic_cache(backbone, _padded_past([views[r[0]] for r in rows], backbone.config.num_hidden_layers))
    keyword = _cache_keyword(type(backbone).forward)
    wanted: dict[tuple[int, int], int] = {}  # (row, column) -> item
    for i, w in enumerate(want):
        if lengths[i]:
            r, col = offset[i]
            for p in w:
                wanted[r, col + p - views[i].length] = i
    step = chunk_tokens or n_max
    with torch.inference_mode():
        for c0 in range(0, n_max, step):
            c1 = min(n_max, c0 + step)
            q = torch.arange(c0, c1, device=device)
            k = torch.arange(c1, device=device)
            own = (k[None, None, :] >= first[:, c0:c1, None]) & (k[None, None, :] <= q[None, :, None])
            mask = torch.cat([past_mask[:, None, :].expand(b, c1 - c0, p_max), own], dim=-1)[:, None]
            out = backbone(input_ids=ids[:, c0:c1], attention_mask=mask, position_ids=positions[:, c0:c1],
                           use_cache=True, **{keyword: cache})
            hidden = out.last_hidden_state
            for (r, col), i in wanted.items():
                if c0 <= col < c1:
                    out_rows[i][views[i].length + col - offset[i][1]] = hidden[r, col - c0].clone()
            del out, hidden
        for i, (r, col) in offset.items() if keep_views else ():
            n, s = lengths[i], starts[r]
            kv = tuple((layer.keys[r : r + 1, :, p_max + col : p_max + col + n].clone(),
                        layer.values[r : r + 1, :, p_max + col : p_max + col + n].clone()) for layer in cache.layers)
            view = views[i]
            parent = None if view.tip is None else view.tip.narrowed(s)
            out_views[i] = Cached(Span(parent, s, tuple(new_ids[i]), kv), s + n, view.ids + tuple(new_ids[i]))
    return out_views, out_rows
