"""Draw per-turn latency waterfalls (``turn_latency`` events) to a PNG with matplotlib.

One row per reply: a bar for each span of ``breakdown_ms`` (speech end → ASR final →
endpoint → LLM first token → TTS first audio → first audio out), laid end to end, so
the bar's right edge is the voice-to-voice latency and the colours show where it went.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

SPAN_COLOURS = {
    "asr_final": "#4c72b0",
    "endpoint": "#8172b2",
    "llm_first_token": "#dd8452",
    "tts_first_audio": "#55a868",
    "audio_out": "#c44e52",
}
SPAN_LABELS = {
    "asr_final": "ASR final",
    "endpoint": "end-of-turn wait",
    "llm_first_token": "LLM first token",
    "tts_first_audio": "TTS first audio",
    "audio_out": "playout",
}


def plot_waterfall(turns: Sequence[dict[str, Any]], path: str | Path, *, title: str = "voxline: voice-to-voice latency per turn") -> Path:
    """Write the waterfall of ``turns`` (``turn_latency`` events) to ``path`` (PNG); returns it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    fig, ax = plt.subplots(figsize=(8, 1.8 + 0.5 * max(1, len(turns))))
    labelled: set[str] = set()
    widest = 0.0
    for row, turn in enumerate(turns):
        left = 0.0
        for span, width in turn.get("breakdown_ms", {}).items():
            label = SPAN_LABELS.get(span, span) if span not in labelled else None
            labelled.add(span)
            ax.barh(row, width, left=left, color=SPAN_COLOURS.get(span, "#999999"), label=label, height=0.6)
            left += width
        widest = max(widest, left)
        v2v = turn.get("v2v_ms")
        if v2v is not None:
            ax.text(left + 5, row, f"{v2v:.0f} ms", va="center", fontsize=9)
    ax.set_yticks(range(len(turns)), [f"turn {t.get('reply', i + 1)}" for i, t in enumerate(turns)])
    ax.invert_yaxis()
    ax.set_xlabel("ms after the end of the user's speech")
    ax.set_title(title, fontsize=10)
    ax.set_xlim(0, max(widest, 1.0) * 1.15)  # room for the v2v labels
    if labelled:
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.3), fontsize=8, ncol=5, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
