"""Feature, attention and scheme losses against independent references (loops in float64).

Each reference below is written from the paper's formula, element by element, without
kd_lib's code: values must agree, and so must gradients (autograd through the reference).
Causal attention and padding are checked by perturbing what must not matter.
"""
import math
from functools import partial

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kd_lib import (
    Cohort, Ensemble, ModelOutput, Tapped, attention_loss, attention_transfer_loss, cosine_hidden_loss,
    hidden_state_loss, hint_loss, minilm_loss, mutual_learning_loss,
)
from kd_lib.feature_losses import attention_map
from kd_lib.lm.gpt import GPT, GPTConfig, init_from_teacher
from kd_lib.models import MLP, MLPConfig

B, H, L = 3, 2, 5


def out(**features):
    logits = torch.zeros(B, L, 7)
    return ModelOutput(logits, features)


def grad_of(fn, x):
    x = x.detach().clone().requires_grad_(True)
    fn(x).backward()
    return x.grad


def padded_targets():
    y = torch.randint(0, 7, (B, L), generator=torch.Generator().manual_seed(0))
    y[0, 3:] = -100
    y[2, 1:] = -100
    return y


# ------------------------------------------------------------------ FitNets hint
def test_hint_loss_matches_half_mean_squared_distance_and_its_gradient():
    g = torch.Generator().manual_seed(1)
    u, w = torch.randn(4, 6, 3, generator=g), torch.randn(4, 6, 3, generator=g)
    ref = lambda u: 0.5 * sum(((u[n] - w[n].double()) ** 2).sum() for n in range(4)) / 4  # noqa: E731
    loss = lambda u: hint_loss(ModelOutput(u, {"a": u}), ModelOutput(w, {"b": w}), None,  # noqa: E731
                               student_layer="a", teacher_layer="b")
    assert loss(u).item() == pytest.approx(ref(u.double()).item(), rel=1e-6)
    torch.testing.assert_close(grad_of(loss, u), grad_of(lambda x: ref(x.double()), u).float())


def test_hint_loss_shape_error_names_the_projection_and_teacher_gets_no_gradient():
    u, w = torch.randn(4, 6), torch.randn(4, 8, requires_grad=True)
    with pytest.raises(ValueError, match="projection"):
        hint_loss(ModelOutput(u, {"a": u}), ModelOutput(w, {"b": w}), student_layer="a", teacher_layer="b")
    w2 = torch.randn(4, 6, requires_grad=True)
    hint_loss(ModelOutput(u, {"a": u.requires_grad_()}), ModelOutput(w2, {"b": w2}),
              student_layer="a", teacher_layer="b").backward()
    assert w2.grad is None


# ------------------------------------------------------------------ attention transfer
def reference_attention_map(a):  # a: [B, C, L] float64
    q = np.array([[sum(abs(a[n, c, i]) ** 2 for c in range(a.shape[1])) for i in range(a.shape[2])]
                  for n in range(a.shape[0])])
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def test_attention_map_and_transfer_loss_match_the_paper():
    g = torch.Generator().manual_seed(2)
    a_s, a_t = torch.randn(4, 3, 10, generator=g), torch.randn(4, 8, 10, generator=g)
    np.testing.assert_allclose(attention_map(a_s).numpy(), reference_attention_map(a_s.double().numpy()), rtol=1e-5)
    diff = reference_attention_map(a_s.double().numpy()) - reference_attention_map(a_t.double().numpy())
    expected = 1000 / 2 * np.mean(diff**2)
    got = attention_transfer_loss(ModelOutput(a_s, {"s": a_s}), ModelOutput(a_t, {"t": a_t}),
                                  layer_pairs=[("s", "t")])
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_attention_transfer_gradient_matches_a_float64_reference():
    g = torch.Generator().manual_seed(3)
    a_s, a_t = torch.randn(2, 3, 6, generator=g), torch.randn(2, 5, 6, generator=g)

    def ref(x):
        q_s = x.double().pow(2).sum(1)
        q_t = a_t.double().pow(2).sum(1)
        return 0.5 * 7.0 * ((q_s / q_s.norm(dim=1, keepdim=True) - q_t / q_t.norm(dim=1, keepdim=True))
                            .pow(2).mean())

    loss = lambda x: attention_transfer_loss(ModelOutput(x, {"s": x}), ModelOutput(a_t, {"t": a_t}),  # noqa: E731
                                             layer_pairs=[("s", "t")], beta=7.0)
    torch.testing.assert_close(grad_of(loss, a_s), grad_of(ref, a_s).float(), rtol=1e-4, atol=1e-6)


