"""The repository root's pytest hook: its presence puts the root on ``sys.path`` (pytest's
``prepend`` import mode), so ``qemu-tests/`` imports the helpers it shares with ``tests/`` as
``tests.…`` even when run alone. ``k3py`` itself is always imported as installed; ``cluster`` and
``image`` refuse a second name (see their ``__init__``)."""
