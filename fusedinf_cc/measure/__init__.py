"""Measurements over the compiler and the runtime: `verify` (fused vs separate outputs), `bench`
(fresh processes, side by side), `simulate` (trace replay on the real loader, over the
`deployments` it builds), `plot`.

May import `workload`, `compiler`, `runtime` and everything below them."""
