"""The agent's end of the tunnel: one websocket to the server carrying logs and exec."""
