"""The outside world as frames: HTTP/WebSocket server, wire protocols, metrics."""
