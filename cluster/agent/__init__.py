"""The k3py agent: node registration, pod sync, runtime, network, proxy, tunnel client, OTA."""
