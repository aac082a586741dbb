"""Where the question's own wording puts the answer: "… produced by which gland?" → "… by **the adrenal cortex**".

A question that ends in "<words> which/what <type>" asks for what follows those words; a response
that repeats them ("The hormone cortisol is produced by the adrenal cortex") puts its answer right
after them, wherever the sentence's subject or copula sits, which the copula rule of
:mod:`hneurons.text.phrase` cannot know. The frame is the two words before the wh-word, specific
enough ("minister of", "located near", "softening of") not to match an unrelated "of". Two more cues
of the same kind: a question asking for another name gets the bracketed name after a restated one
("Polyvinyl Chloride (PVC)"), and a clause that only restates the question gets the example it
introduces ("a variety of bodily fluids, including saliva"). Reads only the question and the
response, never a gold answer or a verdict, like the rest of the locator.
"""

from __future__ import annotations

import re
from collections.abc import Callable

# "<w1> <w2> which|what [type word]": the wh-word after at least two words, not opening the question
_FRAME = re.compile(r"(?:^|\s)([^\W\d_]+)\s+([^\W\d_]+)\s+(?:which|what)\b", re.IGNORECASE)
WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*", re.UNICODE)
"""A word, apostrophes inside it kept ("O'Neill", "it’s"); :mod:`hneurons.text.phrase` splits with it too."""
_DETERMINERS = frozenset("the a an his her their its".split())
# Words that end the completion: the sentence goes on after the answer ("France in May 2007",
# "the bones due to ...", "adrenal cortex, which ...").
_STOP_WORDS = frozenset(
    """in on at by for from to with into as and or but which who that whose where when while because
    due is was are were be been has have had it its this these those during after before since than
    located known called named""".split())
_NOT_NAMES = _DETERMINERS | _STOP_WORDS  # capitalised only because a sentence starts with them
MAX_COMPLETION_WORDS = 4


def _place_comma(between: str, before: str, after: str) -> bool:
    """", " between two capitalised words: a place and its country ("Vienna, Austria")."""
    return between.strip() == "," and before[0].isupper() and after[0].isupper()


def _name_of(words: list[re.Match[str]], i: int) -> bool:
    """"of" inside a capitalised name ("Bank of England"), not a following prepositional phrase."""
    return 0 < i < len(words) - 1 and words[i - 1].group(0)[0].isupper() and words[i + 1].group(0)[0].isupper()


def _completion(response: str, at: int, end: int) -> tuple[int, int] | None:
    """The phrase that starts at ``at``: at most four words, a leading article skipped, up to
    punctuation or a word that goes on with the sentence ("France in May 2007", "the bones due to")."""
    words = list(WORD.finditer(response, at, end))
    if not words or response[at:words[0].start()].strip():
        return None
    picked: list[re.Match[str]] = []
    for i, m in enumerate(words):
        w = m.group(0)
        between = response[picked[-1].end():m.start()] if picked else ""
        if picked and ((between.strip() and not _place_comma(between, picked[-1].group(0), w))
                       or len(picked) == MAX_COMPLETION_WORDS):
            break  # punctuation ends the completion, except in "Venice, Italy"
        if not picked and w.lower() in _DETERMINERS:
            continue
        if w.lower() in _STOP_WORDS or (w.lower() == "of" and not _name_of(words, i)):
            break
        if picked and w[0].islower() and w != "of" and picked[-1].group(0)[0].isupper():
            break  # a name ended: "the Bank of England signs them"
        picked.append(m)
    return (picked[0].start(), picked[-1].end()) if picked else None


# "How is polyvinyl chloride better known?" → "Polyvinyl Chloride (PVC)": the bracketed other name
_ASKS_OTHER_NAME = re.compile(r"\b(?:known|called|abbreviat\w*|acronym|short for|stands? for)\b", re.IGNORECASE)
_BRACKETED = re.compile(r"\(([^()\n]{1,40})\)")
# "secrete a variety of bodily fluids, including saliva": the example after a restated type
_EXAMPLE = re.compile(r",\s+(?:including|such as|especially|namely)\s+", re.IGNORECASE)


def frame_completion(question: str, response: str, start: int, end: int,
                     echo: Callable[[str], float]) -> tuple[int, int] | None:
    """Where the question's own wording places the answer in ``response[start:end]``, if it does.

    Three cues, in order: the words after the question's frame repeated in the response ("…
    produced by which gland?" → "produced by the adrenal cortex"); for a question asking for
    another name, a bracketed name after a restated one ("Polyvinyl Chloride (PVC)"); an example
    after a phrase that only restates the question ("a variety of bodily fluids, including saliva").
    ``echo`` gives the question-echo share of a text: a candidate that restates the question
    (share ≥ 0.6) is no answer, and the caller's other rules decide.
    """
    cues = (lambda: _after_frame(question, response, start, end),
            lambda: _other_name(question, response, start, end, echo),
            lambda: _example(question, response, start, end, echo))
    for cue in cues:  # in order, and only until one gives an answer: this runs for every response
        found = cue()
        if found is not None and echo(response[slice(*found)]) < 0.6:
            return found
    return None


def _after_frame(question: str, response: str, start: int, end: int) -> tuple[int, int] | None:
    frames = list(_FRAME.finditer(question))
    if not frames:
        return None
    w1, w2 = frames[-1].group(1), frames[-1].group(2)
    hit = re.compile(rf"\b{re.escape(w1)}\s+{re.escape(w2)}\s+", re.IGNORECASE).search(response, start, end)
    return _completion(response, hit.end(), end) if hit else None


def _other_name(question: str, response: str, start: int, end: int,
                echo: Callable[[str], float]) -> tuple[int, int] | None:
    if not _ASKS_OTHER_NAME.search(question):
        return None
    for m in _BRACKETED.finditer(response, start, end):
        if echo(response[max(start, m.start() - 40):m.start()]) >= 0.6:
            return _completion(response, m.start(1), m.end(1))
    return None


def _new_name(text: str, question: str) -> bool:
    """A capitalised word the question does not hold ("France hosts …, including many"): the clause
    already names an answer, and what it includes is no answer."""
    asked = question.lower()
    return any(w[0].isupper() and w.lower() not in asked and w.lower() not in _NOT_NAMES for w in WORD.findall(text))


def _example(question: str, response: str, start: int, end: int,
             echo: Callable[[str], float]) -> tuple[int, int] | None:
    m = _EXAMPLE.search(response, start, end)
    head = response[start:m.start()] if m else ""
    if m is None or echo(head) < 0.6 or _new_name(head, question):
        return None
    return _completion(response, m.end(), end)
