"""Images on the node without a registry: the sandbox image and K3s-style air-gap tarballs."""
