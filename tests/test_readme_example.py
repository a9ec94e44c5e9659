"""The README's user-written stage runs as printed and does what it says."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_stage_example() -> str:
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    return next(b for b in blocks if "class Redact(Stage)" in b)


def test_the_readme_stage_masks_its_words_in_the_captions_of_the_sample() -> None:
    result = subprocess.run(
        [sys.executable, "-c", readme_stage_example()], cwd=ROOT, capture_output=True, text=True, timeout=240
    )
    assert result.returncode == 0, result.stderr
    text = result.stdout.lower()
    assert "quick brown ***" in text and "lazy ***" in text
    assert "fox" not in text and "welcome" in text
