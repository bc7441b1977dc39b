"""Run reporting vs progress display: epoch summary lines print whatever train.progress says; in a file or pipe the
progress display is a few plain lines per epoch, never a carriage-return frame per step."""

from __future__ import annotations

import io
import re

from run_fixtures import loaders, model, train_config

from polymodal.training import Trainer
from polymodal.training.logging import PlainProgress, make_progress

SUMMARY = re.compile(r"^epoch (\d+)/3  train_loss \d+\.\d{4}  val_accuracy .* val_loss \d+\.\d{4}")


def test_progress_false_still_prints_one_summary_per_epoch(tmp_path, capsys):
    Trainer(model(), train_config(progress=False), *loaders(), run_dir=tmp_path).fit()
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert [int(SUMMARY.match(line).group(1)) for line in lines] == [1, 2, 3]
    assert captured.err == ""


def test_progress_in_a_file_is_a_few_plain_lines(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    # 80 rows / batch 4 = 20 steps per epoch; stderr is captured, so not a terminal (like `> log 2>&1`).
    Trainer(model(), train_config(progress=True), *loaders(train_size=80, batch_size=4), run_dir=tmp_path).fit()
    captured = capsys.readouterr()
    assert "\r" not in captured.err
    frames = captured.err.splitlines()
    assert len(frames) == 3 * 3  # 5, 10, 15 of 20 in each of 3 epochs; the summary line follows on stdout
    assert frames[0].startswith("epoch 1/3: 5/20 (") and "it/s)  loss " in frames[0]
    assert len([line for line in captured.out.splitlines() if SUMMARY.match(line)]) == 3


def test_plain_progress_every_quarter_never_the_last():
    stream = io.StringIO()
    bar = PlainProgress(total=10, desc="epoch 1/1", stream=stream)
    for _ in range(10):
        bar.update(1)
        bar.set_postfix(loss="0.5", refresh=False)
    bar.close()
    assert [line.split(" (")[0] for line in stream.getvalue().splitlines()] == [
        "epoch 1/1: 3/10", "epoch 1/1: 6/10", "epoch 1/1: 9/10"]
    assert PlainProgress(total=2, stream=stream).every == 1


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_make_progress_follows_the_stream_and_the_switches(monkeypatch):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    assert make_progress(10, "x", enabled=False) is None
    assert isinstance(make_progress(10, "x", stream=io.StringIO()), PlainProgress)
    bar = make_progress(10, "x", stream=Terminal())
    from tqdm import tqdm

    assert isinstance(bar, tqdm) and bar.mininterval >= 0.5
    bar.close()
    monkeypatch.setenv("TQDM_DISABLE", "1")
    assert make_progress(10, "x", stream=Terminal()) is None


def test_verbose_false_is_silent(tmp_path, capsys):
    Trainer(model(), train_config(epochs=1), *loaders(), run_dir=tmp_path, verbose=False).fit()
    assert capsys.readouterr().out == ""
