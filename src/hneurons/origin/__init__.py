"""Origin of the H-Neurons: parameter drift from the base model and backward transfer of the probe."""
