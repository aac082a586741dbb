"""The model side: architectures, loading, hooks, the decode loop and CETT features.

Everything here works on a loaded causal LM and knows nothing of datasets, judges or run
directories: :mod:`~hneurons.core.arch` finds the FFN down projections, :mod:`~hneurons.core.hooks`
reads and scales neurons, :mod:`~hneurons.core.generation` decodes, :mod:`~hneurons.core.features`
turns one forward pass into CETT features.
"""
