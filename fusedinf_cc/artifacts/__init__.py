"""What a build leaves on disk and every reader checks: the manifest beside an artifact, its
weight records, the digests its side file and parts are checked against (`integrity`), a dist
folder's index (`bundle.json`) and the archive that carries dist folders.

Imports only `common`: the runtimes and tools above read these formats without the compiler.
"""
