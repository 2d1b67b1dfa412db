"""The k3py server: API server, datastore, scheduler, controllers, auth and tunnel endpoint."""
