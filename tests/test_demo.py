"""The demo command (fastconv.demo.main) in --quick mode: accuracy reported and reached,
both PNGs written; usage and missing-dependency exits."""
import re
import sys

import torch
from PIL import Image

from fastconv import demo


def test_quick_demo_writes_pngs_and_reaches_accuracy(tmp_path, capsys):
    out = tmp_path / "demo"
    threads = torch.get_num_threads()
    code = demo.main(["--quick", "--no-progress", "--threads", "1", "--out", str(out)])
    text = capsys.readouterr().out
    assert code == 0, text
    assert torch.get_num_threads() == threads
    accuracies = [float(a) for a in re.findall(r"LeNet-5: test accuracy ([\d.]+)%", text)]
    assert len(accuracies) == 2 and accuracies[0] >= 97.0
    assert re.search(r"training time torch.nn / fastconv: [\d.]+x", text)
    assert "max |diff| vs F.conv2d 0.0e+00" in text
    with Image.open(out / "cam.png") as im:
        assert im.format == "PNG" and im.mode == "RGB" and im.size == (10 * 112, 112)
    with Image.open(out / "edges.png") as im:
        assert im.format == "PNG" and im.mode == "L" and im.size == (512, 512)
        assert im.getextrema() == (0, 255)


def test_usage_exit_codes(capsys):
    assert demo.main(["--help"]) == 0
    assert "--no-progress" in capsys.readouterr().out
    assert demo.main(["--epochs", "0"]) == 2
    assert demo.main(["--no-such-option"]) == 2


def test_missing_dependency_message(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "sklearn", None)  # import sklearn now raises ImportError
    assert demo.main(["--out", str(tmp_path / "x")]) == 2
    assert "pip install scikit-learn scikit-image" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
