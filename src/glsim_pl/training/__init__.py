"""The Lightning system: the module, its optimiser and metrics, the DDP strategy, checkpoint I/O and the run guard."""
