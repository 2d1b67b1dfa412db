"""The firmware that runs on the boards: API object model, server, agent and the kernel checker.

``k3py.cluster.agent`` and ``k3py.cluster.server`` never import each other; they share only
``k3py.cluster.api``.
"""

# The folder is on sys.path wherever the repository root is (pytest, ``python -m`` from a
# checkout); loaded under a second name its modules would exist twice, with two sets of classes.
if __name__ != "k3py.cluster":
    raise ImportError(f"import k3py.cluster, not {__name__}: the folder is part of k3py")
