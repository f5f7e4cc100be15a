"""examples/zero_shot_retrieval.py runs and ranks as the module does."""

import os
import re
import subprocess
import sys

from conftest import BUILD, CHECKPOINT, CONFIG, ROOT


def test_zero_shot_retrieval_example_runs():
    environment = dict(os.environ, PYTHONPATH=str(BUILD / "python"))
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "zero_shot_retrieval.py"), CONFIG, CHECKPOINT,
                           "--threads", "1", "--images", "2"], capture_output=True, text=True, env=environment)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "000000000790.jpg" and len(lines) == 2 * 4 + 1
    assert all(re.match(r"  [* ] -?\d\.\d{3}  \S", line) for line in lines[1:4])
    assert re.match(r"image->text R@1 \d+\.\d  R@5 \d+\.\d  text->image R@1 \d+\.\d  R@5 \d+\.\d  \(26 images, 130 "
                    r"captions\)", lines[-1])
