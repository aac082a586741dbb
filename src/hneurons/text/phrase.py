"""The ``phrase`` span method: the answer phrase of a response, found from the text alone.

First line, first sentence, explanation after the answer clause dropped, lead-ins ("The answer
is", "I think") dropped, a copula sentence reduced to the side that answers, then edge function
words, question-echo words, articles and punctuation trimmed. The question steers which kind of
phrase is wanted (a number for "when", a name for "who", a place for "where") but never a gold
answer or a verdict: the same rule runs for faithful and hallucinated responses (see
:mod:`hneurons.text.locator`).
"""

from __future__ import annotations

import re
import unicodedata

from hneurons.text.frame import WORD as _WORD
from hneurons.text.frame import frame_completion

# Words that never carry the answer on the edge of a phrase: articles, prepositions,
# auxiliaries, hedges and participles that link a subject to its answer ("located in", "known as").
_EDGE_WORDS = frozenset(
    """a an the in on at by of from to for with into onto as about around approximately roughly
    nearly almost over under exactly only just actually indeed definitely probably perhaps maybe
    possibly likely certainly called named known located situated found based born held set made
    is was are were be been being has have had do does did will would can could should may might
    must shall it its it's this that these those there here he she they his her their him them
    and or but so then also which who whom whose what when where why how i'm we you your my our
    answer correct yes no not think believe guess""".split()
)
_COPULA = re.compile(
    r"\s(?:is|was|are|were|has been|had been|have been|will be|would be|became|becomes|remains|"
    r"is called|was called|is named|was named|is known as|was known as|refers to|means)\s",
    re.IGNORECASE,
)
_LEADINS = [
    re.compile(p, re.IGNORECASE)
    for p in (
        r"^(?:the\s+)?(?:correct\s+|final\s+|short\s+|right\s+)?answer\s*(?:is|would be|:|-)\s*:?\s*",
        r"^(?:i\s+)?(?:think|believe|guess|suppose)\s+(?:that\s+)?",
        r"^(?:it|this|that|he|she|they)\s*(?:'s|’s|\s+is|\s+was|\s+were|\s+are|\s+would be|\s+must be|"
        r"\s+might be|\s+could be|\s+should be)\s+",
        r"^(?:probably|perhaps|maybe|possibly|likely|certainly|definitely|actually|well|so|yes|no|sure|"
        r"okay|ok)\b\s*[,:!]?\s*",
        r"^[^:\n]{1,40}:\s+(?=\S)",  # "Final answer: X", "Capital: X"
        r"^[^\W\d_]+(?:ed|en|wn|ght|t)\s+by\s+",  # "written by X", "painted by X", "built by X"
    )
]
_TRAILING = re.compile(r",\s+(?=[a-z])(?!(?:and|or)\s)|\s+\(|\s+[-–—]\s+|;|\s*\n"
                       r"|\s+and\s+(?:is|was|are|were|has|have|had)\s")
"""Explanation after the answer clause: ", which ...", ", of course", " (born ...)", " - a city", "; ...",
" and is responsible for ..." (a comma before a capitalised word or "and"/"or" is kept: "A, B, AB,
and O", "Paris, France")."""
# ", which is the Montreal Canadiens": an appositive naming what an echoing clause only described
_APPOSITIVE = re.compile(r",\s+(?:which|who)\s+(?:is|was|are|were)\s+(?:the\s+|a\s+|an\s+)?(?=[A-Z0-9])")
# Questions whose answer is a number or a date
_ASKS_NUMBER = re.compile(
    r"\b(?:what|which)\s+(?:year|decade|century|date)\b|\bwhen\b|\bhow\s+(?:many|much|long|old|far|tall|high|deep)\b",
    re.IGNORECASE)
_NUMBER = re.compile(r"[$£€]?\d[\d,.]*(?:st|nd|rd|th|s)?\b")
_MONTH = (r"(?:January|February|March|April|May|June|July|August|September|October|November|December|"
          r"Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sept?|Oct|Nov|Dec)\.?")
