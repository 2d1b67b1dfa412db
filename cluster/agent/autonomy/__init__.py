"""Edge autonomy: what the node keeps locally so that it runs its pods without the server."""
