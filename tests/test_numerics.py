"""Portable numerics: a short training gives bit-identical results whatever kernels the CPU offers.

Another machine is simulated by restricting this one: each run is a fresh process started with
variables that cap the instruction set MKL, ATen or oneDNN may use, as on a CPU without
AVX-512. With `use_portable_numerics` the runs must agree to the last bit. Without it, the same
restrictions must change the results; otherwise this test could not tell the pin works.
"""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from kd_lib.lab.numerics import PORTABLE_ENV, portable_numerics_status, use_portable_numerics

ROOT = Path(__file__).resolve().parent.parent

WORKLOAD = textwrap.dedent("""
    import hashlib, json, os
    from kd_lib.lab.numerics import use_portable_numerics
    status = use_portable_numerics()  # a no-op with KD_BOOK_NUMERICS=native
    import torch
    import kd_lib
    from kd_lib.data import make_mnist1d
    from kd_lib.lm.gpt import GPT, GPTConfig
    from kd_lib.lm.language import Grammar, lm_data
    from kd_lib.models import CNN1D, CNN1DConfig
    from kd_lib.pretrained import load_pretrained

    torch.set_num_threads(1)
    digest, report = hashlib.sha256(), {}
    split = make_mnist1d(5000, seed=42)
    teacher = load_pretrained("mnist1d_cnn")
    with torch.no_grad():
        logits = teacher(split.x_test)
    report["teacher_loss"] = repr(float(torch.nn.functional.cross_entropy(logits, split.y_test)))
    digest.update(logits.numpy().tobytes())

    # a CNN distilled for 8 steps: convolutions forward and backward, Adam
    kd_lib.seed_everything(0)
    cnn = CNN1D(CNN1DConfig(channels=(8, 16, 16), hidden=32))
    config = kd_lib.TrainConfig(num_epochs=1, batch_size=128, lr=1e-2, device="cpu", progress=False)
    kd_lib.train(cnn, (split.x_train[:1024], None), teacher=teacher, config=config,
                 loss_fn=lambda s, t, _: kd_lib.kd_loss(s, t, temperature=4.0))
    # a tiny GPT trained for 8 steps: attention, layer norm, softmax, matrix products
    grammar = Grammar()
    tokens, targets = lm_data(grammar.sample(128, seed=0))
    kd_lib.seed_everything(0)
    gpt = GPT(GPTConfig(vocab_size=grammar.vocab_size, block_size=grammar.max_len,
                        n_layer=1, n_head=2, n_embd=32))
    kd_lib.train(gpt, (tokens, targets), config=kd_lib.TrainConfig(
        num_epochs=1, batch_size=16, lr=1e-2, device="cpu", progress=False))
    for model in (cnn, gpt):
        for tensor in model.state_dict().values():
            digest.update(tensor.numpy().tobytes())
    report["digest"] = digest.hexdigest()
    report["capability"] = torch.backends.cpu.get_cpu_capability()
    print(json.dumps(report))
""")

# What a CPU without AVX-512, or a user's own settings, would change. Each entry caps one library
# (MKL_ENABLE_INSTRUCTIONS caps MKL's dispatch, ONEDNN_MAX_CPU_ISA oneDNN's, ATEN_CPU_CAPABILITY
# ATen's), or all three at once, as on an AVX2-only machine.
RESTRICTIONS = {
    "this CPU's best": {},
    "MKL capped at AVX2": {"MKL_ENABLE_INSTRUCTIONS": "AVX2"},
    "oneDNN capped at AVX2": {"ONEDNN_MAX_CPU_ISA": "AVX2"},
    "ATen asked for avx2": {"ATEN_CPU_CAPABILITY": "avx2"},
    "ATen asked for its default kernels": {"ATEN_CPU_CAPABILITY": "default"},
    "an AVX2-only CPU": {"MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2",
                         "ATEN_CPU_CAPABILITY": "avx2"},
}


def _has_avx512() -> bool:
    try:
        return "avx512f" in Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False


if _has_avx512():
    RESTRICTIONS["AVX-512 asked for"] = {"MKL_ENABLE_INSTRUCTIONS": "AVX512", "ONEDNN_MAX_CPU_ISA": "AVX512_CORE",
                                         "ATEN_CPU_CAPABILITY": "avx512"}


def run_workload(variables: dict, native: bool = False) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in PORTABLE_ENV and k != "KD_BOOK_NUMERICS"}
    env.update(variables)
    if native:
        env["KD_BOOK_NUMERICS"] = "native"
    result = subprocess.run([sys.executable, "-c", WORKLOAD], capture_output=True, text=True, env=env, cwd=ROOT,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


pytestmark = pytest.mark.skipif(not portable_numerics_status().portable,
                                reason=f"nothing to pin on this machine: {portable_numerics_status()}")


@pytest.mark.slow
def test_short_training_is_bit_identical_under_every_restriction_when_pinned():
    runs = {name: run_workload(variables) for name, variables in RESTRICTIONS.items()}
    reference = runs["this CPU's best"]
    assert reference["capability"] == "AVX2"
    differing = {name: run["digest"][:12] for name, run in runs.items() if run["digest"] != reference["digest"]}
    assert not differing, f"pinned runs differ from the unrestricted one: {differing}"


@pytest.mark.slow
def test_without_the_pin_the_same_restrictions_change_the_results():
    """The control: the restrictions above do reach the kernels, so the pinned test can fail."""
    unpinned = {name: run_workload(RESTRICTIONS[name], native=True)
                for name in ("this CPU's best", "ATen asked for its default kernels", "an AVX2-only CPU")}
    digests = {run["digest"] for run in unpinned.values()}
    assert len(digests) > 1, f"no restriction changed anything without the pin: {unpinned}"


def test_pin_refuses_to_run_after_a_tensor_operation_chose_other_kernels():
    env = {k: v for k, v in os.environ.items() if k not in PORTABLE_ENV}
    env["ATEN_CPU_CAPABILITY"] = "default"  # what the first tensor operation will lock in
    code = ("import torch; torch.ones(2) * 2\n"
            "from kd_lib.lab.numerics import use_portable_numerics\n"
            "try:\n    use_portable_numerics()\nexcept RuntimeError as error:\n    print('RuntimeError:', error)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT)
    assert "RuntimeError: ATen already uses DEFAULT kernels" in result.stdout, result.stdout + result.stderr


def test_pin_is_in_force_in_this_test_session_and_can_be_repeated():
    assert all(os.environ[k] == v for k, v in PORTABLE_ENV.items())
    assert use_portable_numerics().portable  # a second call is harmless


def test_opting_out_reports_that_results_are_not_portable(monkeypatch):
    monkeypatch.setenv("KD_BOOK_NUMERICS", "native")
    status = portable_numerics_status()
    assert not status.portable and "native" in str(status)
