"""kd_lib.train under torchrun: 2 CPU processes (gloo) against 1 process with the same global batch.

The case (tests/helpers/ddp_case.py) distils a tiny GPT with padding that differs by rank on
purpose. The 2-process weights must equal the 1-process ones within float tolerance, in a
case with micro-batches that one rank owns no row of, and rank 0 alone writes the checkpoint.
A control shows the test can fail: a mean of per-rank means gives a different gradient.
"""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import kd_lib

HERE = Path(__file__).resolve().parent
CASE = HERE / "helpers" / "ddp_case.py"
# float32 weights after 3 epochs of SGD (the all-reduce sums in another order: about 6e-8 here,
# where training moves weights by up to 0.18; Adam, which divides by sqrt(v), amplifies that
# rounding on near-zero gradients to about 1e-5, so the case uses SGD to test the weighting)
TOLERANCE = 1e-5


def load_case():
    spec = importlib.util.spec_from_file_location("ddp_case", CASE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(CASE), str(out)]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600, cwd=out)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out


@pytest.mark.slow
@pytest.mark.parametrize("name", ["b3_accum2", "b1_accum3"])
def test_two_processes_equal_one_process_with_the_same_global_batch(two_process_run, name):
    case = load_case()
    batch_size, accum = case.CASES[name]
    student, history = case.run(batch_size * 2, accum)  # one process, the same global batch
    ranks = [torch.load(two_process_run / f"{name}_rank{r}.pt") for r in (0, 1)]
    reference = student.state_dict()
    worst = max(float((ranks[0]["state"][k] - reference[k]).abs().max()) for k in reference)
    print(f"{name}: largest weight difference, 2 processes vs 1: {worst:.2e}")
    assert worst < TOLERANCE
    for k in reference:  # both ranks hold the same weights
        assert torch.equal(ranks[0]["state"][k], ranks[1]["state"][k])
    assert ranks[0]["loss"] == ranks[1]["loss"]
    torch.testing.assert_close(torch.tensor(ranks[0]["loss"]), torch.tensor(history["train_loss"]),
                               atol=1e-5, rtol=0)
    assert (two_process_run / f"{name}.ckpt").exists()  # written once, by rank 0


def test_some_micro_batch_leaves_a_rank_without_rows():
    """The b1_accum3 case exercises the empty-rank path (the zero loss that still syncs)."""
    case = load_case()
    generator = torch.Generator().manual_seed(0)
    rows = list(kd_lib.data.batches(case.ROWS, 2, generator=generator))
    owners = [set((idx % 2).tolist()) for idx in rows]
    assert any(len(o) == 1 for o in owners)


def test_a_mean_of_per_rank_means_would_differ_here():
    """The control: on this padding, per-rank means weight rank 0's few tokens more, so the
    gradient differs from the per-token mean by far more than the tolerance above."""
    case = load_case()
    teacher, student = case.models()
    inputs, targets = case.data()
    with torch.no_grad():
        teacher_logits = teacher(inputs)

    def gradient(loss):
        student.zero_grad()
        loss.backward()
        return torch.cat([p.grad.flatten() for p in student.parameters()])

    full = gradient(case.LOSS(student(inputs), teacher_logits, targets))
    per_rank = [case.LOSS(student(inputs[r::2]), teacher_logits[r::2], targets[r::2]) for r in (0, 1)]
    naive = gradient(0.5 * (per_rank[0] + per_rank[1]))
    assert float((full - naive).abs().max()) > 100 * TOLERANCE


def test_without_a_process_group_it_is_one_process():
    assert kd_lib.distributed.world() == (0, 1) and kd_lib.distributed.is_main()
    rows = torch.tensor([0, 1, 2, 3, 4, 5, 7])
    assert kd_lib.distributed.owned(rows, 1, 2).tolist() == [0, 1, 2, 3]  # global rows 1, 3, 5, 7