_WITH_MONTH = re.compile(rf"{_MONTH}\s+$|^\s*(?:of\s+)?{_MONTH}")
_ASKS_PERSON = re.compile(r"\bwho(?:se|m)?\b", re.IGNORECASE)
_ASKS_PLACE = re.compile(r"\bwhere\b", re.IGNORECASE)
_ASKS_NAME = re.compile(r"\bwho(?:se|m)?\b|\b(?:called|named|name)\b", re.IGNORECASE)
_PLACE_PREP = re.compile(r"\s(?:in|at|on|near|inside|within)\s+")
# "X is not Y, but rather Z" / "There are many organs, but one ... is the liver": the answer follows "but"
_BUT = re.compile(r",\s+but\s+(?:rather\s+|instead\s+)?", re.IGNORECASE)
_NEGATED = re.compile(r"\b(?:not|no|never|n't)\b", re.IGNORECASE)
# An introductory prepositional phrase ending at the first comma ("In 1066, ...", "According to X, ...")
_INTRO = re.compile(r"(?:in|at|on|during|after|before|since|according to|for|by)\s[^,]{1,40}$", re.IGNORECASE)
# A relative clause inside the chosen side ("a musical that features ...")
_RELATIVE = re.compile(r"\s+(?:but|which|who|that|whose)\s", re.IGNORECASE)
# A sentence end: [.!?] then space, unless the period ends an initial ("J. K.") or a known abbreviation.
_SENT_END = re.compile(r"(?<=[.!?])\s+")
_ABBREV = frozenset("mr mrs ms dr st jr sr mt ft vs etc no co inc ltd prof gen col lt sgt rev".split())
_EDGE_PUNCT = "\"'“”‘’`*_()[]{}<>«».,;:!?-–— \t"


def _is_filler_char(ch: str) -> bool:
    cat = unicodedata.category(ch)
    return ch.isspace() or (cat[0] in "PZS" and cat != "Sc")  # "£500" keeps its currency sign


def response_chars(response: str) -> tuple[int, int] | None:
    """The whole response minus leading/trailing whitespace and punctuation (``response`` method)."""
    keep = [i for i, ch in enumerate(response) if not _is_filler_char(ch)]
    return (keep[0], keep[-1] + 1) if keep else None


def _stem(word: str) -> str:
    w = word.lower().replace("’", "'")
    w = re.sub(r"'s$", "", w)
    for suf in ("ing", "ed", "es", "s", "d"):
        if len(w) > len(suf) + 3 and w.endswith(suf):
            return w[: -len(suf)][:6]
    return w[:6]


def _question_stems(question: str) -> set[str]:
    return {_stem(w) for w in _WORD.findall(question) if w.lower() not in _EDGE_WORDS}


def _first_sentence(text: str, start: int, end: int) -> int:
    """End index of the first sentence of ``text[start:end]`` (initials and abbreviations kept)."""
    for m in _SENT_END.finditer(text, start, end):
        before = text[start : m.start()]
        last = before.rstrip(".!?").split()[-1:] or [""]
        word = last[0].strip(_EDGE_PUNCT).lower()
        if before.endswith(".") and (len(word) <= 1 or word in _ABBREV or "." in word):
            continue  # "J. K. Rowling", "Dr. No", "U.S. Army"
        return m.start()
    return end


def _echo(text: str, stems: set[str]) -> float:
    words = [w for w in _WORD.findall(text) if w.lower() not in _EDGE_WORDS]
    if not words:
        return 1.0
    return sum(_stem(w) in stems for w in words) / len(words)


def _trim_edges(text: str, start: int, end: int, stems: set[str]) -> tuple[int, int]:
    """Drop edge words that are function words or echo the question, and edge punctuation."""
    words = list(_WORD.finditer(text, start, end))
    # Echo words are trimmed only from clause-like phrases: in a short answer such as
    # "Psalm 23" for "Which psalm ...?" the echoed word is part of the answer's name.
    # A name ("War of the Spanish Succession", "Civil Service Sports Ground") keeps its words even
    # when the question uses them: every content word capitalised (or a number) means a name.
    content = [m.group(0) for m in words if m.group(0).lower() not in _EDGE_WORDS]
    is_name = bool(content) and all(w[0].isupper() or w[0].isdigit() for w in content)
    echo = len(words) >= 4 and not is_name

    def droppable(m: re.Match[str]) -> bool:
        return echo and _stem(m.group(0)) in stems

    def function_word(m: re.Match[str]) -> bool:
        return m.group(0).lower().replace("’", "'") in _EDGE_WORDS and text[m.end() : m.end() + 1] != ","

    lo, hi = 0, len(words)
    while lo < hi and (function_word(words[lo]) or droppable(words[lo])):
        lo += 1
    while hi > lo and function_word(words[hi - 1]):
        hi -= 1
    if lo == hi:
        return start, start
    s, e = words[lo].start(), words[hi - 1].end()
    # a currency sign before a number belongs to the answer ("£500")
    while s > 0 and unicodedata.category(text[s - 1]) == "Sc":
        s -= 1
    return s, e


