"""The L1 logistic probe: solver, scikit-learn estimator, C path and selection of the H-Neurons."""
