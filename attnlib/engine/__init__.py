"""Running experiments: the trainer, the run store, the one run executor, the study base and the notebook
sweep."""
