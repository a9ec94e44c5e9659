"""Word timings from Whisper's cross-attention alignment (CTranslate2 ``align``).

The recogniser's tokens are split into words; each word's start and end come from the
dynamic-time-warping path CTranslate2 returns, its probability from the tokens'
probabilities. Punctuation joins the word it belongs to. The same approach as
faster-whisper's ``find_alignment``, written for sized (not 30 s) inputs and forced
decoder prefixes.
"""

from __future__ import annotations

import string
from typing import Any

import numpy as np

from voxline.words import Word

_ENCODER_FRAMES_PER_S = 50  # the encoder halves the 100 frames/s mel rate
_END_GUARD_S = 0.02  # one encoder frame
_PREPENDED = "\"'“¿([{-"
_APPENDED = "\"'.。,，!！?？:：”)]}、"


def words_from_alignment(
    tokenizer: Any, tokens: list[int], alignment: Any, n_prefix: int, audio_s: float
) -> tuple[Word, ...]:
    """Words after the first ``n_prefix`` tokens, with times (s) from the alignment.

    A word that begins inside the forced prefix belongs to the prefix and is left
    out, along with punctuation that attaches to it. Words aligned to start at the
    very end of the audio or later are dropped: nothing was heard there, and that
    is where a repetition loop puts what it invents.
    """
    pieces, piece_tokens = tokenizer.split_to_word_tokens([*tokens, tokenizer.eot])
    if len(piece_tokens) <= 1 or not alignment.alignments:
        return ()
    text_index = np.array([pair[0] for pair in alignment.alignments])
    time_index = np.array([pair[1] for pair in alignment.alignments])
    jumps = np.pad(np.diff(text_index), (1, 0), constant_values=1).astype(bool)
    jump_s = time_index[jumps] / _ENCODER_FRAMES_PER_S
    bounds = np.pad(np.cumsum([len(t) for t in piece_tokens[:-1]]), (1, 0))
    if len(jump_s) < bounds[-1] + 1:
        return ()
    probs = np.asarray(alignment.text_token_probs, dtype=np.float64)
    entries: list[list[Any]] = []  # [text, first token index, start, end, prob]
    for i, piece in enumerate(pieces[:-1]):
        lo, hi = int(bounds[i]), int(bounds[i + 1])
        prob = float(probs[lo:hi].mean()) if hi > lo and hi <= len(probs) else 0.0
        entries.append([piece, lo, float(jump_s[lo]), float(jump_s[hi]), prob])
    _merge_punctuation(entries)
    words: list[Word] = []
    last_end = 0.0
    for text, first_token, start_s, end_s, prob in entries:
        text = text.strip()
        if not text or first_token < n_prefix or all(c in string.punctuation for c in text):
            continue
        start_s = max(start_s, last_end)
        if start_s >= audio_s - _END_GUARD_S:
            break
        end_s = min(max(end_s, start_s), audio_s)
        last_end = end_s
        words.append(Word(text, round(start_s, 3), round(end_s, 3), round(prob, 4)))
    return tuple(words)



def _merge_punctuation(entries: list[list[Any]]) -> None:
    """Attach opening punctuation to the next word and closing punctuation to the previous.

    Each entry is ``[text, first_token, start_s, end_s, prob]``; merged-away entries
    are left with empty text. The merged word keeps the first token index of the
    word it joins, so a prefix word keeps its trailing punctuation out of the result.
    """
    i, j = len(entries) - 2, len(entries) - 1
    while i >= 0:
        previous, following = entries[i], entries[j]
        if (
            previous[0].startswith(" ")
            and previous[0].strip() in _PREPENDED
            and previous[0].strip()
        ):
            following[0] = previous[0] + following[0]
            following[1] = previous[1]
            following[2] = previous[2]
            previous[0] = ""
        else:
            j = i
        i -= 1
    i, j = 0, 1
    while j < len(entries):
        previous, following = entries[i], entries[j]
        if (
            previous[0]
            and not previous[0].endswith(" ")
            and following[0] in _APPENDED
            and following[0]
        ):
            previous[0] = previous[0] + following[0]
            following[0] = ""
        else:
            i = j
        j += 1
