"""From a response to a label and an answer span: the one path every stage shares.

The responses stage (training labels, the paper arXiv 2512.01797 §2), the detect stage (held-out
sets, §5) and the origin stage (base-model answers, §7.1) all judge a response, locate its answer
tokens and hand a :class:`~hneurons.core.features.FeatureItem` to the CETT pass. They used to do
it in three loops that had started to drift; here it is once:

* :mod:`~hneurons.labelling.verdicts` — one response → :class:`~hneurons.labelling.verdicts.Verdict`;
* :mod:`~hneurons.labelling.items` — (question, response) → judged, located item and its row;
* :mod:`~hneurons.labelling.consistency` — K samples → one consistent label, the balanced split.
"""
