"""Launch checks: WORLD_SIZE > 1 without torchrun's rendezvous variables is refused at once by every training entry
point, before anything is written; paths with no distributed version refuse any multi-process launch; a single
process (no WORLD_SIZE, or WORLD_SIZE=1) trains as usual. Real multi-process training: tests/training/distributed/."""

from __future__ import annotations

import pytest
from run_fixtures import loaders, model, train_config

from polymodal.config import Config
from polymodal.errors import PolymodalError
from polymodal.pipeline import train
from polymodal.training import Trainer
from polymodal.training.distributed import DistributedSetupError
from polymodal.training.launch import MultiProcessLaunchError, refuse_multi_process_launch, world_size


@pytest.mark.parametrize("rank", ["0", "1", "3"])
def test_world_size_without_torchrun_rendezvous_is_refused_by_every_entry_point(tmp_path, monkeypatch, rank):
    """WORLD_SIZE > 1 without torchrun's MASTER_ADDR / MASTER_PORT / LOCAL_RANK cannot form one job: every entry
    point says so in one line, before anything is written (multi-process training itself: distributed/)."""
    for key in ("MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", rank)
    expected = r"WORLD_SIZE=4 but LOCAL_RANK, MASTER_ADDR, MASTER_PORT not set: start multi-process training with torchrun"
    with pytest.raises(DistributedSetupError, match=expected) as caught:
        Trainer(model(), train_config(), *loaders(), run_dir=tmp_path / "trainer")
    assert isinstance(caught.value, PolymodalError) and "\n" not in str(caught.value)
    with pytest.raises(DistributedSetupError, match=expected):
        train(Config(), run_dir=tmp_path / "pipeline")
    with pytest.raises(DistributedSetupError, match=expected):
        train(Config(task="alignment"), run_dir=tmp_path / "alignment")
    assert list(tmp_path.iterdir()) == []  # refused before any directory was made


def test_paths_without_a_distributed_version_still_refuse(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(MultiProcessLaunchError, match=r"polymodal demo was started by a multi-process launcher "
                                                      r"\(torchrun: WORLD_SIZE=2, this is rank 1\)"):
        refuse_multi_process_launch("polymodal demo")


@pytest.mark.parametrize("environ,size", [({}, 1), ({"WORLD_SIZE": "1"}, 1), ({"WORLD_SIZE": ""}, 1),
                                          ({"WORLD_SIZE": "x"}, 1), ({"WORLD_SIZE": "2"}, 2)])
def test_world_size_reading(environ, size):
    assert world_size(environ) == size
    if size == 1:
        refuse_multi_process_launch(environ=environ)  # no error


def test_single_process_under_torchrun_trains(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("RANK", "0")
    result = Trainer(model(), train_config(epochs=1), *loaders(), run_dir=tmp_path).fit()
    assert result["global_step"] == 5
