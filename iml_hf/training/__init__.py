"""Training: the multi-stage run (pipeline), its Trainer, run folder, trackers, branches and Hub push."""
