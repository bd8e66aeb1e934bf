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
  positions are computed once.  Sequences are sorted by length before
  batching to minimise padding.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from psm_bayes.data import DataError, ItemSet, PersonaSet
from psm_bayes.llm import prompts
from psm_bayes.llm.loading import LoadedModel

NEUTRAL_PERSONA = "<neutral>"
"""Persona id used for neutral-context rows in the score cache."""


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
    seconds : float
        Wall time inside :meth:`Scorer.score_pairs`.
    """

    pairs: int = 0
    pair_tokens: int = 0
    forward_tokens: int = 0
    padded_tokens: int = 0
    head_positions: int = 0
    seconds: float = 0.0

    def reset(self) -> None:
        """Zero all counters."""
        self.pairs = self.pair_tokens = self.forward_tokens = self.padded_tokens = self.head_positions = 0
        self.seconds = 0.0


@dataclass
class _Pair:
    index: int
    ctx_len: int
    seq: tuple[int, ...]
    run: int = -1
    positions: list[int] = field(default_factory=list)


def context_hash(text: str) -> str:
    """Stable 32-hex-digit hash of a full conditioning string (cache key)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


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
        From :func:`psm_bayes.llm.loading.load_model`.
    batch_size : int
        Sequences per forward pass (default 8).
    share_prefix : bool
        Reuse one forward pass for pairs whose inputs are prefixes of one
        another (exact; default True).
    max_head_rows : int
        Positions per output-layer chunk (bounds the ``rows x vocab`` logits
        buffer; default 256, i.e. 256 MiB at a 262k fp32 vocabulary).
    """

    def __init__(self, loaded: LoadedModel, batch_size: int = 8, *, share_prefix: bool = True,
                 max_head_rows: int = 256) -> None:
        if not isinstance(loaded, LoadedModel):
            raise TypeError(f"loaded: expected a LoadedModel from load_model(), got {type(loaded).__name__}")
        for name, val in (("batch_size", batch_size), ("max_head_rows", max_head_rows)):
            if not isinstance(val, int) or isinstance(val, bool) or val < 1:
                raise ValueError(f"{name}: expected an integer >= 1, got {val!r}")
        self.loaded = loaded
        self.model = loaded.model
        self.tokenizer = loaded.tokenizer
        self.batch_size = batch_size
        self.share_prefix = share_prefix
        self.max_head_rows = max_head_rows
        self.stats = ScorerStats()
        self.body = self.model.base_model
        self.head = self.model.get_output_embeddings()
        self.softcap = getattr(self.model.config, "final_logit_softcapping", None)
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
        order = sorted(range(len(runs)), key=lambda r: (-len(runs[r]), r))
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(pairs), unit="pair", desc="scoring")
        try:
            for b in range(0, len(order), self.batch_size):
                batch_runs = order[b:b + self.batch_size]
                self._score_batch([runs[r] for r in batch_runs], [by_run[r] for r in batch_runs], results)
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
                     results: list[PairScore | None]) -> None:
        import torch

        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for row, s in enumerate(seqs):
            ids[row, :len(s)] = torch.tensor(s, dtype=torch.long)
            mask[row, :len(s)] = 1
        # unique (row, position) pairs whose next-token distribution is needed
        slot: dict[tuple[int, int], int] = {}
        rows: list[int] = []
        cols: list[int] = []
        for row, group in enumerate(groups):
            for p in group:
                p.positions = []
                for pos in range(p.ctx_len - 1, len(p.seq) - 1):
                    key = (row, pos)
                    if key not in slot:
                        slot[key] = len(rows)
                        rows.append(row)
                        cols.append(pos)
                    p.positions.append(slot[key])
        with torch.inference_mode():
            hidden = self.body(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
            picked = hidden[torch.tensor(rows), torch.tensor(cols)]
            logps = []
            for start in range(0, picked.shape[0], self.max_head_rows):
                logps.append(self._head_logprobs(picked[start:start + self.max_head_rows]))
            logp = torch.cat(logps)  # (n_positions, vocab) float32
        targets_flat: list[int] = []
        slots_flat: list[int] = []
        for group in groups:
            for p in group:
                slots_flat.extend(p.positions)
                targets_flat.extend(p.seq[p.ctx_len:])
        vals = logp[torch.tensor(slots_flat), torch.tensor(targets_flat)].double().numpy()
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

    def _head_logprobs(self, hidden: Any) -> Any:
        """Output layer (+ softcapping) and float32 log-softmax at selected positions."""
        import torch

        logits = self.head(hidden)
        if self.softcap is not None:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return torch.log_softmax(logits.float(), dim=-1)

    # ------------------------------------------------------------------- table
    def score_table(self, personas: PersonaSet, items: ItemSet, *, contexts: dict[str, str] | None = None,
                    neutral: bool = True, cache: Any = None, progress: bool = True,
                    chunk_size: int = 256) -> Any:
        """Score every (persona, item, option) and return an xarray Dataset.

        Parameters
        ----------
        personas : PersonaSet
            Personas; by default persona ``p`` is conditioned on
            ``prompts.description_context(p.description)``.
        items : ItemSet
            Items; the scored string is ``context + item_text(prompt) + option``.
        contexts : dict of str to str, optional
            Explicit context text per persona id (e.g. from
            :func:`prompts.fewshot_context`); must cover every persona.
        neutral : bool
            Also score every item under :func:`prompts.neutral_context`
            (variable ``neutral_loglik``).
        cache : ScoreCache or path, optional
            Score cache: finished rows are reused and new rows are appended in
            chunks, so an interrupted run resumes where it stopped.
        progress : bool
            Show a progress bar with throughput.
        chunk_size : int
            Pairs scored (and cached) per chunk.

        Returns
        -------
        xarray.Dataset
            ``loglik`` (persona, item, option) -- valid input to
            :class:`psm_bayes.data.LogLikTable`; ``n_tokens`` (persona, item,
            option); ``option_text`` (item, option); with ``neutral``,
            ``neutral_loglik`` and ``neutral_n_tokens`` (item, option).
        """
        from psm_bayes.llm.cache import ScoreCache, score_rows

        if not isinstance(personas, PersonaSet):
            raise DataError(f"personas: expected a PersonaSet, got {type(personas).__name__}")
        if not isinstance(items, ItemSet):
            raise DataError(f"items: expected an ItemSet, got {type(items).__name__}")
        if not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"chunk_size: expected an integer >= 1, got {chunk_size!r}")
        ctx = _persona_contexts(personas, contexts)
        item_texts = [prompts.item_text(p) for p in items.prompts]
        # rows: (persona key, persona index or -1, item index, option index, context text)
        plan: list[tuple[str, int, int, int, str]] = []
        for pi, pid in enumerate(personas.ids):
            for ii in range(len(items)):
                for oi in range(items.n_options):
                    plan.append((pid, pi, ii, oi, ctx[pid] + item_texts[ii]))
        if neutral:
            neutral_ctx = prompts.neutral_context()
            for ii in range(len(items)):
                for oi in range(items.n_options):
                    plan.append((NEUTRAL_PERSONA, -1, ii, oi, neutral_ctx + item_texts[ii]))
        keys = [(pk, items.ids[ii], items.options[ii][oi], context_hash(text)) for pk, _, ii, oi, text in plan]
        store = None if cache is None else (cache if isinstance(cache, ScoreCache) else ScoreCache(cache))
        done: dict[tuple[str, str, str, str], tuple[float, int]] = {}
        if store is not None:
            done = store.lookup(self.loaded.key)
        todo = [k for k, key in enumerate(keys) if key not in done]
        bar = None
        if progress and todo:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(todo), unit="pair", desc=f"scoring {self.loaded.model_id}")
        t0, n_tok = time.perf_counter(), 0
        try:
            for start in range(0, len(todo), chunk_size):
                chunk = todo[start:start + chunk_size]
                scores = self.score_pairs([plan[k][4] for k in chunk],
                                          [items.options[plan[k][2]][plan[k][3]] for k in chunk])
                for k, s in zip(chunk, scores):
                    done[keys[k]] = (s.logp, len(s.token_ids))
                if store is not None:
                    store.append(score_rows(self.loaded.key, [keys[k] for k in chunk], scores))
                if bar is not None:
                    n_tok += sum(len(s.token_ids) + s.n_context_tokens for s in scores)
                    bar.update(len(chunk))
                    bar.set_postfix_str(f"{n_tok / max(time.perf_counter() - t0, 1e-9):.0f} tok/s")
        finally:
            if bar is not None:
                bar.close()
        return self._assemble(personas, items, plan, keys, done, neutral)

    def _assemble(self, personas: PersonaSet, items: ItemSet, plan: list, keys: list, done: dict,
                  neutral: bool) -> Any:
        import xarray as xr

        n_p, n_i, n_o = len(personas), len(items), items.n_options
        ll = np.full((n_p, n_i, n_o), np.nan)
        nt = np.zeros((n_p, n_i, n_o), dtype=np.int64)
        nll = np.full((n_i, n_o), np.nan)
        nnt = np.zeros((n_i, n_o), dtype=np.int64)
        for (pk, pi, ii, oi, _), key in zip(plan, keys):
            logp, ntok = done[key]
            if pi >= 0:
                ll[pi, ii, oi], nt[pi, ii, oi] = logp, ntok
            else:
                nll[ii, oi], nnt[ii, oi] = logp, ntok
        coords = {"persona": list(personas.ids), "item": list(items.ids), "option": np.arange(n_o)}
        ds = xr.Dataset(
            {
                "loglik": (("persona", "item", "option"), ll),
                "n_tokens": (("persona", "item", "option"), nt),
                "option_text": (("item", "option"), np.array([list(o) for o in items.options], dtype=str)),
                "prompt": (("item",), np.array(list(items.prompts), dtype=str)),
                "persona_name": (("persona",), np.array(list(personas.names), dtype=str)),
            },
            coords=coords,
        )
        if neutral:
            ds["neutral_loglik"] = (("item", "option"), nll)
            ds["neutral_n_tokens"] = (("item", "option"), nnt)
        ds["loglik"].attrs["description"] = "log p(option | persona context + item_text(prompt)), summed over tokens"
        ds.attrs.update({
            "model_id": self.loaded.model_id,
            "weights_hash": self.loaded.weights_hash,
            "model_key": self.loaded.key,
            "dtype": self.loaded.dtype,
            "prompt_format": "context + 'Question: {prompt}\\nAnswer:' + option",
            "neutral_context": prompts.neutral_context(),
        })
        return ds


def _persona_contexts(personas: PersonaSet, contexts: dict[str, str] | None) -> dict[str, str]:
    """Context text per persona id, validated."""
    if contexts is None:
        out = {}
        for i, (pid, desc) in enumerate(zip(personas.ids, personas.descriptions)):
            if not desc.strip():
                raise DataError(f"personas.descriptions[{i}]: persona {pid!r} has no description; "
                                f"give one or pass contexts={{{pid!r}: ...}}")
            out[pid] = prompts.description_context(desc)
        return out
    if not isinstance(contexts, dict):
        raise DataError(f"contexts: expected a dict persona id -> text, got {type(contexts).__name__}")
    missing = [p for p in personas.ids if p not in contexts]
    extra = sorted(str(k) for k in contexts if k not in set(personas.ids))
    if missing:
        raise DataError(f"contexts: no context for persona(s) {missing[:5]}")
    if extra:
        raise DataError(f"contexts: unknown persona id(s) {extra[:5]}")
    for pid in personas.ids:
        if not isinstance(contexts[pid], str):
            raise DataError(f"contexts[{pid!r}]: expected str, got {type(contexts[pid]).__name__}")
    return {pid: contexts[pid] for pid in personas.ids}
