"""Prompt formats: how persona contexts, probes and answers become the text a model scores.

Two formats share one interface (:class:`PromptFormat`), so every caller
builds its strings the same way whatever the model::

    fmt.full_text(context, prompt, option) == context + fmt.item_text(prompt) + fmt.option(option)

* :class:`PlainFormat` (``"plain"``, base models): the
  :mod:`psm_bayes.llm.prompts` strings -- ``Question: {prompt}\\nAnswer:`` and
  the option ``" Yes"``; description preambles; few-shot ``Question:/Answer:``
  blocks; an empty neutral context.
* :class:`ChatFormat` (``"chat"``, instruct models): the tokenizer's own chat
  template.  The persona description is the system turn, few-shot answers are
  earlier user/assistant turns after the template's default system turn, the
  probe is the last user turn followed by the assistant header, and the
  Assistant's answer is the option without its leading space (``"Yes"``).
  The neutral context is the template's default system turn, i.e. the
  post-trained Assistant as shipped.

Contexts are prefixes of every scored string, which is what lets the scorer
run a persona's context once and reuse its key/value cache for all items.
:meth:`ChatFormat.full_text` equals ``tokenizer.apply_chat_template`` of the
whole conversation (checked on construction and in the tests).
"""

from __future__ import annotations

from typing import Any, Sequence

from psm_bayes.data import DataError
from psm_bayes.llm import prompts

FORMATS: tuple[str, ...] = ("plain", "chat")
"""Prompt format names (``"auto"`` also accepted where a tokenizer is at hand)."""

_SENTINEL = "\u0001PSM-SENTINEL\u0001"


class PlainFormat:
    """Plain ``Question:/Answer:`` text for base models (see :mod:`psm_bayes.llm.prompts`)."""

    name = "plain"

    def item_text(self, prompt: str) -> str:
        """``'Question: {prompt}\\nAnswer:'``."""
        return prompts.item_text(prompt)

    def option(self, option: str) -> str:
        """The scored continuation of an option (unchanged: ``" Yes"``)."""
        return prompts.check_text(option, "option")

    def description_context(self, description: str) -> str:
        """``'{description}\\n\\n'``."""
        return prompts.description_context(description)

    def fewshot_context(self, examples: Sequence[tuple[str, str]]) -> str:
        """``Question:/Answer:`` blocks of ``(prompt, answer)`` examples."""
        return prompts.fewshot_context(examples)

    def neutral_context(self) -> str:
        """The empty string: the base model's own default."""
        return prompts.neutral_context()

    def full_text(self, context: str, prompt: str, option: str) -> str:
        """``context + item_text(prompt) + option(option)``."""
        return prompts.check_text(context, "context", allow_empty=True) + self.item_text(prompt) + self.option(option)

    def describe(self) -> str:
        """One line recorded with the scores."""
        return "plain: context + 'Question: {prompt}\\nAnswer:' + option"


