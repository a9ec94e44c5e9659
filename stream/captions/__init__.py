"""``/v1/captions``: the wire protocol (sans I/O) and the WebSocket endpoint."""
