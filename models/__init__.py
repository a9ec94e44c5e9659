"""Model engines shared by every session of a process, and where their weights lie.

- ``registry``: packaged weights located without importing their packages;
- ``device``: CUDA when CTranslate2 sees a GPU, else CPU, with a compute type to match;
- ``vad``: Silero VAD (onnxruntime) streams and the ``SpeechSegmenter``;
- ``asr``: ``WhisperEngine``, CTranslate2 Whisper batched across sessions;
- ``word_timing``: word start/end times from the cross-attention alignment;
- ``llm``: ``LlamaEngine``, SmolLM2 on llama.cpp; ``tts``: ``PiperEngine``, streaming Piper;
- ``worker_pool``: the worker threads, bounded request queue and result streams engines share;
- ``batch_scheduler``: the sans-I/O earliest-deadline-first batcher engines use.

Import the submodule you need: this package imports nothing heavy by itself.
"""
