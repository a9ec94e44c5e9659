"""``/v1/realtime``: the OpenAI-Realtime protocol: its audio, events, conversation, session and endpoint."""
