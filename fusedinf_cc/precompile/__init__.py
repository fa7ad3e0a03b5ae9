"""`bundle build`: a spec (`spec`, fusedinf.toml) becomes verified dist folders (`build`).

Sits on top of the compiler and `measure.verify`; writes what `artifacts` defines."""
