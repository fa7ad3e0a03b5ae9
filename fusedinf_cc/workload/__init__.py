"""The workload: requests and traces, the functions they call, layouts of models into bundles,
routing a function's request onto bundles, and the replay loop that serves a trace.

`measure` replays on real bundles through the loader, `plan` on predicted sessions; both speak
this vocabulary. Imports `runtime` (its policies) and `common`, never the compiler.
"""