_PREP = re.compile(r"\s(?:in|at|by|for|of|from|to|on|with|as)\s+(?=(?:the\s+)?[$£€]?[A-Z0-9])")


def _last_named_object(text: str, start: int, end: int, person: bool = False) -> int:
    """Start of the last name/number a verb phrase leads to ("set up in Rotary City" → "Rotary City").

    Only for phrases that start with a lower-case word (a predicate, not a name; "the Royal Palace
    of St. James" is a name), so answers that are names with prepositions ("War of the Spanish
    Succession") stay whole. For a "who" question a number is no candidate ("built by Boeing in
    1975" → "Boeing").
    """
    words = [m.group(0) for m in _WORD.finditer(text, start, end)][:2]
    if not words or not words[0][0].islower():
        return start
    if words[0].lower() in ("the", "a", "an") and len(words) > 1 and words[1][0].isupper():
        return start
    at = start
    for m in _PREP.finditer(text, start, end):
        if not (person and text[m.end():m.end() + 1].isdigit()):
            at = m.end()
    return at


def _place_object(question: str, text: str, start: int, end: int) -> int:
    """For a "where" question, the start of the last "in/at/on ..." object of a predicate phrase,
    capitalised or not ("a type of cell found in the ovary" → "the ovary")."""
    first = _WORD.search(text, start, end)
    if not _ASKS_PLACE.search(question) or first is None or not first.group(0)[0].islower():
        return start
    last = None
    for last in _PLACE_PREP.finditer(text, start, end):
        pass
    return last.end() if last and _WORD.search(text, last.end(), end) else start


# A quoted title or name: “…”, "…", «…», or ‘…’/'…' opened after a space (not an apostrophe)
_QUOTED = re.compile(r"“([^”\n]+)”|\"([^\"\n]+)\"|«([^»\n]+)»|(?:(?<=\s)|^)[‘']([^’'\n]+)[’'](?=[\s.,;:!?)]|$)"
                     r"|\*\*([^*\n]+)\*\*|(?<![*\w])\*([^*\n]+)\*(?![*\w])")  # markdown emphasis marks it too


def _quoted_answer(text: str, start: int, end: int, stems: set[str]) -> tuple[int, int] | None:
    """The first quoted piece of ``text[start:end]`` that does not restate the question, if any.

    A model that quotes something in its answer sentence quotes the answer ("… Harper Lee's novel
    “To Kill a Mockingbird”"); a quoted piece that echoes the question ("The novel “The Adventures
    of Huckleberry Finn” was written by …") is the subject, not the answer, and is skipped.
    """
    for m in _QUOTED.finditer(text, start, end):
        g = next(i for i in range(1, 7) if m.group(i) is not None)
        s, e = m.span(g)
        if _WORD.search(text, s, e) and _echo(text[s:e], stems) < 0.5:
            return s, e
    return None


MAX_PHRASE_WORDS = 6
"""Longer phrases are rambling predicates, not answers; both classes are cut the same way."""


MAX_DIGITS = 10
"""A digit run longer than this ("1000000000000000000000000000") is a degenerate repetition, not a
number anyone answers with; the span keeps its first digits only."""
_LONG_DIGITS = re.compile(rf"\d{{{MAX_DIGITS + 1},}}")


def _cap_words(text: str, start: int, end: int) -> int:
    words = list(_WORD.finditer(text, start, end))
    if len(words) > MAX_PHRASE_WORDS:
        end = words[MAX_PHRASE_WORDS - 1].end()
    run = _LONG_DIGITS.search(text, start, end)
    return run.start() + MAX_DIGITS if run else end


