"""Sessions across a node and nodes: a session's log, the local and Redis buses, the node bus, viewers, subtitles."""
