"""The bootstrapped base image's tree, slimmed (images.slim_rootfs): what goes, what stays, and the
dpkg and apt settings that keep later installs in the images as small."""

from __future__ import annotations

import re
from pathlib import Path

from bottle_tui.backends.docker import images


def touch(root: Path, *paths: str) -> None:
    for rel in paths:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(rel)


def bootstrapped(root: Path) -> Path:
    touch(
        root,
        "usr/share/doc/bash/copyright",
        "usr/share/doc/bash/changelog.Debian.gz",
        "usr/share/doc/bash/examples/loadables/README",
        "usr/share/man/man1/bash.1.gz",
        "usr/share/info/bash.info.gz",
        "usr/share/locale/de/LC_MESSAGES/bash.mo",
        "usr/share/zoneinfo/UTC",
        "usr/bin/bash",
        "var/lib/apt/lists/deb.debian.org_debian_dists_bookworm_main_binary-amd64_Packages",
        "var/lib/apt/lists/lock",
        "var/cache/apt/archives/bash_5.2.15-2+b13_amd64.deb",
        "var/cache/apt/archives/lock",
        "var/cache/apt/pkgcache.bin",
        "var/cache/apt/srcpkgcache.bin",
        "var/log/dpkg.log",
        "var/log/apt/term.log",
        "var/lib/dpkg/status",
    )
    for folder in (
        "var/lib/apt/lists/partial",
        "var/cache/apt/archives/partial",
        "etc/dpkg/dpkg.cfg.d",
        "etc/apt/apt.conf.d",
    ):
        (root / folder).mkdir(parents=True, exist_ok=True)
    (root / "usr/share/doc/libc6").symlink_to("bash")  # packages of one source link their docs
    return root


def files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() or p.is_symlink()}


def test_docs_manuals_translations_package_lists_and_fetched_packages_go(tmp_path: Path) -> None:
    root = bootstrapped(tmp_path)
    images.slim_rootfs(root)
    left = files(root)
    assert "usr/share/doc/bash/copyright" in left  # each package's licence stays
    for gone in (
        "usr/share/doc/bash/changelog.Debian.gz",
        "usr/share/doc/bash/examples/loadables/README",
        "usr/share/doc/libc6",
        "usr/share/man/man1/bash.1.gz",
        "usr/share/info/bash.info.gz",
        "usr/share/locale/de/LC_MESSAGES/bash.mo",
        "var/lib/apt/lists/deb.debian.org_debian_dists_bookworm_main_binary-amd64_Packages",
        "var/cache/apt/archives/bash_5.2.15-2+b13_amd64.deb",
        "var/cache/apt/pkgcache.bin",
        "var/cache/apt/srcpkgcache.bin",
        "var/log/dpkg.log",
        "var/log/apt/term.log",
    ):
        assert gone not in left, gone
    # what the system needs stays, and so do the folders apt expects
    assert {"usr/bin/bash", "usr/share/zoneinfo/UTC", "var/lib/dpkg/status"} <= left
    assert {"var/lib/apt/lists/lock", "var/cache/apt/archives/lock"} <= left
    assert (root / "var/lib/apt/lists/partial").is_dir() and (root / "var/cache/apt/archives/partial").is_dir()
    assert (root / "var/log/apt").is_dir() and (root / "usr/share/man").is_dir()


def test_later_installs_are_kept_as_small(tmp_path: Path) -> None:
    root = bootstrapped(tmp_path)
    images.slim_rootfs(root)
    dpkg = (root / "etc/dpkg/dpkg.cfg.d/bottle-tui-slim").read_text().splitlines()
    assert "path-exclude /usr/share/doc/*" in dpkg and "path-include /usr/share/doc/*/copyright" in dpkg
    assert {"path-exclude /usr/share/man/*", "path-exclude /usr/share/locale/*"} <= set(dpkg)
    # an include must come after the exclude it narrows (dpkg applies them in order)
    assert dpkg.index("path-include /usr/share/doc/*/copyright") > dpkg.index("path-exclude /usr/share/doc/*")
    apt = (root / "etc/apt/apt.conf.d/bottle-tui-slim").read_text()
    assert 'APT::Install-Recommends "false";' in apt and 'Acquire::Languages "none";' in apt
    assert "rm -f /var/cache/apt/archives/*.deb" in apt


def test_the_sidecars_stages_built_beside_gitleaks_come_before_the_stage_that_copies_it() -> None:
    # The engine's builder stops at --target: the stages built meanwhile must not need the
    # prebuilt image, which exists only once its own build is done.
    sidecars = images.sources()["sidecars"]
    pre = images.prebuilt(sidecars)
    assert pre is not None and (pre.source.context / "Dockerfile").is_file()
    stages = re.findall(r"^FROM (\S+)(?: AS (\S+))?$", (sidecars.context / "Dockerfile").read_text(), re.M)
    assert [alias for _, alias in stages].index(pre.alongside) < [image for image, _ in stages].index(f"${{{pre.arg}}}")
    assert images.prebuilt(images.sources()["agent"]) is None
