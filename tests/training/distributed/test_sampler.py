"""DistributedEpochSampler: the shards of an epoch partition its (seed, epoch) order (padded to a multiple of the
world size with the order's first indices, as torch's DistributedSampler pads), and a rank restarted at position
k of its shard continues exactly where it stopped. No process group needed: rank and world are given."""

from __future__ import annotations

import pytest
from torch.utils.data import DataLoader, Sampler, SequentialSampler

from polymodal.training.distributed import (
    DistributedEpochSampler,
    DistributedSetupError,
    distributed_train_loader,
    launched,
)
from polymodal.training.reproducibility import EpochShuffleSampler


@pytest.mark.parametrize("n,world", [(41, 2), (40, 2), (10, 3), (7, 4), (2, 3), (1, 2)])
@pytest.mark.parametrize("shuffle", [True, False])
def test_shards_cover_the_epoch_order_once_plus_padding(n, world, shuffle):
    shards = [list(DistributedEpochSampler(n, seed=5, shuffle=shuffle, rank=r, world_size=world)) for r in range(world)]
    per_rank = -(-n // world)
    assert all(len(shard) == per_rank for shard in shards)  # equal steps on every rank (DDP needs it)
    interleaved = [shards[i % world][i // world] for i in range(per_rank * world)]
    order = EpochShuffleSampler(n, seed=5, shuffle=shuffle).order(0)
    assert interleaved[:n] == order  # positions 0..n-1: the single-process order, each index once
    assert interleaved[n:] == (order * world)[: per_rank * world - n]  # the padding repeats the order's start


def test_epochs_differ_and_repeat_per_seed():
    sampler = DistributedEpochSampler(20, seed=1, rank=1, world_size=2)
    sampler.set_epoch(0)
    first = list(sampler)
    sampler.set_epoch(1)
    assert list(sampler) != first
    sampler.set_epoch(0)
    assert list(sampler) == first


@pytest.mark.parametrize("start", [0, 3, 9, 10])
def test_resume_mid_epoch_continues_the_shard(start):
    sampler = DistributedEpochSampler(19, seed=2, rank=1, world_size=2)
    sampler.set_epoch(4)
    full = list(sampler)
    sampler.set_epoch(4, start=start)
    assert list(sampler) == full[start:] and len(sampler) == len(full) - start
    with pytest.raises(ValueError, match="outside the epoch"):
        sampler.set_epoch(4, start=len(full) + 1)


def test_only_standard_loaders_are_sharded():
    data = list(range(9))
    loader, sampler = distributed_train_loader(DataLoader(data, batch_size=2, shuffle=True), seed=0)
    assert isinstance(sampler, DistributedEpochSampler) and sampler.shuffle and loader.batch_size == 2
    _, sampler = distributed_train_loader(DataLoader(data, batch_size=2, sampler=SequentialSampler(data)), seed=0)
    assert not sampler.shuffle

    class Custom(Sampler):
        def __iter__(self):
            return iter(range(9))

        def __len__(self):
            return 9

    with pytest.raises(DistributedSetupError, match="uses Custom, which cannot be sharded across ranks"):
        distributed_train_loader(DataLoader(data, batch_size=2, sampler=Custom()), seed=0)


@pytest.mark.parametrize("environ,expected", [({}, False), ({"WORLD_SIZE": "1"}, False), ({"WORLD_SIZE": "2"}, True),
                                              ({"WORLD_SIZE": "x"}, False)])
def test_launched(environ, expected):
    assert launched(environ) is expected
