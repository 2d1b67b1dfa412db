"""Pod sync: converging the container runtime to the pods bound to this node (the kubelet's
core). :mod:`.loop` keeps one :mod:`.worker` per pod; :mod:`.spec`, :mod:`.volumes`,
:mod:`.probes`, :mod:`.backoff` and :mod:`.status` are the pieces a worker uses."""
