"""transformers: a Trainer run (``checkpoint-N/`` folders beside each other) saved with a legacy
optimizer migrates as a whole folder, and ``trainer.train(resume_from_checkpoint=...)`` resumes
from the ``-o`` copy and from the in-place folder with adaptive noise at the calibrated sigma.

The optimizer is handed over both ways a Trainer takes one: ``optimizers=(opt, sched)`` and
``optimizer_cls_and_kwargs``. The model is a one-layer GPT-2 built from a config (nothing
downloaded)."""
from __future__ import annotations

import shutil

import pytest
import torch
from runfolder_helpers import (LR, SIGMA_ABS, G1AdaptiveUPGD, Packaged, assert_resumed,
    expected_sigmas, is_g1, migrate_run)

pytestmark = pytest.mark.realworld

SAVE_STEPS, FIRST_STEPS, MORE_STEPS = 2, 4, 2
CHECKPOINT = f"checkpoint-{FIRST_STEPS}"


class Tokens(torch.utils.data.Dataset):
    """16 sequences of 8 tokens, fixed by the seed; the labels are the inputs (causal LM)."""

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(0)
        self.ids = torch.randint(0, 32, (16, 8), generator=g)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


def _model():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=32,
                                      n_positions=8, bos_token_id=0,
                                      eos_token_id=0))


def _trainer(folder, max_steps: int, way: str, optimizer_class: type):
    from transformers import Trainer, TrainingArguments

    args = TrainingArguments(output_dir=str(folder), max_steps=max_steps, save_steps=SAVE_STEPS,
                             per_device_train_batch_size=4, learning_rate=LR,
                             lr_scheduler_type="constant", use_cpu=True, report_to=[],
                             logging_strategy="no", disable_tqdm=True, seed=0)
    model = _model()
    if way == "optimizers":
        optimizer = optimizer_class(model.parameters(), lr=LR, sigma=SIGMA_ABS)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
        return Trainer(model=model, args=args, train_dataset=Tokens(),
                       optimizers=(optimizer, schedule))
    # The Trainer builds it: its decay / no-decay parameter groups, our keyword arguments.
    return Trainer(model=model, args=args, train_dataset=Tokens(),
                   optimizer_cls_and_kwargs=(optimizer_class, {"lr": LR, "sigma": SIGMA_ABS}))


@pytest.mark.parametrize("way", ["optimizers", "optimizer_cls_and_kwargs"])
def test_trainer_resumes_from_the_migrated_run_folder(tmp_path, way):
    run, out = tmp_path / "run", tmp_path / "out"
    _trainer(run, FIRST_STEPS, way, G1AdaptiveUPGD).train()
    # The layout the Trainer writes: one folder per save, the optimizer beside RNG states,
    # scheduler, arguments, weights and the trainer's own state.
    for n in (SAVE_STEPS, FIRST_STEPS):
        assert sorted(p.name for p in (run / f"checkpoint-{n}").iterdir()) == [
            "config.json", "generation_config.json", "model.safetensors", "optimizer.pt",
            "rng_state.pth", "scheduler.pt", "trainer_state.json", "training_args.bin"]
    saved = torch.load(run / CHECKPOINT / "optimizer.pt", weights_only=True)
    assert is_g1(saved) and len(saved["param_groups"]) == (1 if way == "optimizers" else 2)
    want = expected_sigmas(saved)

    migrate_run(run, out, {f"checkpoint-{n}/optimizer.pt" for n in (SAVE_STEPS, FIRST_STEPS)})

    for folder in (out, run):
        resumed = _trainer(tmp_path / f"resumed-{folder.name}", FIRST_STEPS + MORE_STEPS, way,
                           Packaged)
        resumed.train(resume_from_checkpoint=str(folder / CHECKPOINT))
        optimizer = resumed.optimizer.optimizer  # inside accelerate's wrapper
        assert type(optimizer) is Packaged
        assert resumed.state.global_step == FIRST_STEPS + MORE_STEPS
        assert_resumed(optimizer.param_groups, want)
        # The saved moments came back: every parameter has stepped on from the saved count.
        assert {s["step"] for s in optimizer.state.values()} == {FIRST_STEPS + MORE_STEPS}
        assert all(torch.isfinite(p).all() for p in resumed.model.parameters())
        shutil.rmtree(tmp_path / f"resumed-{folder.name}")
