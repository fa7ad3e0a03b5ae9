"""Exports of built bundles to serving systems that are not fusedinf-cc's own loader."""