def _list_after_colon(response: str, start: int, nl: int, end: int) -> tuple[int, int] | None:
    """"The three sports are:\n- Running\n- Swimming\n- Cycling": the listed lines (at most three)."""
    if nl < 0 or not response[start:nl].rstrip().endswith(":"):
        return None
    lines = [m for m in re.finditer(r"[^\n]+", response[nl:end]) if _WORD.search(m.group(0))][:3]
    if not lines:
        return None
    first = _WORD.search(response, nl + lines[0].start(), nl + lines[0].end())
    s, e = (first.start() if first else nl + lines[0].start()), nl + lines[-1].end()
    return s, _cap_words(response, s, e)


def _number_answer(question: str, response: str, start: int, end: int) -> tuple[int, int] | None:
    """For a question asking for a number or a date, the first number of the answer sentence that the
    question does not already hold ("... a British colony until 1997" → "1997")."""
    if not _ASKS_NUMBER.search(question):
        return None
    asked = set(_NUMBER.findall(question))
    for m in _NUMBER.finditer(response, start, end):
        token = m.group(0).rstrip(".,")
        if token and token not in asked:
            s, e = m.start(), m.start() + len(token)
            before = _WITH_MONTH.search(response[max(start, s - 12):s])  # "November 1st", "1st of November"
            after = _WITH_MONTH.match(response[e:min(end, e + 14)])
            s = s - len(before.group(0)) if before and before.group(0).endswith(" ") else s
            e = e + after.end() if after else e
            return s, _cap_words(response, s, e)
    return None


def _appositive(response: str, start: int, end: int, stems: set[str]) -> int | None:
    """Start of the clause that names the answer after one that does not: an appositive after a
    clause that only restates the question ("The Molson family owns the NHL Team, which is the
    Montreal Canadiens"), or what follows ", but" after a negated or echoing clause ("... is not a
    mythological creature, but rather a historical figure named Persephone")."""
    m = _APPOSITIVE.search(response, start, end)
    if m and _echo(response[start:m.start()], stems) >= 0.6 and _WORD.search(response, m.end(), end):
        return m.end()
    m = _BUT.search(response, start, end)
    if m and _WORD.search(response, m.end(), end):
        head = response[start:m.start()]
        if _NEGATED.search(head) or _echo(head, stems) >= 0.6:
            return m.end()
    return None


def _copied_from_question(question: str, response: str, at: int) -> bool:
    """The words around position ``at`` of the response are copied from the question ("the
    mythical, multi-headed dog" restated): a comma there is no end of the answer clause."""
    before = [w.lower() for w in _WORD.findall(response[max(0, at - 30):at])][-2:]
    after = [w.lower() for w in _WORD.findall(response[at:at + 30])][:2]
    q = " ".join(w.lower() for w in _WORD.findall(question))
    return len(before) == 2 and len(after) == 2 and " ".join(before + after) in q


def _answer_clause(question: str, response: str, start: int, end: int) -> tuple[int, int]:
    """The answer clause before any explanation (:data:`_TRAILING`), after an introductory phrase."""
    at = start
    while True:
        m = _TRAILING.search(response, at, end)
        if not (m and response[m.start()] == "," and _copied_from_question(question, response, m.start())):
            break
        at = m.end()
    if m and _INTRO.match(response, start, m.start()) and response[m.start()] == ",":
        start = m.end()  # "In humans, esotropia affects the eye": an introductory phrase, not the answer
        m = _TRAILING.search(response, start, end)
    if m and _WORD.search(response, start, m.start()):
        end = m.start()
    return start, end


def _label_then_echo(response: str, start: int, cut: int, end: int, stems: set[str]) -> bool:
    """"El País: The Country" for "Which newspaper translates as The Country?": what follows the
    colon restates the question, so the part before it is the answer and stays."""
    head = response[start:cut].rstrip()
    return head.endswith(":") and _echo(response[cut:end], stems) >= 0.6 and _echo(head, stems) < 0.5


def _names_something(text: str, stems: set[str]) -> bool:
    """The text holds a capitalised word the question does not (a name it could be answering with)."""
    words = list(_WORD.finditer(text))
    return any(m.group(0)[0].isupper() and _stem(m.group(0)) not in stems for m in words[1:] or words)


