"""Choosing bundles: predict what any grouping of models costs on a trace, from a few real ones."""
