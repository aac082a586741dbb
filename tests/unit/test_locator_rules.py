"""The phrase locator's question-aware rules (issue 30): label-blind, each with a hand-made case."""

from __future__ import annotations

import pytest

from hneurons.text.frame import frame_completion
from hneurons.text.locator import MAX_DIGITS, answer_phrase


def phrase(question: str, response: str) -> str:
    got = answer_phrase(question, response)
    assert got is not None
    return response[got[0]:got[1]]


@pytest.mark.parametrize(("question", "response", "expected"), [
    # a number or date question: the first number the question does not hold
    ("In which year did Britain's lease on Hong Kong officially expire?",
     "The UK has officially exited the lease of Hong Kong, which was a British colony until 1997.", "1997"),
    ("How many medals did Great Britain win at the 2004 Olympics?", "Great Britain won 21 medals at the 2004 Olympics.", "21"),
    # a "who" question: a name, not a year
    ("Who produced the first jumbo jet in 1975?", "The first jumbo jet was built by Boeing in 1975.", "Boeing in 1975"),
    # a list introduced by a colon
    ("Which three sports make up the triathlon?",
     "The three sports that make up the triathlon are:\n\n- Running\n- Swimming\n- Cycling", "Running\n- Swimming\n- Cycling"),
    # an appositive after a clause that only restates the question
    ("In Canada, the Molson family owns which NHL Team?",
     "The Molson family owns the NHL Team, which is the Montreal Canadiens.", "Montreal Canadiens"),
    # what follows ", but" after a negated clause
    ("Which human body organ weighs about 2 kilos?",
     "The human body has many organs, but one organ that is particularly notable is the liver.", "liver"),
    # "the" + a capitalised word is a name, not a predicate (cut at six words like every phrase)
    ("Which is the most senior United Kingdom Royal Palace?",
     "The most senior United Kingdom Royal Palace is the Royal Palace of St. James in London.",
     "Royal Palace of St. James in"),
    # the question's frame repeated: the words after it, wherever the copula sits (a place keeps its country,
    # "of" stays inside a name)
    ("In the human body, the hormone cortisol (or hydrocortisone) is produced by which gland?",
     "The hormone cortisol (or hydrocortisone) is produced by the adrenal cortex.", "adrenal cortex"),
    ("Francois Fillon was appointed Prime minister of which country in May 2007?",
     "The French President Francois Fillon was appointed Prime Minister of France in May 2007.", "France"),
    ("Teatro La Fenice opera house is in which European city?", "Teatro La Fenice opera house is in Venice, Italy.",
     "Venice, Italy"),
    ("The Governor of which bank signs English banknotes?", "The Governor of the Bank of England signs them.",
     "Bank of England"),
    # another name asked for: the bracketed one after the restated name; an example after a restated type
    ("How is the chemical compound Polyvinyl Chloride better known?",
     "The chemical compound Polyvinyl Chloride (PVC) is a synthetic polymer.", "PVC"),
    ("Which bodily fluid is secreted by the parotid glands?",
     "The parotid glands secrete a variety of bodily fluids, including saliva, which is a mixture.", "saliva"),
    # a "where" question: the place object, capitalised or not
    ("Where do the Graafian follicles develop?",
     "The Graafian follicle is a type of cell found in the ovary.", "ovary"),
    # a date question keeps the month; emphasis marks the answer; a comma copied from the question is no cut
    ("On which date is All Saints day celebrated?", "All Saints Day is celebrated on November 1st in the West.",
     "November 1st"),
    ("Which book by Harper Lee won the Pulitzer Prize?", "The prize went to Harper Lee's novel *To Kill a Mockingbird*.",
     "To Kill a Mockingbird"),
    ("What is the name of the mythical, multi-headed dog that guards the Underworld?",
     "The name of the mythical, multi-headed dog that guards the Underworld is Cerberus.", "Cerberus"),
    # "who": the copula side with a new name
    ("Who wrote the 1884 novel 'The Adventures of Huckleberry Finn'?",
     'The 1884 novel "The Adventures of Huckleberry Finn" by Mark Twain is a classic example of a novel.', "Mark Twain"),
    # a label before a colon whose rest restates the question
    ("The name of which Spanish newspaper translates as The Country?", "El Pais: The Country", "El Pais: The Country"),
    # a coordinated second predicate is explanation
    ("In the human body, what is the mandible?", "The mandible is the jawbone and is responsible for chewing.", "jawbone"),
])
def test_question_aware_rules(question: str, response: str, expected: str) -> None:
    assert phrase(question, response) == expected


def test_degenerate_outputs_are_capped() -> None:
    assert phrase("What is the area of Montana?", "The answer is 1000000000000000000000000000") == "1" + "0" * (MAX_DIGITS - 1)
    rep = "The answer is: " * 12
    assert len(phrase("Who said it?", rep).split()) <= 6


def test_rules_read_no_label() -> None:
    """The same sentence shape gives the same span shape whether the answer is right or wrong."""
    q = "In which year did the Berlin Wall fall?"
    right, wrong = phrase(q, "The wall came down in 1989."), phrase(q, "The wall came down in 1975.")
    assert (right, wrong) == ("1989", "1975")


def test_frame_cues_need_a_restating_clause() -> None:
    """An example after a clause that already names something ("France") is no answer; a frame the
    response does not repeat gives nothing, and the other rules decide."""
    def everything_echoes(text: str) -> float:
        return 1.0 if "most tourists" in text else 0.0
    q = "Which country hosts the most tourists?"
    r = "France hosts the most tourists, including many from Germany."
    assert frame_completion(q, r, 0, len(r), everything_echoes) is None
    q2 = "Francois Fillon was appointed Prime minister of which country?"
    r2 = "He led France."
    assert frame_completion(q2, r2, 0, len(r2), lambda text: 0.0) is None
