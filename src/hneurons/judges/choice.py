"""Multiple-choice parsing: the option a free-text answer picks (the paper's FaithEval judge)."""

from __future__ import annotations

import re
from collections.abc import Sequence

from hneurons.judges.qa import _contains_words, normalize_answer


def parse_choice(response: str, labels: Sequence[str], texts: Sequence[str]) -> str | None:
    """Map a free-text answer to one option label, or ``None`` when it cannot be parsed.

    Accepted forms, in order: the response is just a label ("B", "(B)", "B)", "B.", "B: text");
    an explicit "answer is B" / "Answer: (B)"; the response starts with "B)" / "(B)" / "B." /
    "B:"; the response equals (normalised) one option text; exactly one option text occurs in
    the response. Ambiguous responses (two options) give ``None``, never a guess.
    """
    if not response or not labels:
        return None
    text = response.strip()
    lab_alt = "|".join(re.escape(lab) for lab in sorted(labels, key=len, reverse=True))
    lab_of = {lab.upper(): lab for lab in labels}

    def hit(m: re.Match[str] | None) -> str | None:
        return lab_of.get(m.group(1).upper()) if m else None

    # 1. bare label, possibly wrapped: "B", "(B)", "B)", "B.", "**B**", "B: the text"
    bare = re.fullmatch(rf"[\s*\"'\[(]*({lab_alt})[\s*\"'\])]*[.):]?(?:\s+.*)?", text, re.DOTALL | re.IGNORECASE)
    if bare and (len(text) <= 3 or re.match(rf"[\s*\"'\[(]*({lab_alt})[\s*\"'\])]*[.):]", text, re.IGNORECASE)):
        return hit(bare)
    # 2. explicit statement
    stated = re.search(
        rf"\b(?:answer|option|choice)\s*(?:is|:|would be|=)?\s*[:\-]?\s*[*\"'(\[]*({lab_alt})\b(?![a-z])",
        text,
        re.IGNORECASE,
    )
    if stated and (stated.group(1).isupper() or len(stated.group(1)) > 1):
        return hit(stated)
    # 3. option text
    norm = normalize_answer(text)
    norm_texts = [normalize_answer(t) for t in texts]
    for lab, nt in zip(labels, norm_texts):
        if nt and norm == nt:
            return lab
    found = [lab for lab, nt in zip(labels, norm_texts) if nt and _contains_words(norm, nt)]
    # Drop options whose text is contained in another found option's text ("Mars" in "Mars rover").
    found = [
        lab for lab in found
        if not any(o != lab and norm_texts[labels.index(lab)] in norm_texts[labels.index(o)] for o in found)
    ]
    if len(found) == 1:
        return found[0]
    # 4. a single upper-case label standing alone somewhere ("I'd go with C.")
    lone = {m.group(1) for m in re.finditer(rf"(?<![A-Za-z])({lab_alt})(?![A-Za-z])", text) if m.group(1).isupper()}
    lone.discard("I")  # the pronoun, not option I
    if len(lone) == 1:
        return lab_of.get(lone.pop().upper())
    return None
