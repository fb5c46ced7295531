"""The README's Python runs as written.

Every ```python block of README.md is run, in order, as one script in a fresh interpreter (a reader
goes down the page: a later block uses the model the first one loaded). Nothing can be downloaded
where the tests run, so the names that stand for things a reader has are replaced, and only those:
each checkpoint id in ``STAND_INS`` becomes the shipped model (``framefusion/assets/model/``, a real
Qwen2-VL checkpoint folder), and ``clip.mp4`` the shipped video. A ``from_pretrained`` name
without a stand-in in ``STAND_INS`` fails the test: add one there when the README gains a checkpoint.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

from framefusion.tools.loading import SHIPPED_MODEL
from framefusion.tiny_models import demo_video_path

ROOT = Path(__file__).resolve().parent.parent
STAND_INS = {
    "Qwen/Qwen2.5-VL-7B-Instruct": str(SHIPPED_MODEL),
    "clip.mp4": str(demo_video_path()),
}
LOADED = re.compile(r"from_pretrained\(\s*[\"']([^\"']+)[\"']")  # the name a block loads


def readme_python() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", (ROOT / "README.md").read_text(), flags=re.S | re.M)


def with_stand_ins(code: str) -> str:
    for name, local in STAND_INS.items():
        code = code.replace(f'"{name}"', repr(local))
    return code


def test_readme_has_python_blocks_and_every_checkpoint_has_a_stand_in():
    blocks = readme_python()
    assert len(blocks) >= 2
    unknown = [m for b in blocks for m in LOADED.findall(with_stand_ins(b)) if not Path(m).is_dir()]
    assert not unknown, f"checkpoint ids without a stand-in in STAND_INS: {unknown}"


def test_readme_python_runs_as_written(tmp_path):
    script = tmp_path / "readme.py"
    script.write_text("\n\n".join(with_stand_ins(b) for b in readme_python()))
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", MPLBACKEND="Agg")
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    assert "achieved cost" in result.stdout  # the report's summary was printed
    assert (tmp_path / "outputs" / "compare" / "comparison.md").is_file()
