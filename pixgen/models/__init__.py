"""Model families; each module registers its models on import."""
