"""The service proxy (kube-proxy's job in the agent): Services and Endpoints become nftables rules.

:mod:`.model` reads Services and Endpoints into the few facts a rule needs, :mod:`.rules` turns
each service into its part of k3py's table (maps and verdict maps, as kube-proxy's nftables
mode), :mod:`.nft` applies a change as one ``nft -f`` transaction, and :mod:`.proxier` keeps the
table in step with the agent's cache of Services and Endpoints (:mod:`.source`). :mod:`.node`
assembles the cache, the proxier and the node-local DNS (:mod:`k3py.cluster.agent.dns`) for the
agent.
"""
