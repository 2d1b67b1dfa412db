"""Build-host tools of the repository: generators and checks. Never shipped, never imported by
the ``k3py`` package at run time."""