class ChatFormat(PlainFormat):
    """The tokenizer's chat template, split into prefix-closed pieces.

    Parameters
    ----------
    tokenizer : transformers.PreTrainedTokenizerBase
        A tokenizer with a ``chat_template``.

    Raises
    ------
    ValueError
        If the tokenizer has no chat template, or the template does not render
        a conversation as the concatenation of its turns (then use ``"plain"``).
    """

    name = "chat"

    def __init__(self, tokenizer: Any) -> None:
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError("prompt_format 'chat': this tokenizer has no chat template; use 'plain'")
        self.tokenizer = tokenizer
        render = self._render
        sys_only = render([("system", _SENTINEL)])
        user = render([("system", _SENTINEL), ("user", _SENTINEL)])
        both = render([("system", _SENTINEL), ("user", _SENTINEL), ("assistant", _SENTINEL)])
        gen = render([("system", _SENTINEL), ("user", _SENTINEL)], generation=True)
        if not (user.startswith(sys_only) and both.startswith(user) and gen.startswith(user)):
            raise ValueError("prompt_format 'chat': the chat template does not render turns as "
                             "concatenated pieces; use 'plain'")
        self._turn = {role: text.split(_SENTINEL) for role, text in
                      (("system", sys_only), ("user", user[len(sys_only):]), ("assistant", both[len(user):]))}
        self._generation = gen[len(user):]
        default = render([("user", _SENTINEL)])
        user_turn = user[len(sys_only):]
        if not default.endswith(user_turn):
            raise ValueError("prompt_format 'chat': the chat template's default system turn is not a prefix; "
                             "use 'plain'")
        self._neutral = default[:len(default) - len(user_turn)]
        for role, parts in self._turn.items():
            if len(parts) != 2:
                raise ValueError(f"prompt_format 'chat': the template renders a {role} message's content "
                                 f"{len(parts) - 1} times; use 'plain'")

    def _render(self, messages: Sequence[tuple[str, str]], generation: bool = False) -> str:
        return self.tokenizer.apply_chat_template([{"role": r, "content": c} for r, c in messages],
                                                  tokenize=False, add_generation_prompt=generation)

    def turn(self, role: str, content: str) -> str:
        """One rendered turn (``role`` is ``system``, ``user`` or ``assistant``)."""
        before, after = self._turn[role]
        return before + content + after

    def item_text(self, prompt: str) -> str:
        """The probe as the last user turn, then the assistant header."""
        return self.turn("user", prompts.check_text(prompt, "prompt").strip()) + self._generation

    def option(self, option: str) -> str:
        """The Assistant's answer: the option without surrounding whitespace (``"Yes"``)."""
        return prompts.check_text(option, "option").strip()

    def description_context(self, description: str) -> str:
        """The persona description as the system turn."""
        return self.turn("system", prompts.check_text(description, "description").strip())

    def fewshot_context(self, examples: Sequence[tuple[str, str]]) -> str:
        """The default system turn, then one user/assistant exchange per example."""
        if isinstance(examples, (str, bytes)) or not len(examples):
            raise DataError("examples: expected a non-empty sequence of (prompt, answer) pairs")
        parts = [self._neutral]
        for k, ex in enumerate(examples):
            if not isinstance(ex, (tuple, list)) or len(ex) != 2:
                raise DataError(f"examples[{k}]: expected a (prompt, answer) pair, got {ex!r}")
            prompt = prompts.check_text(ex[0], f"examples[{k}][0]").strip()
            answer = prompts.check_text(ex[1], f"examples[{k}][1]").strip()
            parts.append(self.turn("user", prompt) + self.turn("assistant", answer))
        return "".join(parts)

    def neutral_context(self) -> str:
        """The template's default system turn (empty when the template has none)."""
        return self._neutral

    def conversation(self, context_messages: Sequence[tuple[str, str]], prompt: str) -> str:
        """``apply_chat_template`` of ``context_messages + [user: prompt]`` with the assistant header.

        The reference the format's pieces must reproduce (used by the tests).
        """
        return self._render(list(context_messages) + [("user", prompt)], generation=True)

    def describe(self) -> str:
        """One line recorded with the scores."""
        return ("chat: tokenizer chat template; persona = system turn or user/assistant example turns, "
                "probe = last user turn, the assistant turn answers (option without leading space)")


def make_format(name: str, tokenizer: Any = None) -> PlainFormat:
    """The prompt format called ``name`` (``"plain"``, ``"chat"``, or ``"auto"``).

    ``"auto"`` is ``"chat"`` when the tokenizer has a chat template, else ``"plain"``.
    """
    if name == "auto":
        name = "chat" if getattr(tokenizer, "chat_template", None) else "plain"
    if name == "plain":
        return PlainFormat()
    if name == "chat":
        if tokenizer is None:
            raise ValueError("prompt_format 'chat': needs the model's tokenizer")
        return ChatFormat(tokenizer)
    raise ValueError(f"prompt_format: expected one of {FORMATS + ('auto',)}, got {name!r}")
