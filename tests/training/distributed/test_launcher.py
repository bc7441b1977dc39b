"""`polymodal train --nproc N`: the torchrun command it runs (every train argument but --nproc passed on), and its
refusals; rank 0 alone prints the run's summary."""

from __future__ import annotations

import sys

import pytest

from polymodal.cli import build_parser
from polymodal.cli.train import _train_args
from polymodal.training.launch import MultiProcessLaunchError, launch_rank, launch_torchrun, torchrun_command


def test_train_arguments_pass_through_without_nproc():
    args = build_parser().parse_args(["train", "r.yaml", "--set", "train.epochs=3", "--set", "data.limit=9",
                                      "--out", "runs/x", "--resume", "--nproc", "2"])
    assert args.nproc == 2
    assert _train_args(args) == ["r.yaml", "--set=train.epochs=3", "--set=data.limit=9", "--out=runs/x", "--resume"]
    command = torchrun_command(2, _train_args(args))
    assert command[:6] == [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m"]
    assert command[6:9] == ["polymodal", "train", "r.yaml"]


def test_nproc_is_refused_inside_a_launch_and_must_be_positive(monkeypatch):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "r.yaml", "--nproc", "0"])
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(MultiProcessLaunchError, match="drop --nproc when starting polymodal with torchrun yourself"):
        launch_torchrun(2, ["r.yaml"])


@pytest.mark.parametrize("environ,rank", [({}, 0), ({"RANK": "0"}, 0), ({"RANK": "3"}, 3), ({"RANK": "x"}, 0)])
def test_launch_rank(environ, rank):
    assert launch_rank(environ) == rank
