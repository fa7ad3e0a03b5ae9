"""Choosing bundles: predict what any layout of models costs on a trace, from a few real ones.

`planner` is the command's flow: `costs` (fitted on real bundles) -> `search` (layouts judged by
`predict`, the loader's ledger on predicted sessions) -> `spec_file` (a fusedinf.toml) ->
`report` (real replays of the plan, unfused and fused on the held-out trace)."""
