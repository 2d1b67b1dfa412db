"""The build host's side of over-the-air updates: signing keys and bundles (``k3py ota``).
Boards verify bundles with ``k3py.cluster.ota``."""
