"""Scripted speech for tests, benchmarks and the demo: Piper clips, scripted users and microphones, a Realtime talker.

The library (``pipeline``, ``models``, ``stream``) never imports this package
(``tests/test_lint.py`` checks it); of ``clients`` only the demo does, to say its question.
"""