def test_attention_transfer_rejects_flat_features_and_spatial_mismatch_and_stays_finite_at_zero():
    flat = torch.randn(4, 16)
    with pytest.raises(ValueError, match="spatial"):
        attention_transfer_loss(ModelOutput(flat, {"s": flat}), ModelOutput(flat, {"t": torch.randn(4, 2, 8)}),
                                layer_pairs=[("s", "t")])
    with pytest.raises(ValueError, match="spatial size"):
        attention_transfer_loss(ModelOutput(flat, {"s": torch.randn(4, 2, 8)}),
                                ModelOutput(flat, {"t": torch.randn(4, 2, 4)}), layer_pairs=[("s", "t")])
    zero = torch.zeros(2, 3, 6, requires_grad=True)
    loss = attention_transfer_loss(ModelOutput(zero, {"s": zero}), ModelOutput(zero, {"t": torch.randn(2, 3, 6)}),
                                   layer_pairs=[("s", "t")])
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(zero.grad).all()


# ------------------------------------------------------------------ TinyBERT attention / hidden
def reference_attention_mse(a_s, a_t, kept):
    total, count = 0.0, 0
    for b in range(B):
        for h in range(H):
            for i in range(L):
                if not kept[b, i]:
                    continue
                for j in range(i + 1):  # causal: keys 0..i exist
                    total = total + (a_s[b, h, i, j] - a_t[b, h, i, j]) ** 2
                    count += 1
    return total / count


def test_attention_loss_matches_a_loop_over_existing_query_key_pairs():
    g = torch.Generator().manual_seed(4)
    s, t = torch.randn(B, H, L, L, generator=g), torch.randn(B, H, L, L, generator=g)
    y = padded_targets()
    got = attention_loss(out(**{"scores.0": s}), out(**{"scores.2": t}), y, layer_map=[(0, 2)])
    expected = reference_attention_mse(s.double(), t.double(), y != -100)
    assert got.item() == pytest.approx(float(expected), rel=1e-6)
    ref = lambda x: reference_attention_mse(x.double(), t.double(), y != -100)  # noqa: E731
    loss = lambda x: attention_loss(out(**{"scores.0": x}), out(**{"scores.2": t}), y, layer_map=[(0, 2)])  # noqa: E731
    torch.testing.assert_close(grad_of(loss, s), grad_of(ref, s).float())


def test_attention_loss_ignores_future_keys_padding_and_minus_infinity():
    g = torch.Generator().manual_seed(5)
    s, t = torch.randn(B, H, L, L, generator=g), torch.randn(B, H, L, L, generator=g)
    y = padded_targets()
    base = attention_loss(out(**{"scores.0": s}), out(**{"scores.0": t}), y, layer_map=[(0, 0)])
    future = torch.ones(L, L, dtype=torch.bool).triu(1)
    t2 = t.masked_fill(future, float("-inf"))
    s2 = s.masked_fill(future, float("-inf"))
    t2[0, :, 4] = 99.0  # a padded query of row 0
    got = attention_loss(out(**{"scores.0": s2}), out(**{"scores.0": t2}), y, layer_map=[(0, 0)])
    assert torch.isfinite(got) and got.item() == pytest.approx(base.item(), rel=1e-6)
    with pytest.raises(ValueError, match="heads"):
        attention_loss(out(**{"scores.0": s}), out(**{"scores.0": t[:, :1]}), layer_map=[(0, 0)])


