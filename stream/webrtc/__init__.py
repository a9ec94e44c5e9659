"""WebRTC voice calls: the calls service (the agent's engines and call places), one aiortc peer, RTP reordering, Opus packets."""
