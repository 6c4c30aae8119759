"""Models, data loading from the store, kNN graphs, the training loop, Ray Train, metrics."""
