"""Tasks: what a model computes (detection, classification) and how its tensors are read."""
