"""Exact continuation log-likelihoods from a causal LM, computed efficiently.

:class:`Scorer` turns ``(context, continuation)`` pairs into
``log p(continuation | context)`` summed over the continuation's tokens (the
per-token values are kept), and builds the persona x item x option table that
:class:`psm_bayes.data.LogLikTable` consumes (:meth:`Scorer.score_table`).

How it stays exact and fast
---------------------------
* Tokenization: the context is tokenized with the tokenizer's special prefix
  (Gemma: ``<bos>``); the continuation's tokens are the suffix of the
  tokenization of the joined string ``context + continuation``, so tokens that
  straddle the boundary are tokenized as the model would see the text.  When
  the joined tokenization does not start with the context's tokens (a merge
  across the boundary) the continuation is tokenized on its own, without
  special tokens.
* Right padding with an attention mask: positions ``0..n-1`` of every row are
  exactly those of the unpadded sequence, so batched scores equal
  one-at-a-time scores (up to float summation order).
* Output layer only where needed: the model body (``model.base_model``, i.e.
  ``model.model`` for Gemma/Llama) produces hidden states; only those at
  positions that predict a continuation token go through ``lm_head`` (plus
  Gemma-2 style ``final_logit_softcapping`` when the config sets it) and a
  float32 ``log_softmax``.  With a 262k vocabulary the head is ~63% of the
  per-position compute of Gemma 3 270M.
* Prefix sharing: a pair whose input (its tokens minus the last) is a prefix
  of another pair's input is read off that pair's forward pass, so the options
  of one item (``" Yes"``/``" No"``) cost one forward pass; identical head
  positions are computed once.
* Shared key/value-cache prefixes: sequences that share a long token prefix
  (a persona's context, the same for all of its items) are grouped; the
  prefix runs once and its cache is expanded over each batch of the group,
  so only the items' own tokens run per sequence and cost grows with items,
  not items x context length.  Groups are formed in lexicographic order and
  a sequence joins the current group unless that would shorten the shared
  prefix by more than the group saves (:func:`psm_bayes.llm.forward.group_runs`).  Sequences are
  sorted by length before batching to minimise padding.
* Device: tensors go to the model's device (:attr:`LoadedModel.device`).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Sequence

import numpy as np

from psm_bayes.data import DataError, ItemSet, PersonaSet
from psm_bayes.llm.forward import group_runs, head_logprobs, model_parts, pad_right, prefix_cache, run_body
from psm_bayes.llm.loading import LoadedModel

@dataclass(frozen=True)
class PairScore:
    """Score of one continuation given its context.

    Attributes
    ----------
    logp : float
        ``sum_t log p(token_t | context, earlier continuation tokens)``.
    token_logps : tuple of float
        Per continuation token log-probabilities.
    token_ids : tuple of int
        The continuation's token ids.
    n_context_tokens : int
        Number of context tokens (including the BOS prefix).
    """

    logp: float
    token_logps: tuple[float, ...]
    token_ids: tuple[int, ...]
    n_context_tokens: int


@dataclass
class ScorerStats:
    """Work counters accumulated by a :class:`Scorer` (for throughput reports).

    Attributes
    ----------
    pairs : int
        Pairs scored.
    pair_tokens : int
        Sum over pairs of context + continuation tokens (the work a naive
        one-pair-per-forward scorer would do).
    forward_tokens : int
        Non-padding tokens actually run through the model body.
    padded_tokens : int
        Positions run including padding.
    head_positions : int
        Positions at which the output layer was computed.
    prefix_tokens : int
        Of ``forward_tokens``, those run once as shared cached prefixes.
    seconds : float
        Wall time inside :meth:`Scorer.score_pairs`.
    """

    pairs: int = 0
    pair_tokens: int = 0
    forward_tokens: int = 0
    padded_tokens: int = 0
    head_positions: int = 0
    prefix_tokens: int = 0
    seconds: float = 0.0

    def reset(self) -> None:
        """Zero all counters."""
        for f in fields(self):
            setattr(self, f.name, f.default)


@dataclass
class _Pair:
    index: int
    ctx_len: int
    seq: tuple[int, ...]
    run: int = -1
    positions: list[int] = field(default_factory=list)


def _check_str_list(values: Any, name: str) -> list[str]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise DataError(f"{name}: expected a list of str, got {type(values).__name__}")
    out = list(values)
    for i, v in enumerate(out):
        if not isinstance(v, str):
            raise DataError(f"{name}[{i}]: expected str, got {type(v).__name__}")
    return out


class Scorer:
    """Batched, exact continuation scoring with a loaded causal LM.

    Parameters
    ----------
    loaded : LoadedModel
        From :func:`psm_bayes.llm.loading.load_model` (or use
        :func:`psm_bayes.llm.scorer.load_scorer`).
    batch_size : int
        Sequences per forward pass (default 8).
    share_prefix : bool
        Reuse one forward pass for pairs whose inputs are prefixes of one
        another (exact; default True).
    share_kv : bool
        Run shared prefixes (persona contexts) once and reuse their key/value
        cache across the group's items (exact; default True).
    min_shared_tokens : int
        Shortest prefix worth sharing through the cache.
    max_head_rows : int
        Positions per output-layer chunk (bounds the ``rows x vocab`` logits
        buffer; default 256, i.e. 256 MiB at a 262k fp32 vocabulary).

    Attributes
    ----------
    format : psm_bayes.llm.formats.PlainFormat
        The model's prompt format (build contexts, probes and options with it).
    device : str
        Where scoring runs.
    """

    def __init__(self, loaded: LoadedModel, batch_size: int = 8, *, share_prefix: bool = True,
                 share_kv: bool = True, min_shared_tokens: int = 8, max_head_rows: int = 256) -> None:
        if not isinstance(loaded, LoadedModel):
            raise TypeError(f"loaded: expected a LoadedModel from load_model(), got {type(loaded).__name__}")
        for name, val in (("batch_size", batch_size), ("max_head_rows", max_head_rows),
                          ("min_shared_tokens", min_shared_tokens)):
            if not isinstance(val, int) or isinstance(val, bool) or val < 1:
                raise ValueError(f"{name}: expected an integer >= 1, got {val!r}")
        self.loaded = loaded
        self.model = loaded.model
        self.tokenizer = loaded.tokenizer
        self.format = loaded.format
        self.device = loaded.device
        self.batch_size = batch_size
        self.share_prefix = share_prefix
        self.share_kv = share_kv
        self.min_shared_tokens = min_shared_tokens
        self.max_head_rows = max_head_rows
        self.stats = ScorerStats()
        self.body, self.head, self.softcap = model_parts(self.model)
        self.pad_id = int(self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0)
        self.prefix_ids = self._special_prefix()
        self._ctx_cache: dict[str, tuple[int, ...]] = {}

    # ------------------------------------------------------------ tokenization
    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _special_prefix(self) -> tuple[int, ...]:
        """Tokens the tokenizer prepends (Gemma: ``<bos>``); never appended ones."""
        tok = self.tokenizer
        probe = "Hello world"
        with_special = list(tok(probe)["input_ids"])
        plain = self._encode(probe)
        for k in range(len(with_special) - len(plain) + 1):
            if with_special[k:k + len(plain)] == plain:
                return tuple(with_special[:k])
        bos = tok.bos_token_id
        return (int(bos),) if bos is not None else ()

    def tokenize_pair(self, context: str, continuation: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Context ids (with the BOS prefix) and continuation ids of one pair.

        Parameters
        ----------
        context, continuation : str

        Returns
        -------
        (tuple of int, tuple of int)
        """
        ctx = self._ctx_cache.get(context)
        if ctx is None:
            ctx = self.prefix_ids + tuple(self._encode(context))
            if not ctx:
                start = self.tokenizer.bos_token_id
                if start is None:
                    start = self.tokenizer.eos_token_id
                if start is None:
                    raise DataError("contexts: an empty context needs a BOS or EOS token, "
                                    "and this tokenizer has neither")
                ctx = (int(start),)
            if len(self._ctx_cache) > 100_000:
                self._ctx_cache.clear()
            self._ctx_cache[context] = ctx
        joined = self.prefix_ids + tuple(self._encode(context + continuation))
        n = len(ctx)
        if joined[:n] == ctx and len(joined) > n:
            cont = joined[n:]
        else:  # the boundary merged tokens: tokenize the continuation on its own
            cont = tuple(self._encode(continuation))
        return ctx, cont

    # ----------------------------------------------------------------- scoring
    def score_pairs(self, contexts: Sequence[str], continuations: Sequence[str], *,
                    progress: bool = False,
                    callback: Callable[[int, int], None] | None = None) -> list[PairScore]:
        """Score each continuation given its context.

        Parameters
        ----------
        contexts, continuations : sequence of str
            Equal-length lists; continuations must be non-empty (contexts may
            be empty: the first token is then predicted from ``<bos>``).
        progress : bool
            Show a tqdm progress bar.
        callback : callable, optional
            Called after each batch with ``(pairs_done, pair_tokens_done)``
            for that batch.

        Returns
        -------
        list of PairScore
            In the input order.
        """
        contexts = _check_str_list(contexts, "contexts")
        continuations = _check_str_list(continuations, "continuations")
        if len(contexts) != len(continuations):
            raise DataError(f"continuations: expected {len(contexts)} entries (one per context), "
                            f"got {len(continuations)}")
        if not contexts:
            return []
        for i, c in enumerate(continuations):
            if not c:
                raise DataError(f"continuations[{i}]: expected non-empty text")
        t0 = time.perf_counter()
        pairs: list[_Pair] = []
        for i, (ctx_text, cont_text) in enumerate(zip(contexts, continuations)):
            ctx, cont = self.tokenize_pair(ctx_text, cont_text)
            if not cont:
                raise DataError(f"continuations[{i}]: {cont_text!r} encodes to no tokens")
            pairs.append(_Pair(i, len(ctx), ctx + cont))
        runs = self._assign_runs(pairs)
        results: list[PairScore | None] = [None] * len(pairs)
        by_run: dict[int, list[_Pair]] = {}
        for p in pairs:
            by_run.setdefault(p.run, []).append(p)
        # a shared prefix must end before the first position whose prediction is needed
        caps = [min(p.ctx_len for p in by_run[r]) - 1 for r in range(len(runs))]
        groups = (group_runs(runs, caps, self.min_shared_tokens) if self.share_kv
                  else [(0, list(range(len(runs))))])
        batches = []
        for shared, members in groups:
            members = sorted(members, key=lambda r: (-len(runs[r]), r))
            batches += [(shared, members[b:b + self.batch_size]) for b in range(0, len(members), self.batch_size)]
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(pairs), unit="pair", desc="scoring")
        try:
            cached: tuple[tuple[int, ...], Any] | None = None
            for shared, batch_runs in batches:
                prefix = None
                if shared:
                    key = runs[batch_runs[0]][:shared]
                    if cached is None or cached[0] != key:
                        cached = (key, self._prefix(key))
                    prefix = cached[1]
                self._score_batch([runs[r] for r in batch_runs], [by_run[r] for r in batch_runs], results,
                                  prefix, shared)
                n_done = sum(len(by_run[r]) for r in batch_runs)
                n_tok = sum(len(p.seq) for r in batch_runs for p in by_run[r])
                self.stats.pairs += n_done
                self.stats.pair_tokens += n_tok
                if bar is not None:
                    bar.update(n_done)
                    el = time.perf_counter() - t0
                    bar.set_postfix_str(f"{self.stats.pair_tokens / max(el, 1e-9):.0f} tok/s")
                if callback is not None:
                    callback(n_done, n_tok)
        finally:
            if bar is not None:
                bar.close()
            self.stats.seconds += time.perf_counter() - t0
        return results  # type: ignore[return-value]

    def _prefix(self, ids: tuple[int, ...]) -> Any:
        import torch

        with torch.inference_mode():
            cache = prefix_cache(self.body, ids)
        self.stats.forward_tokens += len(ids)
        self.stats.padded_tokens += len(ids)
        self.stats.prefix_tokens += len(ids)
        return cache

    def _assign_runs(self, pairs: list[_Pair]) -> list[tuple[int, ...]]:
        """Map every pair to a forward sequence containing its input as a prefix."""
        inputs = [p.seq[:-1] for p in pairs]
        runs: list[tuple[int, ...]] = []
        if not self.share_prefix:
            for p, inp in zip(pairs, inputs):
                p.run = len(runs)
                runs.append(inp)
            return runs
        # In lexicographic order, a sequence that is a prefix of any other is a
        # prefix of its immediate successor; walk backwards to chain them.
        order = sorted(range(len(pairs)), key=lambda i: inputs[i])
        nxt: int | None = None
        for i in reversed(order):
            inp = inputs[i]
            if nxt is not None and inputs[nxt][:len(inp)] == inp:
                pairs[i].run = pairs[nxt].run
            else:
                pairs[i].run = len(runs)
                runs.append(inp)
            nxt = i
        return runs

    def _score_batch(self, seqs: list[tuple[int, ...]], groups: list[list[_Pair]],
                     results: list[PairScore | None], prefix: Any = None, shared: int = 0) -> None:
        import torch

        ids, mask = pad_right([s[shared:] for s in seqs], self.pad_id, self.device)
        # unique (row, position) pairs whose next-token distribution is needed
        slot: dict[tuple[int, int], int] = {}
        rows: list[int] = []
        cols: list[int] = []
        for row, group in enumerate(groups):
            for p in group:
                p.positions = []
                for pos in range(p.ctx_len - 1, len(p.seq) - 1):
                    key = (row, pos - shared)
                    if key not in slot:
                        slot[key] = len(rows)
                        rows.append(row)
                        cols.append(pos - shared)
                    p.positions.append(slot[key])
        with torch.inference_mode():
            hidden = run_body(self.body, ids, mask, prefix, shared)
            picked = hidden[torch.tensor(rows, device=hidden.device), torch.tensor(cols, device=hidden.device)]
            logp = torch.cat([head_logprobs(self.head, self.softcap, picked[start:start + self.max_head_rows])
                              for start in range(0, picked.shape[0], self.max_head_rows)])
        targets_flat: list[int] = []
        slots_flat: list[int] = []
        for group in groups:
            for p in group:
                slots_flat.extend(p.positions)
                targets_flat.extend(p.seq[p.ctx_len:])
        vals = logp[torch.tensor(slots_flat, device=logp.device),
                    torch.tensor(targets_flat, device=logp.device)].double().cpu().numpy()
        k = 0
        for group in groups:
            for p in group:
                n = len(p.seq) - p.ctx_len
                tok = tuple(float(v) for v in vals[k:k + n])
                k += n
                results[p.index] = PairScore(float(np.sum(vals[k - n:k])), tok, tuple(p.seq[p.ctx_len:]), p.ctx_len)
        self.stats.forward_tokens += int(mask.sum())
        self.stats.padded_tokens += int(mask.numel())
        self.stats.head_positions += len(rows)

    # ------------------------------------------------------------- options
    def next_token_scorer(self, options: Sequence[str] = (" Yes", " No"), *, autocast: bool = False) -> Any:
        """The (cached) :class:`~psm_bayes.llm.nexttoken.NextTokenScorer` of ``options`` in :attr:`format`.

        ``options`` are item options (e.g. ``" Yes"``), mapped through
        :meth:`format.option <psm_bayes.llm.formats.PlainFormat.option>`; its
        counters (``forward_tokens``, ``prompts_scored``) measure the work done.
        """
        from psm_bayes.llm.nexttoken import NextTokenScorer

        key = (tuple(options), bool(autocast))
        cache = self.__dict__.setdefault("_next_token", {})
        if key not in cache:
            cache[key] = NextTokenScorer(self.model, self.tokenizer, [self.format.option(o) for o in options],
                                         batch_size=self.batch_size, autocast=autocast,
                                         sample_prompt=self.format.item_text("Hello?"))
        return cache[key]

    def option_logprobs(self, texts: Sequence[str], options: Sequence[str] = (" Yes", " No"), *,
                        autocast: bool = False) -> np.ndarray:
        """``log p(option | text)`` for single-token options: one forward pass per text.

        Texts are built with :attr:`format` (``context + format.item_text(prompt)``);
        texts passed together should share their context (it runs once, as a
        cached prefix).  See :meth:`next_token_scorer`.

        Returns
        -------
        numpy.ndarray
            ``(len(texts), len(options))`` float64.
        """
        return self.next_token_scorer(options, autocast=autocast).score(texts)

    # --------------------------------------------------------------- table
    def score_table(self, personas: PersonaSet, items: ItemSet, **kwargs: Any) -> Any:
        """Score every (persona, item, option); see :func:`psm_bayes.llm.table.score_table`."""
        from psm_bayes.llm.table import score_table

        return score_table(self, personas, items, **kwargs)


