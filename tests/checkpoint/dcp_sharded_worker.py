"""One rank of a 2-rank gloo save: a model under FSDP2 (``fully_shard``) and a legacy AdaptiveUPGD
state sharded like its parameters, saved with ``get_state_dict`` + ``dcp.save``.

Run as ``python dcp_sharded_worker.py RANK PORT FOLDER`` (tests/checkpoint/test_dcp_sharded.py).
"""
from __future__ import annotations

import sys
import warnings
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import get_state_dict
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import distribute_tensor

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ckpt_helpers import optim_state  # noqa: E402
from dcp_helpers import Legacy, Net  # noqa: E402

warnings.filterwarnings("ignore")


def main(rank: int, port: int, folder: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=2)
    try:
        mesh = init_device_mesh("cpu", (2,))
        model = fully_shard(Net(), mesh=mesh)
        sd = optim_state("adaptive_upgd_g1.pt")
        group = {k: v for k, v in sd["param_groups"][0].items() if k != "params"}
        opt = Legacy(model.parameters(), group)
        for p, pid in zip(model.parameters(), sd["param_groups"][0]["params"]):
            opt.state[p] = {k: distribute_tensor(v, mesh, p.placements)
                            if isinstance(v, torch.Tensor) else v
                            for k, v in sd["state"][pid].items()}
        msd, osd = get_state_dict(model, opt)
        dcp.save({"model": msd, "optim": osd}, checkpoint_id=folder)
        dist.barrier()  # neither rank tears gloo down while the other still talks to it
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