def test_hidden_state_loss_is_mse_over_kept_positions():
    g = torch.Generator().manual_seed(6)
    h_s, h_t = torch.randn(B, L, 4, generator=g), torch.randn(B, L, 4, generator=g)
    y = padded_targets()
    kept = (y != -100).numpy()
    diffs = [((h_s[b, i] - h_t[b, i]).double() ** 2).mean().item() for b in range(B) for i in range(L) if kept[b, i]]
    got = hidden_state_loss(out(**{"hidden.1": h_s}), out(**{"hidden.3": h_t}), y, layer_map=[(1, 3)])
    assert got.item() == pytest.approx(np.mean(diffs), rel=1e-6)
    with pytest.raises(ValueError, match="project"):
        hidden_state_loss(out(**{"hidden.1": h_s}), out(**{"hidden.3": torch.randn(B, L, 6)}), layer_map=[(1, 3)])


# ------------------------------------------------------------------ MiniLM
def reference_minilm(a_s, a_t, v_s, v_t, kept):
    def kl(p, q):
        return sum(p[j] * (math.log(p[j]) - math.log(q[j])) for j in range(len(p)) if p[j] > 0)

    def relation(v, b, h, i):
        scores = [float(v[b, h, i] @ v[b, h, j]) / math.sqrt(v.shape[-1]) for j in range(i + 1)]
        top = max(scores)
        e = [math.exp(x - top) for x in scores]
        return [x / sum(e) for x in e]

    terms = []
    for b in range(B):
        for h in range(H):
            for i in range(L):
                if kept[b, i]:
                    at = kl([a_t[b, h, i, j] for j in range(i + 1)], [a_s[b, h, i, j] for j in range(i + 1)])
                    vr = kl(relation(v_t, b, h, i), relation(v_s, b, h, i))
                    terms.append(at + vr)
    return np.mean(terms)


def causal_softmax(x):
    return torch.softmax(x.masked_fill(torch.ones(L, L, dtype=torch.bool).triu(1), float("-inf")), -1)


def test_minilm_loss_matches_the_paper_with_causal_attention_and_padding():
    g = torch.Generator().manual_seed(7)
    a_s, a_t = causal_softmax(torch.randn(B, H, L, L, generator=g)), causal_softmax(torch.randn(B, H, L, L, generator=g))
    v_s, v_t = torch.randn(B, H, L, 3, generator=g), torch.randn(B, H, L, 5, generator=g)  # widths differ
    y = padded_targets()
    student = out(**{"attention.0": a_s, "values.0": v_s})
    teacher = out(**{"attention.2": a_t, "values.2": v_t})
    got = minilm_loss(student, teacher, y)
    expected = reference_minilm(a_s.double().numpy(), a_t.double().numpy(), v_s.double(), v_t.double(),
                                (y != -100).numpy())
    assert got.item() == pytest.approx(expected, rel=1e-5)
    assert minilm_loss(teacher, teacher, y, student_block=2).item() == pytest.approx(0.0, abs=1e-6)


def test_minilm_gradient_reaches_student_values_and_attention_only():
    g = torch.Generator().manual_seed(8)
    a_s = causal_softmax(torch.randn(B, H, L, L, generator=g)).requires_grad_()
    v_s = torch.randn(B, H, L, 3, generator=g, requires_grad=True)
    a_t = causal_softmax(torch.randn(B, H, L, L, generator=g)).requires_grad_()
    v_t = torch.randn(B, H, L, 3, generator=g, requires_grad=True)
    minilm_loss(out(**{"attention.0": a_s, "values.0": v_s}), out(**{"attention.0": a_t, "values.0": v_t})).backward()
    assert a_s.grad.abs().sum() > 0 and v_s.grad.abs().sum() > 0
    assert a_t.grad is None and v_t.grad is None


