"""Kernel requirements as data (``requirements.toml``) and the generated config fragment.

This folder is the ``k3py.kernel_config`` package only so that the checker finds its data through
``importlib.resources``, on the build host and on the boards alike; it holds no code.
"""
