"""Prompt formats for persona-conditioned scoring with a base (non-chat) LM.

The string scored for persona ``p``, item ``i`` and option ``o`` is::

    context(p) + item_text(prompt_i) + option_o

where ``context(p)`` is one of

* :func:`description_context` -- a system-style preamble describing the
  persona, followed by a blank line;
* :func:`fewshot_context` -- ``k`` in-context answers by the persona, in the
  same ``Question:/Answer:`` format as the probe, each followed by a blank line;
* :func:`neutral_context` -- the neutral "Assistant": by default the empty
  string, i.e. the base model's own default with no persona text at all, so
  ``neutral_loglik`` measures what the pre-training prior alone says.

Options start with a space (``" Yes"``/``" No"``) because :func:`item_text`
ends with ``"Answer:"``; the scorer tokenizes the option on the joined-string
boundary.  All functions are pure string formatting and validate their input,
raising :class:`psm_bayes.data.DataError` naming the bad field.
"""

from __future__ import annotations

from typing import Sequence

from psm_bayes.data import DataError

QUESTION_PREFIX = "Question: "
ANSWER_PREFIX = "\nAnswer:"
EXAMPLE_SEPARATOR = "\n\n"
ASSISTANT_PREAMBLE = "The following is a conversation with an AI assistant."
"""Optional minimal neutral preamble (see :func:`neutral_context`)."""


def check_text(value: object, field: str, *, allow_empty: bool = False) -> str:
    """``value`` if it is a (non-empty, unless ``allow_empty``) str; DataError naming ``field`` otherwise."""
    if not isinstance(value, str):
        raise DataError(f"{field}: expected str, got {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise DataError(f"{field}: expected non-empty text")
    return value


def item_text(prompt: str) -> str:
    """Format a probe as ``'Question: {prompt}\\nAnswer:'``.

    The continuation (option) follows directly, e.g. ``" Yes"`` or ``" No"``.

    Parameters
    ----------
    prompt : str
        The question or statement prompt (surrounding whitespace is stripped).

    Returns
    -------
    str
    """
    return f"{QUESTION_PREFIX}{check_text(prompt, 'prompt').strip()}{ANSWER_PREFIX}"


def description_context(description: str) -> str:
    """System-style preamble for a persona description: ``'{description}\\n\\n'``.

    Parameters
    ----------
    description : str
        Persona description, e.g. ``"You are a scrupulously honest assistant."``.

    Returns
    -------
    str
    """
    return check_text(description, "description").strip() + EXAMPLE_SEPARATOR


def fewshot_context(examples: Sequence[tuple[str, str]]) -> str:
    """In-context examples of the persona answering, in the probe's format.

    Each ``(prompt, answer)`` becomes ``item_text(prompt) + answer + '\\n\\n'``;
    ``answer`` is an option text such as ``" Yes"`` (a leading space is added
    when missing, so it reads ``"Answer: Yes"``).

    Parameters
    ----------
    examples : sequence of (str, str)
        ``(prompt, answer option text)`` pairs, at least one.

    Returns
    -------
    str
    """
    if isinstance(examples, (str, bytes)) or not len(examples):
        raise DataError("examples: expected a non-empty sequence of (prompt, answer) pairs")
    parts = []
    for k, ex in enumerate(examples):
        if not isinstance(ex, (tuple, list)) or len(ex) != 2:
            raise DataError(f"examples[{k}]: expected a (prompt, answer) pair, got {ex!r}")
        prompt = check_text(ex[0], f"examples[{k}][0]")
        answer = check_text(ex[1], f"examples[{k}][1]")
        if not answer[:1].isspace():
            answer = " " + answer
        parts.append(item_text(prompt) + answer.rstrip() + EXAMPLE_SEPARATOR)
    return "".join(parts)


def neutral_context(assistant_preamble: bool = False) -> str:
    """Context of the neutral "Assistant": no persona text.

    Parameters
    ----------
    assistant_preamble : bool
        ``False`` (default): the empty string -- the base model's default with
        nothing before the question, so the neutral scores reflect the
        pre-training prior alone.  ``True``: the minimal
        :data:`ASSISTANT_PREAMBLE` followed by a blank line, which frames the
        text as an assistant conversation without describing any trait.

    Returns
    -------
    str
    """
    return ASSISTANT_PREAMBLE + EXAMPLE_SEPARATOR if assistant_preamble else ""


def full_text(context: str, prompt: str, option: str) -> str:
    """The complete scored string ``context + item_text(prompt) + option``."""
    return check_text(context, "context", allow_empty=True) + item_text(prompt) + check_text(option, "option")
