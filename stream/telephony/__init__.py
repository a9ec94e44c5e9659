"""Phone calls: carriers' media-stream WebSockets (Twilio, Telnyx) into the voice agent.

``media_streams`` (the carriers' protocols, sans I/O), ``inbound_audio`` (the caller's
audio put in order), ``twilio_signature``, ``phone_call`` (one call: audio both ways,
marks, clear) and ``endpoints`` (the routes: auth, admission, start).
"""
