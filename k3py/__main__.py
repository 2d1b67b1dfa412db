"""``python -m k3py`` is the ``k3py`` command."""

from k3py.cli import main

raise SystemExit(main())
