"""2 processes (gloo, CPU) × their shards == 1 process × the concatenated batch, for clip and siglip.

Each rank projects its shard with the same projection weights, computes the loss with gathered embeddings,
backpropagates, and averages gradients over ranks as DDP does. Loss (averaged over ranks) and the gradients
of both projections and of the logit scale / bias must equal the single-process values (tolerance 1e-5).
Rank shards have different sizes (3 and 5 rows) to exercise the padded gather.
"""

import os
import socket
import tempfile

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from polymodal.objectives import clip_loss, siglip_loss

SHARDS = (3, 5)
CASES = [("clip", False), ("clip", True), ("siglip", False), ("siglip", True), ("clip_groups", False),
         ("clip_groups", True)]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _data():
    gen = torch.Generator().manual_seed(0)
    n = sum(SHARDS)
    x_a, x_b = torch.randn(n, 6, generator=gen, dtype=torch.float64), torch.randn(n, 5, generator=gen, dtype=torch.float64)
    groups = torch.tensor([0, 1, 2, 0, 1, 3, 3, 2])
    return x_a, x_b, groups


def _loss_and_grads(case: str, local_loss: bool, x_a, x_b, groups):
    """Fresh parameters (same seed on every rank), loss on the given rows, gradients after backward."""
    torch.manual_seed(1)
    proj_a = torch.nn.Linear(6, 4, bias=False).double()
    proj_b = torch.nn.Linear(5, 4, bias=False).double()
    log_scale = torch.nn.Parameter(torch.tensor(2.0, dtype=torch.float64))
    bias = torch.nn.Parameter(torch.tensor(-1.5, dtype=torch.float64))
    emb_a, emb_b = F.normalize(proj_a(x_a), dim=-1), F.normalize(proj_b(x_b), dim=-1)
    if case == "siglip":
        loss = siglip_loss(emb_a, emb_b, log_scale.exp(), bias, local_loss=local_loss)
    else:
        loss = clip_loss(emb_a, emb_b, log_scale.exp(), local_loss=local_loss, label_smoothing=0.1,
                         group_ids=groups if case == "clip_groups" else None)
    params = {"proj_a": proj_a.weight, "proj_b": proj_b.weight, "log_scale": log_scale, "bias": bias}
    grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
    grads = {k: (torch.zeros_like(p) if g is None else g) for (k, p), g in zip(params.items(), grads)}
    return loss.detach(), grads


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        x_a, x_b, groups = _data()
        start = sum(SHARDS[:rank])
        rows = slice(start, start + SHARDS[rank])
        results = {}
        for case, local_loss in CASES:
            loss, grads = _loss_and_grads(case, local_loss, x_a[rows], x_b[rows], groups[rows])
            dist.all_reduce(loss)
            loss /= world  # what a logger averaging over ranks reports
            for grad in grads.values():  # DDP: average gradients over ranks
                dist.all_reduce(grad)
                grad /= world
            results[f"{case}/{local_loss}"] = (loss, grads)
        if rank == 0:
            torch.save(results, os.path.join(out_dir, "dist.pt"))
    finally:
        dist.destroy_process_group()


def test_two_processes_equal_one_process_on_the_concatenated_batch():
    with tempfile.TemporaryDirectory() as out_dir:
        mp.spawn(_worker, args=(2, _free_port(), out_dir), nprocs=2, join=True)
        results = torch.load(os.path.join(out_dir, "dist.pt"))
    x_a, x_b, groups = _data()
    for case, local_loss in CASES:
        ref_loss, ref_grads = _loss_and_grads(case, local_loss, x_a, x_b, groups)
        loss, grads = results[f"{case}/{local_loss}"]
        label = f"{case} local_loss={local_loss}"
        assert torch.allclose(loss, ref_loss, atol=1e-5, rtol=0), f"{label}: loss {loss} vs {ref_loss}"
        for name, ref in ref_grads.items():
            assert torch.allclose(grads[name], ref, atol=1e-5, rtol=0), f"{label}: grad of {name} differs"
            if name.startswith("proj"):
                assert ref.abs().max() > 1e-4, f"{label}: reference gradient of {name} is trivially zero"
