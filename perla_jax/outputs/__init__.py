"""What a run leaves on disk and how it is read back: run folders, checkpoints, loggers, analysis."""
