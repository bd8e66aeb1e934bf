"""Forward passes shared by the scorers: model parts, key/value-cache prefixes, the output layer.

A persona's context is run once (batch 1, :func:`prefix_cache`); its cache is
copied and expanded over a batch of suffixes (:func:`expand_cache`), which run
right-padded after it (:func:`run_body`): causal attention never lets a real
position see a pad, and positions continue from the prefix length, so every
hidden state equals that of the unsplit sequence.  :func:`group_runs` decides
which sequences share a prefix.
"""

from __future__ import annotations

import copy
import inspect
from typing import Any, Sequence


def model_parts(model: Any) -> tuple[Any, Any, Any]:
    """``(body, head, softcap)`` of a causal LM, looking through a PEFT wrapper."""
    causal = model.get_base_model() if hasattr(model, "get_base_model") else model
    body = causal.base_model if hasattr(causal, "base_model") else causal.model
    head = causal.get_output_embeddings()
    softcap = getattr(causal.config, "final_logit_softcapping", None)
    return body, head, softcap


def model_device(model: Any) -> Any:
    """The torch device of a model's first parameter."""
    return next(model.parameters()).device


def cache_kwarg(body: Any) -> str:
    """Name of the KV-cache argument (``cache`` in newer transformers, else ``past_key_values``)."""
    params = inspect.signature(body.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def prefix_cache(body: Any, ids: Sequence[int]) -> Any:
    """Run ``ids`` (one sequence) through ``body`` and return its key/value cache."""
    import torch

    x = torch.tensor([list(ids)], dtype=torch.long, device=model_device(body))
    res = body(input_ids=x, use_cache=True)
    cache = getattr(res, "cache", None)
    return cache if cache is not None else res.past_key_values


def extend_cache(body: Any, cache: Any, ids: Sequence[int]) -> Any:
    """``cache`` (batch 1, changed in place and returned) extended by the tokens ``ids``.

    ``None`` starts a new cache (:func:`prefix_cache`).  Each layer is
    filled as one forward pass of the whole prefix would leave it, so scoring
    on top equals scoring after the whole prefix.
    """
    import torch

    if cache is None:
        return prefix_cache(body, ids)
    x = torch.tensor([list(ids)], dtype=torch.long, device=model_device(body))
    body(input_ids=x, use_cache=True, **{cache_kwarg(body): cache})
    return cache


def full_cache(body: Any, ids: Sequence[int]) -> Any:
    """Like :func:`prefix_cache`, but every layer keeps every position (for :func:`truncated_cache`).

    A sliding-window layer normally keeps only its last ``window - 1``
    positions; here it records the whole past, so the cache can later be cut
    at any earlier boundary.
    """
    import torch
    from transformers import DynamicCache

    cache = DynamicCache(config=body.config)
    for layer in cache.layers:
        if getattr(layer, "is_sliding", False):
            layer.activate_past_recording()
    x = torch.tensor([list(ids)], dtype=torch.long, device=model_device(body))
    body(input_ids=x, use_cache=True, **{cache_kwarg(body): cache})
    return cache


def truncated_cache(body: Any, cache: Any, n: int) -> Any:
    """A new cache holding the first ``n`` positions of a :func:`full_cache` (which is left untouched).

    Each layer is filled as one forward pass of those ``n`` tokens would
    leave it (a sliding-window layer keeps its last ``window - 1`` of them),
    so scoring on top of it equals scoring after running the ``n`` tokens.
    """
    from transformers import DynamicCache

    have = max(layer.keys.shape[-2] for layer in cache.layers)
    if not 0 < n <= have:
        raise ValueError(f"n: expected 1..{have} cached positions, got {n}")
    out = DynamicCache(config=body.config)
    for j, layer in enumerate(cache.layers):
        if layer.keys.shape[-2] != have:
            raise ValueError(f"cache: layer {j} holds {layer.keys.shape[-2]} of {have} positions; "
                             "build it with full_cache")
        out.layers[j].update(layer.keys[:, :, :n], layer.values[:, :, :n])
    return out


def expand_cache(cache: Any, n: int) -> Any:
    """A copy of a batch-1 cache repeated ``n`` times along the batch (the original is untouched)."""
    out = copy.deepcopy(cache)
    if n > 1:
        out.batch_repeat_interleave(n)
    return out


def pad_right(seqs: Sequence[Sequence[int]], pad_id: int, device: Any) -> tuple[Any, Any]:
    """``(ids, mask)`` long tensors of right-padded sequences."""
    import torch

    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, s in enumerate(seqs):
        ids[row, :len(s)] = torch.tensor(list(s), dtype=torch.long)
        mask[row, :len(s)] = 1
    return ids.to(device), mask.to(device)


def run_body(body: Any, ids: Any, mask: Any, prefix: Any = None, prefix_len: int = 0) -> Any:
    """Last hidden states of right-padded ``ids``, optionally after a shared cached prefix.

    Parameters
    ----------
    body : the model body
    ids, mask : (batch, width) long tensors
    prefix : cache, optional
        A batch-1 cache of ``prefix_len`` tokens (from :func:`prefix_cache`),
        expanded over the batch here.
    prefix_len : int
    """
    import torch

    if prefix is None:
        return body(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
    full_mask = torch.cat([torch.ones((ids.shape[0], prefix_len), dtype=mask.dtype, device=mask.device), mask], 1)
    kwargs = {cache_kwarg(body): expand_cache(prefix, ids.shape[0])}
    return body(input_ids=ids, attention_mask=full_mask, use_cache=True, **kwargs).last_hidden_state


def head_logprobs(head: Any, softcap: float | None, hidden: Any) -> Any:
    """Output layer (+ softcapping) and float32 log-softmax at selected positions."""
    import torch

    logits = head(hidden)
    if softcap is not None:
        logits = torch.tanh(logits / softcap) * softcap
    return torch.log_softmax(logits.float(), dim=-1)


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two token sequences."""
    n = min(len(a), len(b))
    k = 0
    while k < n and a[k] == b[k]:
        k += 1
    return k


def group_runs(runs: Sequence[tuple[int, ...]], caps: Sequence[int], min_shared: int) -> list[tuple[int, list[int]]]:
    """Group sequences by a shared token prefix run once through the KV cache.

    Parameters
    ----------
    runs : sequence of token tuples
    caps : sequence of int
        Longest prefix each sequence may share (before its first scored position).
    min_shared : int
        Shortest prefix worth sharing.

    Returns
    -------
    list of (int, list of int)
        ``(shared prefix length, member indices)``; ungrouped sequences come
        as one final group with prefix length 0.  In lexicographic order a
        sequence joins the current group when the shortened shared prefix
        ``l`` stays >= ``min_shared`` and the ``n`` members' extra work
        ``n * (L - l)`` does not exceed ``l``.
    """
    if not runs:
        return []
    order = sorted(range(len(runs)), key=lambda r: runs[r])
    groups: list[tuple[int, list[int]]] = []
    singles: list[int] = []
    cur, shared = [order[0]], caps[order[0]]

    def close() -> None:
        if len(cur) > 1 and shared >= min_shared:
            groups.append((shared, list(cur)))
        else:
            singles.extend(cur)

    for prev, r in zip(order, order[1:]):
        new = min(shared, common_prefix(runs[prev], runs[r]), caps[r])
        if new >= min_shared and (len(cur) == 1 or len(cur) * (shared - new) <= new):
            cur.append(r)
            shared = new
        else:
            close()
            cur, shared = [r], caps[r]
    close()
    if singles:
        groups.append((0, singles))
    return groups