# ------------------------------------------------------------------ DistilBERT cosine
def test_cosine_hidden_loss_matches_one_minus_cosine_over_kept_positions():
    g = torch.Generator().manual_seed(9)
    h_s, h_t = torch.randn(B, L, 4, generator=g), torch.randn(B, L, 4, generator=g)
    y = padded_targets()
    kept = (y != -100).numpy()
    vals = [1 - float(h_s[b, i].double() @ h_t[b, i].double()) / (h_s[b, i].double().norm() * h_t[b, i].double().norm())
            for b in range(B) for i in range(L) if kept[b, i]]
    got = cosine_hidden_loss(out(**{"hidden.1": h_s}), out(**{"hidden.2": h_t}), y)
    assert got.item() == pytest.approx(float(np.mean(vals)), rel=1e-5)
    assert cosine_hidden_loss(out(**{"hidden.1": 3 * h_t}), out(**{"hidden.2": h_t})).item() == pytest.approx(0, abs=1e-6)


# ------------------------------------------------------------------ GPT internals and DistilBERT init
def tiny_gpt(seed=0, layers=3):
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=12, block_size=10, n_layer=layers, n_head=2, n_embd=8))


def test_gpt_internals_agree_with_the_fused_forward_and_are_causal():
    model = tiny_gpt()
    tokens = torch.randint(0, 12, (2, 7))
    internals = model.forward_internals(tokens)
    torch.testing.assert_close(internals.logits, model(tokens), rtol=1e-5, atol=1e-5)
    weights = internals.features["attention.1"]
    assert weights.shape == (2, 2, 7, 7)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 2, 7))
    assert weights.triu(1).abs().max() == 0
    assert set(f"hidden.{i}" for i in range(4)) <= set(internals.features)


def test_init_from_teacher_copies_the_chosen_blocks():
    teacher = tiny_gpt(layers=4)
    student = init_from_teacher(teacher, [0, 2])
    assert student.config.n_layer == 2
    assert torch.equal(student.blocks[1].qkv.weight, teacher.blocks[2].qkv.weight)
    assert torch.equal(student.tok_emb.weight, teacher.tok_emb.weight)
    tokens = torch.randint(0, 12, (2, 6))
    torch.testing.assert_close(init_from_teacher(teacher, [0, 1, 2, 3])(tokens), teacher(tokens))
    with pytest.raises(ValueError, match="blocks 0..3"):
        init_from_teacher(teacher, [4])


def test_tapped_records_named_layers_and_projects_them():
    torch.manual_seed(0)
    net = MLP(MLPConfig(hidden=(16,)))
    tapped = Tapped(net, {"body.1": nn.Linear(16, 5)})
    x = torch.randn(3, 40)
    output = tapped(x)
    assert output.features["body.1"].shape == (3, 5)
    assert torch.equal(output.logits, net(x))
    assert [name for name, _ in tapped.named_parameters()][-2:] == ["projections.body__1.weight",
                                                                   "projections.body__1.bias"]
    with pytest.raises(ValueError, match="no submodule"):
        Tapped(net, ["body.7"])
    with pytest.raises(ValueError, match="no internal"):
        Tapped(tiny_gpt(), ["attention.5"])(torch.randint(0, 12, (1, 4)))


# ------------------------------------------------------------------ schemes
def test_ensemble_averages_probabilities_or_logits_and_they_differ():
    torch.manual_seed(0)
    members = [MLP(MLPConfig(hidden=(8,))) for _ in range(3)]
    x = torch.randn(5, 40)
    zs = torch.stack([m(x) for m in members]).detach()
    for T in (1.0, 3.0):
        by_probs = Ensemble(members, "probabilities", temperature=T)(x)
        torch.testing.assert_close(torch.softmax(by_probs / T, -1), torch.softmax(zs / T, -1).mean(0))
    by_logits = Ensemble(members, "logits")(x)
    torch.testing.assert_close(by_logits, zs.mean(0))
    assert (torch.softmax(by_logits, -1) - torch.softmax(Ensemble(members)(x), -1)).abs().max() > 1e-3


