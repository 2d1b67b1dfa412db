"""The build host's pipeline: packages, rootfs, kernel, initramfs, ELF audit, disk image, flash.

It may read ``k3py.cluster``'s packaging metadata but never imports its runtime.
"""