def _copula_side(question: str, response: str, left: tuple[int, int], right: tuple[int, int],
                 stems: set[str]) -> tuple[int, int]:
    """The side of a copula sentence that answers: the one that does not echo the question (ties →
    the predicate); for a question asking for a name (who, what ... called / named) the side with a
    new capitalised word when only that side has one ("... by Mark Twain is a classic example")."""
    if not _WORD.search(response, *right):
        return left if _WORD.search(response, *left) else right
    if _ASKS_NAME.search(question) and _WORD.search(response, *left):
        named_l, named_r = (_names_something(response[slice(*x)], stems) for x in (left, right))
        if named_l != named_r:
            return left if named_l else right
    return right if _echo(response[slice(*right)], stems) <= _echo(response[slice(*left)], stems) else left


def _strip_leadins(response: str, start: int, end: int, stems: set[str]) -> int:
    """Skip lead-ins, repeatedly ("I think the answer is: X"), while a word is left after them."""
    changed = True
    while changed:
        changed = False
        for pat in _LEADINS:
            m = pat.match(response[start:end])
            if m and m.end() and _WORD.search(response, start + m.end(), end) \
                    and not _label_then_echo(response, start, start + m.end(), end, stems):
                start += m.end()
                changed = True
    return start


def _copula_answer(question: str, response: str, span: tuple[int, int], stems: set[str]) -> tuple[int, int]:
    """In a copula sentence keep the side that does not echo the question (ties → the predicate).

    The last copula, so "The acid that is in rhubarb is called oxalic acid" splits at "called";
    a trailing relative clause ("..., which ...") is cut when words precede it.
    """
    start, end = span
    c = None
    for c in _COPULA.finditer(response, start, end):
        pass
    if c:
        start, end = _copula_side(question, response, (start, c.start()), (c.end(), end), stems)
        m = _RELATIVE.search(response, start, end)
        if m and _WORD.search(response, start, m.start()):
            end = m.start()
    return start, end


def answer_phrase(question: str, response: str) -> tuple[int, int] | None:
    """Character range ``[start, end)`` of the answer phrase in ``response`` (``phrase`` method).

    Reads only the question and the response, never a gold answer or a verdict. Returns ``None``
    only when the response has no word at all.
    """
    whole = response_chars(response)
    if whole is None:
        return None
    start, end = whole
    # first non-empty line, first sentence, then the answer clause before any explanation
    nl = response.find("\n", start, end)
    if nl >= 0:
        end = nl
    listed = _list_after_colon(response, start, nl, whole[1])
    if listed is not None:
        return listed
    end = _first_sentence(response, start, end)
    stems = _question_stems(question)
    found = (_number_answer(question, response, start, end)
             or frame_completion(question, response, start, end, lambda text: _echo(text, stems)))
    if found is not None:
        return found
    start = _appositive(response, start, end, stems) or start
    closing = len(response[end:]) - len(response[end:].lstrip("*\"”’'»"))  # a closing mark the filler trim cut off
    quoted = _quoted_answer(response, start, end + closing, stems)
    if quoted is not None:  # a title keeps its words ("To Kill a Mockingbird"); only edge punctuation goes
        inner = response_chars(response[quoted[0]:quoted[1]])
        if inner is not None:
            s, e = quoted[0] + inner[0], quoted[0] + inner[1]
            return s, _cap_words(response, s, e)
    start, end = _answer_clause(question, response, start, end)
    start = _strip_leadins(response, start, end, stems)
    start, end = _copula_answer(question, response, (start, end), stems)
    start = _last_named_object(response, start, end, bool(_ASKS_PERSON.search(question)))
    start = _place_object(question, response, start, end)
    s, e = _trim_edges(response, start, end, stems)
    if s < e:
        return s, _cap_words(response, s, e)
    # everything echoed the question: keep the clause without its edge function words, capped
    # like any phrase (a degenerate "The answer is: The answer is: ..." must not span 30 tokens)
    s, e = _trim_edges(response, start, end, set())
    s, e = (s, e) if s < e else whole
    return s, _cap_words(response, s, e)
