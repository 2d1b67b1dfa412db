"""Node-local cluster DNS (CoreDNS's job in K3s, answered by the agent itself).

:mod:`.zone` answers the cluster's names (``<svc>.<ns>.svc.<domain>``, SRV, headless services,
reverse lookups, NXDOMAIN) from the agent's cache of Services and Endpoints, so names resolve
while the server is down; :mod:`.server` listens on UDP and TCP, forwards every other name to
the node's own resolvers with a small cache (:mod:`.forward`). The proxy delivers traffic for
the cluster DNS address (``10.43.0.10:53``) to this listener.
"""
