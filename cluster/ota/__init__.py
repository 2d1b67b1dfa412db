"""Over-the-air updates on the board: bundle verification, the block-hash index of system
bundles and the delta a board downloads. The build host writes bundles with ``k3py.image.ota``."""
