"""Board descriptions as data: one folder per board (``board.toml``, templates, README).

This folder is the ``k3py.board`` package only so that the image builder finds the boards through
``importlib.resources`` wherever k3py is installed; it holds no code, and boards never get it.
"""
