"""`bundle pack` / `bundle unpack`: a dist folder as one reproducible tar.gz, and back, safely.

Packing takes only what each `bundle.json` names (plus the manifests), in sorted order with
zeroed times and owners, so the same bundles give the same archive. Unpacking trusts nothing in
the archive: absolute paths, `..`, links and devices are refused, and so is any file that no
`bundle.json` in the archive names, or whose size differs from the one it records. Every bundle
lands in one staging folder and is checked against its sha256 before any is renamed into place:
an archive installs whole or not at all.
"""

from __future__ import annotations

import gzip
import os
import tarfile
import zlib
from pathlib import Path, PurePosixPath

import msgspec

from fusedinf_cc.artifacts.index import (
    INDEX,
    check_index,
    read_index,
    verify_bundle_dir,
    verify_dist,
)
from fusedinf_cc.common.errors import UserInputError
from fusedinf_cc.common.files import check_output_file, make_output_folder, staging_dir

_NAME_MAX = 255  # bytes in one file name on Linux file systems (ext4, xfs, tmpfs)


def pack(dist: Path, archive: Path) -> list[str]:
    """Write every bundle of `dist` to `archive` (.tar.gz); returns the member names."""
    if archive.resolve() == dist.resolve() or dist.resolve() in archive.resolve().parents:
        raise UserInputError(
            f"-o {archive} lies inside {dist}, the folder being packed; write it elsewhere"
        )
    check_output_file(archive)
    bundles, problems = verify_dist(dist)
    if problems:
        raise UserInputError(f"{dist}: not packing damaged bundles ({problems[0]})")
    members = []
    for bundle in bundles:
        index = read_index(dist / bundle)
        assert index is not None
        names = {INDEX, *index["files"], *(a["manifest"] for a in index["artifacts"])}
        members.extend(f"{bundle}/{name}" for name in sorted(names))
    with staging_dir(archive) as staging:
        staged = staging / archive.name
        with (
            open(staged, "wb") as raw,
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as zipped,
            tarfile.open(fileobj=zipped, mode="w", format=tarfile.PAX_FORMAT) as tar,
        ):
            for member in members:
                path = dist / member
                info = tarfile.TarInfo(member)
                info.size = path.stat().st_size
                info.mode = 0o644
                with open(path, "rb") as stream:
                    tar.addfile(info, stream)
        os.replace(staged, archive)
    return members


def unpack(archive: Path, dest: Path) -> list[str]:
    """Extract `archive` into `dest` after checking every member; returns the bundles."""
    try:
        tar = tarfile.open(archive, mode="r:gz")  # noqa: SIM115 - closed by `with tar` below
    except FileNotFoundError:
        raise UserInputError(f"{archive}: no such archive") from None
    except (tarfile.TarError, OSError) as error:
        raise UserInputError(f"{archive}: not a tar.gz archive ({error})") from None
    with tar:
        try:
            members = tar.getmembers()
        except (tarfile.TarError, EOFError, OSError) as error:
            raise UserInputError(f"{archive}: damaged archive ({error})") from None
        for member in members:
            _check_member(archive, member)
        allowed, sizes = _named_files(archive, tar, members)
        for member in members:
            if member.name not in allowed:
                raise UserInputError(
                    f"{archive}: {member.name!r} is not named by its bundle's {INDEX}; refusing "
                    "the archive"
                )
            expected = sizes.get(member.name)
            if expected is not None and member.size != expected:
                raise UserInputError(
                    f"{archive}: {member.name} holds {member.size} bytes, its {INDEX} says "
                    f"{expected}; refusing the archive"
                )
        make_output_folder(dest)
        bundles = sorted({PurePosixPath(m.name).parts[0] for m in members})
        for bundle in bundles:
            target = dest / bundle
            if target.exists():
                raise UserInputError(f"{target} exists; unpack into an empty folder")
        with staging_dir(dest / ".unpack") as staging:
            for member in members:
                bundle, name = PurePosixPath(member.name).parts
                (staging / bundle).mkdir(exist_ok=True)
                _extract(archive, tar, member, staging / bundle / name, dest)
            for bundle in bundles:
                problems = verify_bundle_dir(staging / bundle)
                if problems:
                    raise UserInputError(f"{archive}: {problems[0]}; nothing was installed")
            _install(staging, bundles, dest)
    return bundles