def test_mutual_learning_loss_matches_the_dml_formula_per_student():
    g = torch.Generator().manual_seed(10)
    z = torch.randn(6, 3, 10, generator=g, requires_grad=True)  # [B, K, C]
    y = torch.randint(0, 10, (6,), generator=g)
    T = 2.0
    got = mutual_learning_loss(ModelOutput(z.mean(1), {"members": z}), None, y, temperature=T)

    def own_term(k, zk):
        p = lambda j: torch.softmax(z[:, j].detach().double() / T, -1)  # noqa: E731
        log_qk = torch.log_softmax(zk.double() / T, -1)
        kl = sum((p(j) * (torch.log(p(j)) - log_qk)).sum(-1).mean() for j in range(3) if j != k) / 2
        return F.cross_entropy(zk.double(), y) + T**2 * kl

    expected = sum(own_term(k, z[:, k]) for k in range(3))
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)
    got.backward()
    for k in range(3):
        zk = z[:, k].detach().clone().requires_grad_()
        own_term(k, zk).backward()
        torch.testing.assert_close(z.grad[:, k], zk.grad.float(), rtol=1e-4, atol=1e-6)


def test_cohort_output_and_errors():
    torch.manual_seed(0)
    cohort = Cohort([MLP(MLPConfig(hidden=(8,))) for _ in range(2)])
    output = cohort(torch.randn(4, 40))
    assert output.features["members"].shape == (4, 2, 10)
    with pytest.raises(ValueError, match="at least 2"):
        Cohort([MLP()])
    with pytest.raises(ValueError, match="Cohort"):
        mutual_learning_loss(torch.randn(4, 10), None, None)


# ------------------------------------------------------------------ gradients of the transformer losses
def test_transformer_loss_gradients_match_float64_references():
    g = torch.Generator().manual_seed(11)
    y = padded_targets()
    kept = (y != -100).double()
    exists = torch.ones(L, L, dtype=torch.bool).tril()
    h_s, h_t = torch.randn(B, L, 4, generator=g), torch.randn(B, L, 4, generator=g)

    def hidden_ref(x):
        per = ((x.double() - h_t.double()) ** 2).mean(-1)
        return (per * kept).sum() / kept.sum()

    def cosine_ref(x):
        cos = (x.double() * h_t.double()).sum(-1) / (x.double().norm(dim=-1) * h_t.double().norm(dim=-1))
        return ((1 - cos) * kept).sum() / kept.sum()

    hidden = lambda x: hidden_state_loss(out(**{"hidden.1": x}), out(**{"hidden.1": h_t}), y,  # noqa: E731
                                         layer_map=[(1, 1)])
    cosine = lambda x: cosine_hidden_loss(out(**{"hidden.1": x}), out(**{"hidden.1": h_t}), y)  # noqa: E731
    for loss, ref in ((hidden, hidden_ref), (cosine, cosine_ref)):
        assert loss(h_s).item() == pytest.approx(ref(h_s).item(), rel=1e-5)
        torch.testing.assert_close(grad_of(loss, h_s), grad_of(ref, h_s).float(), rtol=1e-4, atol=1e-6)

    scores_t = torch.randn(B, H, L, L, generator=g)
    a_t = causal_softmax(scores_t)
    v_s, v_t = torch.randn(B, H, L, 3, generator=g), torch.randn(B, H, L, 3, generator=g)

    def minilm_ref(scores):
        def log_rel(x):
            return torch.log_softmax(x.double().masked_fill(~exists, float("-inf")), -1)

        def kl(log_p, log_q):
            terms = torch.where(exists, log_p.exp() * (log_p - log_q), torch.zeros_like(log_p))
            return terms.sum(-1)

        per = kl(log_rel(scores_t), log_rel(scores))
        vr = lambda v: log_rel(v.double() @ v.double().transpose(-2, -1) / math.sqrt(3))  # noqa: E731
        per = per + kl(vr(v_t), vr(v_s))
        return (per * kept[:, None, :]).sum() / (kept.sum() * H)

    def minilm(scores):
        return minilm_loss(out(**{"attention.0": causal_softmax(scores), "values.0": v_s}),
                           out(**{"attention.0": a_t, "values.0": v_t}), y)

    scores_s = torch.randn(B, H, L, L, generator=g)
    assert minilm(scores_s).item() == pytest.approx(minilm_ref(scores_s).item(), rel=1e-5)
    torch.testing.assert_close(grad_of(minilm, scores_s), grad_of(minilm_ref, scores_s).float(),
                               rtol=1e-4, atol=1e-6)
