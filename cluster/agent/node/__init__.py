"""This node in the cluster: its identity (join and credentials), its Node object and Lease,
and what the machine offers (capacity, addresses, versions)."""