def _extract(
    archive: Path, tar: tarfile.TarFile, member: tarfile.TarInfo, target: Path, dest: Path
) -> None:
    """Stream one member to `target`, never more bytes than its header declares."""
    source = tar.extractfile(member)
    assert source is not None
    remaining = member.size
    try:
        with source, open(target, "wb") as out:
            while remaining > 0 and (chunk := source.read(min(remaining, 1 << 20))):
                out.write(chunk)
                remaining -= len(chunk)
    except (tarfile.TarError, EOFError, zlib.error) as error:
        raise UserInputError(f"{archive}: damaged archive at {member.name} ({error})") from None
    except OSError as error:
        raise UserInputError(
            f"-o {dest}: cannot write {member.name} there ({error.strerror}); nothing was installed"
        ) from None
    if remaining:
        raise UserInputError(f"{archive}: {member.name} ends early; nothing was installed")


def _install(staging: Path, bundles: list[str], dest: Path) -> None:
    """Rename every checked bundle into `dest`; if one cannot be, take back those already
    moved, so that the archive is installed whole or not at all."""
    moved: list[str] = []
    try:
        for bundle in bundles:
            os.chmod(staging / bundle, 0o755)
            os.replace(staging / bundle, dest / bundle)
            moved.append(bundle)
    except OSError as error:
        for bundle in moved:
            os.replace(dest / bundle, staging / bundle)
        raise UserInputError(
            f"-o {dest}: cannot install {bundle} ({error.strerror}); nothing was installed"
        ) from None


def _check_member(archive: Path, member: tarfile.TarInfo) -> None:
    path = PurePosixPath(member.name)
    if path.is_absolute() or member.name.startswith(("/", "\\")):
        raise UserInputError(f"{archive}: absolute path {member.name!r}; refusing the archive")
    if ".." in path.parts:
        raise UserInputError(f"{archive}: {member.name!r} climbs out with '..'; refusing it")
    if not member.isfile():
        kind = "link" if (member.issym() or member.islnk()) else "non-file entry"
        raise UserInputError(f"{archive}: {member.name!r} is a {kind}; refusing the archive")
    if len(path.parts) != 2:
        raise UserInputError(f"{archive}: {member.name!r} is not BUNDLE/FILE; refusing the archive")
    if any(len(part.encode()) > _NAME_MAX for part in path.parts):
        raise UserInputError(
            f"{archive}: a name in {member.name[:60]!r}... is longer than file systems allow "
            f"({_NAME_MAX} bytes); refusing the archive"
        )


def _named_files(
    archive: Path, tar: tarfile.TarFile, members: list[tarfile.TarInfo]
) -> tuple[set[str], dict[str, int]]:
    """Every member some bundle.json in the archive names (the indexes themselves included),
    and the sizes the indexes record (bundles built before sizes were recorded have none)."""
    allowed = set()
    sizes: dict[str, int] = {}
    for member in members:
        bundle, name = PurePosixPath(member.name).parts
        if name != INDEX:
            continue
        stream = tar.extractfile(member)
        assert stream is not None
        try:
            index = check_index(msgspec.json.decode(stream.read()), f"{archive}: {member.name}")
        except (msgspec.DecodeError, RecursionError) as error:
            raise UserInputError(
                f"{archive}: {member.name} is not a bundle index ({error})"
            ) from None
        named = {INDEX, *index["files"], *(a["manifest"] for a in index["artifacts"])}
        recorded = index.get("sizes", {})  # checked by the schema: names to byte counts
        if any("/" in name or name in ("", ".", "..") for name in named):
            raise UserInputError(f"{archive}: {member.name} names files outside its bundle")
        allowed.update(f"{bundle}/{name}" for name in named)
        sizes.update({f"{bundle}/{name}": size for name, size in recorded.items()})
    return allowed, sizes