def load_scorer(name_or_path: str | os.PathLike | None = None, *, device: str = "auto", dtype: str | None = None,
                threads: int = 1, batch_size: int | None = None, prompt_format: str | None = None) -> Any:
    """Load a model and return a :class:`~psm_bayes.llm.scorer.Scorer` ready for it.

    The scorer knows its prompt format (``scorer.format``: build contexts,
    probes and options with it), its device and a batch size sized to that
    device.  Parameters as in :func:`~psm_bayes.llm.loading.load_model`; ``batch_size`` defaults to
    :func:`~psm_bayes.llm.loading.default_batch_size`.

    Examples
    --------
    >>> sc = load_scorer("smollm2-135m-instruct")                      # doctest: +SKIP
    >>> fmt = sc.format                                                 # doctest: +SKIP
    >>> texts = [fmt.neutral_context() + fmt.item_text("Is the sky blue?")]  # doctest: +SKIP
    >>> sc.option_logprobs(texts, (" Yes", " No"))                      # doctest: +SKIP
    """
    from psm_bayes.llm.loading import default_batch_size, load_model

    loaded = load_model(name_or_path, dtype=dtype, threads=threads, device=device, prompt_format=prompt_format)
    return Scorer(loaded, batch_size=batch_size if batch_size is not None else default_batch_size(loaded))
