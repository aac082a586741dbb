"""Short-answer correctness: answer normalisation and gold-alias matching.

The paper labels a TriviaQA response correct when a normalised gold alias is a substring of the
normalised response (the paper (arXiv 2512.01797) §2.5). The matcher keeps those semantics but fixes
the known pitfalls: aliases must match whole words, number/date formats and word order do not
matter, and an alias the model merely copies from the question does not count.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence


_PUNCT_TABLE = str.maketrans({c: " " for c in string.punctuation + "‘’´`"})
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(s: str) -> str:
    """Normalise text exactly like the official rule judge (the paper (arXiv 2512.01797) §2.5).

    Lower-case, ``_`` → space, every character of ``string.punctuation + "‘’´`"`` → space,
    drop the words a/an/the, collapse whitespace. Punctuation becomes a space (not deleted), so
    "O'Neill" → "o neill" on both sides of a comparison.
    """
    s = s.lower().replace("_", " ").translate(_PUNCT_TABLE)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def _contains_words(haystack: str, needle: str) -> bool:
    """Whole-word substring test: ``needle`` is not glued to a letter or digit on either side.

    Symbols the normaliser keeps (e.g. "£" in "£500") count as boundaries, so "500" matches.
    """
    return re.search(rf"(?<!\w){re.escape(needle)}(?!\w)", haystack) is not None


def _digit_groups_joined(s: str) -> str:
    """Join digit groups split by the normaliser ("10 000" → "10000"), so "10,000" matches "10000"."""
    return re.sub(r"(?<=\d) (?=\d{3}\b)", "", s)


_NUMBER_WORDS = {w: str(i) for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen twenty".split())}
_NUMBER_WORDS.update({"thirty": "30", "forty": "40", "fifty": "50", "sixty": "60", "seventy": "70",
                      "eighty": "80", "ninety": "90"})
_NUMBER_WORDS.update({w: str(i) for i, w in enumerate(
    "zeroth first second third fourth fifth sixth seventh eighth ninth tenth eleventh twelfth".split()) if i})
# Abbreviations that name the same thing as the word ("Sunshine Cab Co" = "Sunshine Cab Company").
_WORD_ABBREVIATIONS = {"co": "company", "corp": "corporation", "bros": "brothers", "mt": "mount", "jr": "junior"}
# Titles an alias may carry that a correct answer often leaves out ("Sir Thomas More", "Fr. Maximilian Kolbe").
_TITLES = frozenset("sir dame saint st fr father dr doctor lord lady king queen prince princess pope president "
                    "general captain mr mrs ms rev reverend".split())
_MONTH_ABBREVIATIONS = {"jan": "january", "feb": "february", "mar": "march", "apr": "april", "jun": "june",
                        "jul": "july", "aug": "august", "sep": "september", "sept": "september",
                        "oct": "october", "nov": "november", "dec": "december"}
# Words that join list items or name parts; ignored when comparing word order ("Sonny & Cher").
_CONNECTORS = frozenset({"and", "of", "or"})
# Words a bare sub-phrase answer must not consist of only.
_FUNCTION_WORDS = frozenset("a an the of and or in on at to for is was it its by with from as".split())


def answer_tokens(text: str) -> tuple[str, ...]:
    """The alias matcher's canonical tokens: :func:`normalize_answer`, then formats unified.

    Remaining symbols ("£", "–") become spaces, digit groups are joined ("10 000" → "10000"),
    ordinals lose their suffix ("6th" → "6"), number words up to twenty, the tens and the ordinal
    words to twelfth become digits ("three", "third" → "3"), month and a few word abbreviations are
    spelled out ("Dec" → "december", "Co" → "company") and leading zeros go ("06" → "6"), so
    "December 6th" and "6 Dec" compare equal as token sets.
    """
    s = _digit_groups_joined(re.sub(r"[^\w\s]|_", " ", normalize_answer(text)))
    out = []
    for t in s.split():
        t = re.sub(r"^(\d+)(?:st|nd|rd|th)$", r"\1", t)
        t = _NUMBER_WORDS.get(t) or _MONTH_ABBREVIATIONS.get(t) or _WORD_ABBREVIATIONS.get(t, t)
        out.append(re.sub(r"^0+(?=\d)", "", t))
    return tuple(out)


def _alias_forms(alias: str) -> set[tuple[str, ...]]:
    """An alias's token forms: as written, without parenthesised qualifiers ("Clue (board game)") and
    without a leading title when two or more words remain ("Sir Thomas More" → "Thomas More")."""
    forms = {answer_tokens(alias), answer_tokens(re.sub(r"\s*\([^)]*\)", " ", alias))}
    forms |= {f[1:] for f in forms if len(f) >= 3 and f[0] in _TITLES}
    return {f for f in forms if f}


def _one_edit(a: str, b: str) -> bool:
    """``a`` and ``b`` differ by one inserted, deleted or replaced letter ("More" / "Moore")."""
    if a == b or abs(len(a) - len(b)) > 1:
        return False
    if len(a) > len(b):
        a, b = b, a
    i = next((k for k in range(len(a)) if a[k] != b[k]), len(a))
    return a[i + (len(a) == len(b)):] == b[i + 1:]


def _has_near_run(tokens: Sequence[str], alias: Sequence[str], question: Sequence[str] = ()) -> bool:
    """A run of ``tokens`` is the alias written differently: spaces dropped or added ("silk moth" /
    "Silkmoth", joined text of 7+ letters), or, for an alias of two or more words, one word of 4+
    letters misspelled by one letter ("Thomas More" / "Thomas Moore"). A run the question already
    holds does not count ("Diane Keaton" for "Dianne Keaton" when the question names Diane Keaton).
    Two numbers are never joined: "1.2 volts" (tokens 1, 2, volts) is not "12 volts"."""
    joined = "".join(alias)
    joinable = len(joined) >= 7 and not _joins_digits(alias)
    for k in range(1, 4):
        for i in range(len(tokens) - k + 1):
            w = tokens[i:i + k]
            if ((k != len(alias) or len(alias) == 1) and joinable and "".join(w) == joined
                    and not _joins_digits(w) and not _has_run(question, w)):
                return True
    if len(alias) < 2:
        return False
    for i in range(len(tokens) - len(alias) + 1):
        w = tokens[i:i + len(alias)]
        diff = [(a, b) for a, b in zip(w, alias) if a != b]
        if (len(diff) == 1 and min(map(len, diff[0])) >= 4 and not diff[0][1].isdigit() and _one_edit(*diff[0])
                and not _has_run(question, w)):
            return True
    return False


def _joins_digits(words: Sequence[str]) -> bool:
    """Joining ``words`` would glue a digit to a digit ("1" "2" → "12"): a decimal point or a
    range the normaliser turned into a space, not a word written with a space."""
    return any(a[-1:].isdigit() and b[:1].isdigit() for a, b in zip(words, words[1:]))


def _has_run(tokens: Sequence[str], run: Sequence[str]) -> bool:
    """True when ``run`` occurs as consecutive tokens of ``tokens``."""
    k = len(run)
    return any(tuple(tokens[i:i + k]) == tuple(run) for i in range(len(tokens) - k + 1))


def _has_reordered_run(tokens: Sequence[str], alias: Sequence[str]) -> bool:
    """A window of ``tokens`` holds exactly the alias's content words in any order.

    Connectors (and/of/or) are ignored inside the window but may not start or end it, so
    "26 June 1945" matches "June 26, 1945" and "Sharks and Jets" matches "Jets and the Sharks";
    one-word aliases never match this way.
    """
    content = sorted(t for t in alias if t not in _CONNECTORS)
    if len(content) < 2 or not set(content) <= set(tokens):
        return False
    for k in range(len(content), 2 * len(content)):
        for i in range(len(tokens) - k + 1):
            w = tokens[i:i + k]
            if w[0] in _CONNECTORS or w[-1] in _CONNECTORS:
                continue
            if sorted(t for t in w if t not in _CONNECTORS) == content:
                return True
    return False


def _offered_in_question(question: str, alias: tuple[str, ...]) -> bool:
    """The question offers the alias as one option of a list ("Brussels; London; Zurich, or Oslo?").

    Then naming it answers the question; elsewhere an alias copied from the question does not.
    """
    if not re.search(r"\bor\b", question, re.IGNORECASE):
        return False
    for part in re.split(r"[,;:?]|\bor\b", question, flags=re.IGNORECASE):
        toks = answer_tokens(part)
        if toks and len(toks) >= len(alias) and toks[-len(alias):] == alias:
            return True
    return False


def match_alias(response: str, aliases: Sequence[str], question: str | None = None) -> str | None:
    """Return the gold alias (original string) the response gives, longest first, else ``None``.

    Compared as :func:`answer_tokens` (so punctuation, number/date formats and articles do not
    matter), an alias counts when, longest first:

    1. its tokens occur consecutively in the response (the paper's rule, on whole words);
    2. a window of the response holds its content words in another order ("26 June 1945"), or
       spells it with spaces dropped or added or one letter off (:func:`_has_near_run`);
    3. the whole response (at most four words, not only function words or digits, not copied
       from the question) is the end of the alias ("Plague" for "Bubonic plague") and every alias
       ending that way agrees on the missing words — "Bladder" for "Swim bladder" / "Gas
       bladder" is ambiguous and does not count.

    A short answer listing more items than a gold list ("q, w, x, y" for "Q, W and X") does not
    count; followers named for a one-word "-ism" alias do ("Sikhs" for "Sikhism").
    Aliases also count without a parenthesised qualifier ("Clue (board game)" → "Clue"). An alias
    occurring in ``question`` is ignored unless the question offers it as one of a list of options:
    a model restating the question ("Diane Keaton's real name is ...") has not answered it.
    Measured on the packaged TriviaQA judge-validation set (GPT-4o labels): see the judge card.
    """
    resp = answer_tokens(response)
    if not resp:
        return None
    q = answer_tokens(question) if question else ()
    forms = sorted(((f, a) for a in aliases for f in _alias_forms(a)), key=lambda t: -len(t[0]))
    usable = [(f, a) for f, a in forms
              if not (q and _echoes(q, f) and not _offered_in_question(question or "", f))]
    for f, alias in usable:
        if (_has_run(resp, f) or _has_reordered_run(resp, f) or _has_near_run(resp, f, q)) \
                and not _names_more_items(resp, f, alias):
            return alias
    followers = _ism_forms(resp)
    for f, alias in usable:
        if len(f) == 1 and f[0] in followers:
            return alias
    if len(resp) <= 4 and not all(t in _FUNCTION_WORDS or t.isdigit() for t in resp) and not _has_run(q, resp):
        ending = [(f, a) for f, a in usable if len(f) > len(resp) and f[-len(resp):] == resp]
        if len({f[:-len(resp)] for f, _ in ending}) == 1:
            return ending[0][1]
    return None


def _echoes(question: Sequence[str], form: Sequence[str]) -> bool:
    """The question already holds the alias: as a run, or every content word of it ("River of
    January" for "January River", "Rocco Francis Marchegiano" for "Rocco Marchegiano")."""
    content = [t for t in form if t not in _FUNCTION_WORDS]
    return _has_run(question, form) or (bool(content) and set(content) <= set(question))


def _names_more_items(resp: Sequence[str], form: Sequence[str], alias: str) -> bool:
    """A short answer lists more items than the gold list ("q, w, x, y" for "Q, W and X"): not correct."""
    if "," not in alias or "and" not in form:
        return False
    extra = [t for t in resp if t not in form and t not in _FUNCTION_WORDS]
    return len(resp) <= 2 * len(form) and bool(extra)


def _ism_forms(resp: Sequence[str]) -> set[str]:
    """A one- or two-word answer naming followers, as the "-ism" they follow ("Sikhs" → "sikhism",
    "Buddhists" → "buddhism"), so it matches a gold alias naming the faith or doctrine."""
    if not resp or len(resp) > 2 or len(resp[-1]) < 4:
        return set()
    t = resp[-1]
    stems = {t[:-1] if t.endswith("s") else t, t[:-4] if t.endswith("ists") else t[:-3] if t.endswith("ist") else ""}
    return {x + "ism" for x in stems if len(x) >= 3}


def rule_judge(response: str, aliases: Sequence[str], question: str | None = None) -> bool:
    """True when the response gives a gold alias (see :func:`match_alias`)."""
    return match_alias(response, aliases, question) is not None
