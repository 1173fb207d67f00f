"""Evaluation: feature extractors, sample-quality metrics, likelihoods and reports."""
