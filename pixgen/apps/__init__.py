"""Applications built on trained models: one function per task, one CLI command each."""
