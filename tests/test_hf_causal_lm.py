"""The chapter's Hugging Face section, offline: kd_lib losses and kd_lib.train on `transformers` causal LMs.

Skipped unless `transformers` is installed (it is not a requirement of the book). The models are
tiny GPT-2s built from a config, so nothing is downloaded; HF_HUB_OFFLINE (set before transformers
is imported) makes the chapter's hub branch fail fast and take its offline path, which this test
then runs cell for cell.
"""
import json
import os
from functools import partial
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # read when huggingface_hub is imported: never touch the network
transformers = pytest.importorskip("transformers")

import kd_lib  # noqa: E402
from kd_lib.gpt import HFCausalLM  # noqa: E402

CHAPTER = Path(__file__).resolve().parent.parent / "book" / "07_language_models.ipynb"



def tiny_gpt2(layers, vocab=50, seed=0):
    torch.manual_seed(seed)
    config = transformers.GPT2Config(vocab_size=vocab, n_positions=32, n_embd=32, n_layer=layers, n_head=2)
    return transformers.GPT2LMHeadModel(config)


def batch(vocab=50):
    tokens = torch.randint(3, vocab, (4, 12), generator=torch.Generator().manual_seed(0))
    tokens[1, 7:] = 0  # right padding
    tokens[3, 4:] = 0
    targets = tokens[:, 1:].masked_fill(tokens[:, 1:] == 0, -100)
    return tokens[:, :-1], targets


def test_adapter_returns_logits_and_losses_accept_them():
    teacher, student = HFCausalLM(tiny_gpt2(2)).eval(), HFCausalLM(tiny_gpt2(1, seed=1))
    inputs, targets = batch()
    logits = student(inputs)
    assert logits.shape == (4, 11, 50)
    with torch.no_grad():
        teacher_logits = teacher(inputs)
    loss = kd_lib.distillation_loss(logits, teacher_logits, targets, temperature=2.0, alpha=0.5)
    loss.backward()
    assert torch.isfinite(loss) and student.model.transformer.wte.weight.grad is not None
    with pytest.raises(ValueError, match="vocabulary size mismatch"):
        kd_lib.kd_loss(logits, HFCausalLM(tiny_gpt2(1, vocab=60))(inputs))


def test_kd_lib_train_distils_a_transformers_model():
    teacher, student = HFCausalLM(tiny_gpt2(2)), HFCausalLM(tiny_gpt2(1, seed=1))
    loss_fn = partial(kd_lib.distillation_loss, temperature=1.0, alpha=0.0, divergence=kd_lib.reverse_kl)
    config = kd_lib.TrainConfig(num_epochs=8, batch_size=2, grad_accum_steps=2, lr=5e-3, progress=False)
    history = kd_lib.train(student, batch(), teacher=teacher, loss_fn=loss_fn, config=config)
    assert history["train_loss"][-1] < 0.5 * history["train_loss"][0]


def test_the_chapter_cells_run_offline(capsys):
    cells = json.loads(CHAPTER.read_text())["cells"]
    start = next(i for i, c in enumerate(cells) if "## Real LLMs" in "".join(c["source"]))
    end = next(i for i, c in enumerate(cells) if i > start and c["cell_type"] == "markdown")
    hf_cells = ["".join(c["source"]) for c in cells[start:end] if c["cell_type"] == "code"]
    assert any("def hf_distill" in c for c in hf_cells) and any("find_spec" in c for c in hf_cells)
    from kd_lib.language import BOS, EOS, PAD, Grammar

    namespace = dict(kd_lib=kd_lib, torch=torch, partial=partial, HFCausalLM=HFCausalLM, grammar=Grammar(),
                     BOS=BOS, EOS=EOS, PAD=PAD)
    for cell in hf_cells:
        exec(compile(cell, str(CHAPTER), "exec"), namespace)
    out = capsys.readouterr().out
    assert "skipped" not in out and "vocabulary: teacher 104, student 104" in out
    history = namespace["hf_distill"](["once upon a time there was a fox named tom ."], steps=3)
    assert len(history) == 3 and all(torch.isfinite(torch.tensor(history["train_loss"])))
