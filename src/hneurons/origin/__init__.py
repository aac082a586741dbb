"""Origin of the H-Neurons: weights read layer by layer (:mod:`~hneurons.origin.weights`), parameter drift
(:mod:`~hneurons.origin.drift`), backward transfer of the probe (:mod:`~hneurons.origin.transfer`) and both
along training checkpoints (:mod:`~hneurons.origin.checkpoints`)."""
