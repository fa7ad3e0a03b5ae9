"""Helpers every layer may use: errors, atomic files, byte sizes, shapes, tolerances, model
names, tool versions. Imports nothing of the package outside `common`."""
