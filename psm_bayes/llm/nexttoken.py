"""Fast next-token option scoring with a shared-prefix KV cache.

Every probe ends in ``"Answer:"`` and its options (``" Yes"``/``" No"``) are
single tokens, so both options' log-probabilities come from ONE forward pass:
the next-token distribution at the prompt's last position.  Prompts that share
a long token prefix (the same in-context shots, the same question stem) share
its key/value cache:

1. all prompts of a call are tokenized in full (``<bos>`` + text), so the
   tokens are exactly those of the unsplit string;
2. their longest common token prefix runs once (batch 1) and its KV cache is
   copied across a batch;
3. only the suffixes (right-padded; causal attention never looks at the pads)
   run through the model body, and the output layer is applied at one
   position per prompt: the normaliser (full-vocabulary logsumexp, the true
   ``log p``) in the model's compute dtype, the option logits in float32 --
   under bf16 the logits are quantised to ~0.1 nats, which would swamp small
   differences between options; the float32 option logits keep the Yes/No
   log-odds precise (the normaliser's rounding is common to all options).

The result equals scoring each prompt on its own (up to float summation
order; checked in the tests against :class:`psm_bayes.llm.Scorer`).  Works
for plain causal LMs and PEFT-wrapped ones (LoRA layers live inside the body).
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Sequence

import numpy as np

from psm_bayes.data import DataError
from psm_bayes.llm.forward import common_prefix, model_device, model_parts, pad_right, prefix_cache, run_body


class NextTokenScorer:
    """``log p(option | prompt)`` for single-token options, from one forward pass per prompt.

    Parameters
    ----------
    model : transformers.PreTrainedModel or peft.PeftModel
        A causal LM (eval mode is set by the caller).
    tokenizer
        Its tokenizer.
    options : sequence of str
        Option texts as scored (default ``(" Yes", " No")``), each a single
        token after ``sample_prompt``.
    batch_size : int
        Suffixes per forward pass.
    autocast : bool
        Run under bfloat16 ``torch.autocast`` on the model's device (for a
        float32 model, e.g. during LoRA training) where bf16 is native there;
        elsewhere (a CPU without AVX-512 BF16/AMX) in float32.
    sample_prompt : str
        A probe in the prompt format in use, ending where the option starts
        (default the plain ``"Question: Hello?\nAnswer:"``; for a chat format
        ``fmt.item_text("Hello?")``).
    """

    def __init__(self, model: Any, tokenizer: Any, options: Sequence[str] = (" Yes", " No"), *,
                 batch_size: int = 16, autocast: bool = False,
                 sample_prompt: str = "Question: Hello?\nAnswer:") -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = int(batch_size)
        self.autocast = bool(autocast)
        self.options = tuple(options)
        self.prefix_ids = tuple(tokenizer("x")["input_ids"][:-len(tokenizer("x", add_special_tokens=False)["input_ids"])])
        base = self.encode(sample_prompt)
        ids = []
        for opt in self.options:
            full = self.encode(sample_prompt + opt)
            if full[:len(base)] != base or len(full) != len(base) + 1:
                raise DataError(f"options: {opt!r} is not a single token after {sample_prompt[-12:]!r}; "
                                "use psm_bayes.llm.Scorer for multi-token options")
            ids.append(full[-1])
        self.option_ids = tuple(int(i) for i in ids)
        self.forward_tokens = 0
        self.prompts_scored = 0

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` as scored: the tokenizer's special prefix (``<bos>``), then the text."""
        return list(self.prefix_ids) + list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def score(self, prompts: Sequence[str]) -> np.ndarray:
        """Log-probabilities of each option as the next token after each prompt.

        Parameters
        ----------
        prompts : sequence of str
            Full prompts (context + item text ending in ``"Answer:"``).
            Prompts passed together should share their context: the longest
            common token prefix of the call is computed once.

        Returns
        -------
        numpy.ndarray
            ``(len(prompts), n_options)`` float64 log p (full-vocabulary
            normalisation).
        """
        if isinstance(prompts, str):
            raise DataError("prompts: expected a list of str, got a single str")
        prompts = list(prompts)
        if not prompts:
            return np.zeros((0, len(self.options)))
        seqs = [self.encode(p) for p in prompts]
        # longest common token prefix of the call (capped so every prompt keeps >= 1 own token)
        lcp = min([len(s) - 1 for s in seqs] + [common_prefix(seqs[0], s) for s in seqs[1:]])
        with self.computing():
            base_cache = None
            if lcp > 0:
                base_cache = prefix_cache(model_parts(self.model)[0], seqs[0][:lcp])
                self.forward_tokens += lcp
            return self.score_suffixes([s[lcp:] for s in seqs], base_cache, lcp)

    @contextlib.contextmanager
    def computing(self) -> Iterator[None]:
        """Context of every forward pass: ``torch.inference_mode`` and, where asked and native, bf16 autocast."""
        import torch

        from psm_bayes.llm.loading import bf16_native

        device = model_device(self.model)
        use_bf16 = self.autocast and bf16_native(device.type)
        ctx = torch.autocast(device.type, dtype=torch.bfloat16) if use_bf16 else contextlib.nullcontext()
        with torch.inference_mode(), ctx:
            yield

    def score_suffixes(self, suffixes: Sequence[Sequence[int]], prefix: Any = None, prefix_len: int = 0, *,
                       batch_size: int | None = None) -> np.ndarray:
        """Option log-probabilities after each token suffix, run on top of a cached prefix.

        Parameters
        ----------
        suffixes : sequence of sequence of int
            Token ids (each non-empty) that follow the prefix.
        prefix : key/value cache, optional
            A batch-1 cache of ``prefix_len`` tokens
            (:func:`psm_bayes.llm.forward.prefix_cache`); ``None``: the
            suffixes are whole sequences.
        prefix_len : int
        batch_size : int, optional
            Suffixes per forward pass (default :attr:`batch_size`).

        Returns
        -------
        numpy.ndarray
            ``(len(suffixes), n_options)`` float64 log p.  Call inside
            :meth:`computing`.
        """
        import torch

        out = np.zeros((len(suffixes), len(self.options)))
        body, head, softcap = model_parts(self.model)
        device = model_device(self.model)
        opt = torch.tensor(self.option_ids, device=device)
        size = batch_size or self.batch_size
        order = sorted(range(len(suffixes)), key=lambda i: len(suffixes[i]))
        for b in range(0, len(order), size):
            idx = order[b:b + size]
            batch = [list(suffixes[i]) for i in idx]
            ids, mask = pad_right(batch, 0, device)
            hidden = run_body(body, ids, mask, prefix, prefix_len)
            last = torch.tensor([len(s) - 1 for s in batch], device=device)
            h = hidden[torch.arange(len(idx), device=device), last]
            # normaliser from the full-vocabulary logits in the model's compute dtype;
            # the option logits themselves in float32 (bf16 logits are quantised to
            # ~0.1 nats, which would swamp small log-odds shifts)
            logits = head(h).float()
            with torch.autocast(device.type, enabled=False):
                opt_logits = h.float() @ head.weight[opt].float().T
                if getattr(head, "bias", None) is not None:
                    opt_logits = opt_logits + head.bias[opt].float()
            if softcap is not None:
                logits = torch.tanh(logits / softcap) * softcap
                opt_logits = torch.tanh(opt_logits / softcap) * softcap
            logp = opt_logits - torch.logsumexp(logits, dim=-1, keepdim=True)
            out[idx] = logp.double().cpu().numpy()
            self.forward_tokens += sum(len(s) for s in batch)
        self.prompts_scored += len(suffixes)
        return out


def normalised_logp(logp: np.ndarray) -> np.ndarray:
    """Renormalise option log-probabilities over the options (last axis)."""
    from scipy.special import logsumexp

    logp = np.asarray(logp, dtype=float)
    return logp - logsumexp(logp, axis=-1, keepdims=True)
