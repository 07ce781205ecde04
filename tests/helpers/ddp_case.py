"""The data-parallel test's case: one distillation run, shared by 1 process and by torchrun.

    torchrun --nproc_per_node 2 tests/helpers/ddp_case.py OUT_DIR   # each rank: batch_size B
    (the test also imports `run` and calls it in one process with batch_size 2 B)

Token-level distillation of a tiny GPT with -100 padding that differs by rank on purpose: the
even rows (rank 0's shard) keep 2-4 real targets, the odd rows (rank 1's) 10-12. A mean of
per-rank means would weight rank 0's few tokens far more than a 1-process run does.
"""
import sys
from functools import partial
from pathlib import Path

from kd_lib.lab.numerics import use_portable_numerics

use_portable_numerics()

import torch  # noqa: E402

import kd_lib  # noqa: E402
from kd_lib import distributed  # noqa: E402
from kd_lib.lm.gpt import GPT, GPTConfig  # noqa: E402

VOCAB, LENGTH, ROWS = 23, 12, 22
# (micro-batch per rank, accumulation steps): the second has micro-batches where one rank owns no row
CASES = {"b3_accum2": (3, 2), "b1_accum3": (1, 3)}


def data():
    g = torch.Generator().manual_seed(5)
    inputs = torch.randint(1, VOCAB, (ROWS, LENGTH), generator=g)
    targets = torch.randint(0, VOCAB, (ROWS, LENGTH), generator=g)
    for row in range(ROWS):
        real = int(torch.randint(2, 5, (), generator=g)) if row % 2 == 0 else int(torch.randint(10, 13, (), generator=g))
        targets[row, real:] = -100
    return inputs, targets


def models():
    torch.manual_seed(0)
    teacher = GPT(GPTConfig(vocab_size=VOCAB, block_size=LENGTH, n_layer=1, n_head=2, n_embd=16, dropout=0.0))
    torch.manual_seed(1)
    student = GPT(GPTConfig(vocab_size=VOCAB, block_size=LENGTH, n_layer=1, n_head=2, n_embd=8, dropout=0.0))
    return teacher, student


LOSS = partial(kd_lib.distillation_loss, temperature=2.0, alpha=0.5)


def run(batch_size, accum, checkpoint_path=None):
    teacher, student = models()
    config = kd_lib.TrainConfig(num_epochs=3, batch_size=batch_size, grad_accum_steps=accum, lr=0.5, optimizer="sgd",
                                progress=False, checkpoint_path=checkpoint_path)
    history = kd_lib.train(student, data(), teacher=teacher, loss_fn=LOSS, config=config)
    return student, history


if __name__ == "__main__":
    out = Path(sys.argv[1])
    torch.set_num_threads(1)
    rank, world = distributed.init("gloo")
    for name, (batch_size, accum) in CASES.items():
        student, history = run(batch_size, accum, checkpoint_path=str(out / f"{name}.ckpt"))
        torch.save({"state": student.state_dict(), "loss": history["train_loss"]}, out / f"{name}_rank{rank}.pt")
