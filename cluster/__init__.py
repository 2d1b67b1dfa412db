"""The firmware that runs on the boards: API object model, server, agent and the kernel checker.

``k3py.cluster.agent`` and ``k3py.cluster.server`` never import each other; they share only
``k3py.cluster.api``.
"""
