"""The pod network: addresses, the ``cni0`` bridge, flannel's backends and masquerade.

:mod:`.podnet` is the service the agent runs (it implements
:class:`k3py.cluster.agent.podsync.network.PodNetwork`); :mod:`.ipam`, :mod:`.bridge`,
:mod:`.backend` and :mod:`.nft` are its parts, :mod:`.kernel` the check made at start and
:mod:`.netlink` the lean access to pyroute2. ``--flannel-backend none`` uses none of them.
"""
