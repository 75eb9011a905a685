"""KKT-based reconstruction of training data from trained homogeneous ReLU networks."""
