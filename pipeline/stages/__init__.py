"""Built-in stages: resampling, voice activity, streaming recognition."""
