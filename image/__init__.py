"""The build host's pipeline: packages, rootfs, kernel, initramfs, ELF audit, disk image, flash.

It may read ``k3py.cluster``'s packaging metadata but never imports its runtime.
"""

# The folder is on sys.path wherever the repository root is (pytest, ``python -m`` from a
# checkout); loaded under a second name its modules would exist twice, with two sets of classes.
if __name__ != "k3py.image":
    raise ImportError(f"import k3py.image, not {__name__}: the folder is part of k3py")
