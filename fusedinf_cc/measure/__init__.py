"""Measurements over the compiler and the runtime: `verify` (fused vs separate outputs), `bench`
(fresh processes, side by side), `simulate` (trace replay on the real loader), `plot`.

May import `compiler`, `runtime` and everything below them."""
