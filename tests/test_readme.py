"""The README's usage is the spec: every ```python block in it runs as written, each in a fresh Python process
(a block cannot lean on what an earlier one imported or defined), so the examples cannot go stale."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_python_block_runs(index, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    # blocks write to relative paths such as data/ and outputs/: run them in an empty folder
    result = subprocess.run(
        [sys.executable, "-c", BLOCKS[index]], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, f"README.md python block {index}:\n{BLOCKS[index]}\n{result.stderr[-4000:]}"
