"""docs/chat-api.md describes the pipeline's stages as chat/pipeline.py defines them."""

from __future__ import annotations

import re

from chat.pipeline import STAGES
from tests.servers import ROOT

ROW = re.compile(r"^\| (\w+) \| ([\d.]+) s \| .* \| `(\w+)`", re.MULTILINE)


def test_the_stage_table_matches_the_stages():
    text = (ROOT / "docs" / "chat-api.md").read_text()
    documented = [(name, float(timeout), flag) for name, timeout, flag in ROW.findall(text)]
    assert documented == [(stage.name, stage.timeout, stage.flag) for stage in STAGES]
