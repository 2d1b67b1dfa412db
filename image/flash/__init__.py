"""``k3py flash``: write a board image to an SD card quickly, safely, verified and personalised.

The command reads a raw or compressed image as one stream (:mod:`.source`), writes only the
blocks its bmap lists (:mod:`.writer`), reads them back past the page cache to verify them,
refuses targets that are not safe to overwrite (:mod:`.target`), and writes the card's
``k3py.yaml`` into its FAT boot partition without mounting it (:mod:`.personalise`). The steps
are laid out in order in :mod:`.flashing`; :mod:`.cli` is the command-line edge.
"""
