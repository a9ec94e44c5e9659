"""Streaming recognition policy, sans I/O: the stable prefix, one utterance's state and
the utterance scheduler that decides when to decode and what to emit."""
