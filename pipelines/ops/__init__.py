"""Pre- and post-processing ops, each written once and shared by every backend and pipeline."""
