"""Clients of voxline: audio file and microphone sources, the caption client, the local runner."""
