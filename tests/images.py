"""Docker images for the tests, made here (no registry is reachable): ``docker import``
of a rootfs built in memory from the host's static busybox.

- ``pachy-test/busybox:1``: busybox and its applets' symlinks in /bin, an /etc/passwd
  with root, nobody and ``fruit`` (uid 1234), /tmp. No Python.
- ``pachy-test/noshell:1``: one static binary, ``/bin/cp`` (busybox runs the applet its
  name says), and a dynamically linked one without its loader (``/bin/dyn``, the host's
  ``true``); nothing else: no shell, no passwd, no libc. Proves the agent needs nothing of
  the image.

Each is made once per engine and reused while it is there (``ensure_images``).
"""

from __future__ import annotations

import io
import subprocess
import tarfile
import time

BUSYBOX_IMAGE = "pachy-test/busybox:1"
NOSHELL_IMAGE = "pachy-test/noshell:1"
BUSYBOX = "/usr/bin/busybox"
REVISION = "2"  # bump when the rootfs changes: an image of another revision is made again

PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n" \
         "fruit:x:1234:1234:fruit:/home/fruit:/bin/sh\n"
GROUP = "root:x:0:\nnogroup:x:65534:\nfruit:x:1234:\n"


def _add(tar: tarfile.TarFile, name: str, data: bytes | None = None, mode: int = 0o644, link: str = "",
         kind: bytes = tarfile.REGTYPE) -> None:
    info = tarfile.TarInfo(name)
    info.mtime = int(time.time())
    info.mode = mode
    if link:
        info.type, info.linkname = tarfile.SYMTYPE, link
    elif kind == tarfile.DIRTYPE:
        info.type = tarfile.DIRTYPE
    else:
        info.size = len(data or b"")
    tar.addfile(info, io.BytesIO(data) if data is not None else None)


def busybox_rootfs() -> bytes:
    with open(BUSYBOX, "rb") as f:
        busybox = f.read()
    applets = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True, check=True).stdout.split()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for d, mode in (("bin", 0o755), ("etc", 0o755), ("tmp", 0o1777), ("root", 0o700), ("home", 0o755),
                        ("home/fruit", 0o755)):
            _add(tar, d, mode=mode, kind=tarfile.DIRTYPE)
        _add(tar, "bin/busybox", busybox, 0o755)
        for a in applets:
            if a != "busybox":
                _add(tar, f"bin/{a}", link="busybox")
        _add(tar, "etc/passwd", PASSWD.encode())
        _add(tar, "etc/group", GROUP.encode())
    return buf.getvalue()


def noshell_rootfs() -> bytes:
    with open(BUSYBOX, "rb") as f:
        busybox = f.read()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        _add(tar, "bin", mode=0o755, kind=tarfile.DIRTYPE)
        _add(tar, "bin/cp", busybox, 0o755)
        with open("/bin/true", "rb") as f:  # dynamically linked: its loader is not in the image
            _add(tar, "bin/dyn", f.read(), 0o755)
    return buf.getvalue()


def ensure_images(client) -> None:
    """Import the test images into the engine ``client`` talks to, if missing."""
    import docker.errors

    for image, make in ((BUSYBOX_IMAGE, busybox_rootfs), (NOSHELL_IMAGE, noshell_rootfs)):
        try:
            if (client.images.get(image).labels or {}).get("pachy.test.revision") == REVISION:
                continue
        except docker.errors.ImageNotFound:
            pass
        repo, _, tag = image.partition(":")
        client.api.import_image_from_data(make(), repository=repo, tag=tag,
                                          changes=[f"LABEL pachy.test.revision={REVISION}"])
        client.images.get(image)  # there now, or this raises
