"""Sparse teacher targets (kd_lib.lm.sparse), ULD across tokenizers (kd_lib.lm.uld) and the
metrics that compare them with the truth (kd_lib.lm.metrics)."""
import pytest
import torch

import kd_lib
from kd_lib.lm.language import BOS, EOS, PAD, Grammar, lm_data
from kd_lib.lm.metrics import calibration_to_truth, kl_per_word, kl_to_truth, story_log_probs
from kd_lib.lm.sparse import SampledCache, SparseCachedTeacher, sample_cache, sparse_kd_loss, sparse_target
from kd_lib.lm.topk import TopKCache, expand_topk
from kd_lib.lm.uld import AlignedTeacher, first_piece_map, uld_distillation_loss, uld_loss, word_alignment

V = 30


class Fixed(torch.nn.Module):
    """A teacher that returns fixed logits per row (rows are told apart by their first token)."""

    def __init__(self, logits):
        super().__init__()
        self.logits = torch.nn.Parameter(logits, requires_grad=False)

    def forward(self, tokens):
        return self.logits[tokens[:, 0]]


def _case(k=4):
    generator = torch.Generator().manual_seed(0)
    student = torch.randn(4, 5, V, generator=generator, requires_grad=True)
    teacher = torch.randn(4, 5, V, generator=generator) * 2
    values, indices = torch.log_softmax(teacher, -1).topk(k, -1)
    targets = torch.randint(0, V, (4, 5), generator=generator)
    targets[0, :2] = -100
    return student, teacher, TopKCache(values.half(), indices.short(), V), targets


@pytest.mark.parametrize("tail,expand", [("none", "renormalize"), ("uniform", "uniform")])
def test_topk_targets_equal_the_expanded_cache(tail, expand):
    student, _, cache, targets = _case()
    sparse = sparse_kd_loss(student, sparse_target(cache, torch.arange(4), tail), targets)
    full = kd_lib.kd_loss(student, expand_topk(cache.values, cache.indices, V, expand), targets)
    torch.testing.assert_close(sparse, full, rtol=1e-5, atol=1e-6)
    grads = [torch.autograd.grad(loss, student)[0] for loss in (
        sparse_kd_loss(student, sparse_target(cache, torch.arange(4), tail), targets),
        kd_lib.kd_loss(student, expand_topk(cache.values, cache.indices, V, expand), targets))]
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-6)


def test_tail_bucket_is_the_kl_over_k_plus_one_categories():
    student, _, cache, targets = _case()
    loss = sparse_kd_loss(student, sparse_target(cache, torch.arange(4), "bucket"), targets)
    p = cache.values.float().exp()
    q = torch.softmax(student, -1).gather(-1, cache.indices.long())
    r, r_q = 1 - p.sum(-1), 1 - q.sum(-1)
    per_position = (p * (p.log() - q.log())).sum(-1) + r * (r.log() - r_q.log())
    torch.testing.assert_close(loss, per_position[targets != -100].mean(), rtol=1e-5, atol=1e-6)


def test_bucket_and_uniform_with_every_token_are_the_full_kl():
    student, teacher, _, _ = _case()
    values, indices = torch.log_softmax(teacher, -1).topk(V, -1)
    cache = TopKCache(values, indices, V)
    for tail in ("bucket", "uniform", "none"):
        loss = sparse_kd_loss(student, sparse_target(cache, torch.arange(4), tail))
        torch.testing.assert_close(loss, kd_lib.kd_loss(student, teacher), rtol=1e-5, atol=1e-6)


def test_sampled_target_is_unbiased():
    """The mean gradient over many independent caches approaches the full KL's gradient; the top-k
    renormalised gradient does not (its error is the same every time)."""
    student, teacher, cache, _ = _case(k=2)
    rows = torch.arange(4)[:, None].repeat(1, 5)
    exact = torch.autograd.grad(kd_lib.kd_loss(student, teacher), student)[0]
    mean = torch.zeros_like(exact)
    draws = 400
    fixed = Fixed(teacher)
    for seed in range(draws):
        sampled = sample_cache(fixed, rows, 4, seed=seed)
        mean += torch.autograd.grad(sparse_kd_loss(student, sparse_target(sampled, torch.arange(4))), student)[0]
    mean /= draws
    top = torch.autograd.grad(sparse_kd_loss(student, sparse_target(cache, torch.arange(4), "none")), student)[0]
    sampled_error, top_error = float((mean - exact).abs().max()), float((top - exact).abs().max())
    assert sampled_error < 0.25 * top_error, (sampled_error, top_error)
    assert sampled.nbytes == 4 * 5 * 4 * 2  # int16 ids only


def test_sparse_errors():
    student, _, cache, _ = _case()
    with pytest.raises(ValueError, match="tail"):
        sparse_target(cache, torch.arange(4), "flat")
    with pytest.raises(ValueError, match="tail='none'"):
        sparse_target(SampledCache(torch.zeros(4, 5, 3, dtype=torch.int16), V), torch.arange(4), "bucket")
    with pytest.raises(ValueError, match="SparseTarget"):
        sparse_kd_loss(student, torch.randn(4, 5, V))
    with pytest.raises(ValueError, match="vocabulary size mismatch"):
        sparse_kd_loss(student[..., :-1], sparse_target(cache, torch.arange(4)))
    with pytest.raises(ValueError, match="num_samples"):
        sample_cache(Fixed(torch.randn(4, 5, V)), torch.zeros(4, 5, dtype=torch.long), 0, seed=0)


def test_sparse_cached_teacher_trains_with_kd_lib_train():
    inputs = torch.arange(4)[:, None].repeat(1, 5)
    _, teacher, cache, targets = _case()
    student = torch.nn.Sequential(torch.nn.Embedding(V, 8), torch.nn.Linear(8, V))
    served = SparseCachedTeacher(inputs, cache, tail="bucket")
    config = kd_lib.TrainConfig(num_epochs=30, batch_size=2, lr=0.05, progress=False, device="cpu",
                                cache_teacher_logits=False)
    with torch.no_grad():
        before = float(sparse_kd_loss(student(inputs), served(inputs), targets))
    kd_lib.train(student, (inputs, targets), teacher=served, loss_fn=sparse_kd_loss, config=config)
    assert float(sparse_kd_loss(student(inputs), served(inputs), targets)) < 0.5 * before
    with pytest.raises(ValueError, match="not in its cache"):
        served(inputs + 1)


def test_uld_loss_is_the_sorted_l1_distance_across_vocabularies():
    torch.manual_seed(0)
    student, teacher = torch.randn(3, 4, 7, requires_grad=True), torch.randn(3, 4, 5)
    q = torch.softmax(student, -1).sort(-1, descending=True).values
    p = torch.nn.functional.pad(torch.softmax(teacher, -1).sort(-1, descending=True).values, (0, 2))
    torch.testing.assert_close(uld_loss(student, teacher), (q - p).abs().sum(-1).mean())
    permuted = teacher[..., torch.randperm(5)]  # ULD cannot tell which token is which
    torch.testing.assert_close(uld_loss(student, permuted), uld_loss(student, teacher))
    assert float(uld_loss(teacher, teacher)) == 0.0
    mask = torch.zeros(3, 4, dtype=torch.bool)
    assert float(uld_loss(student, teacher, mask=mask)) == 0.0
    with pytest.raises(ValueError, match="aligned positions"):
        uld_loss(student, teacher[:, :3])


def test_the_vocabulary_mismatch_error_points_at_uld():
    with pytest.raises(ValueError, match="kd_lib.lm.uld"):
        kd_lib.kd_loss(torch.randn(2, 5), torch.randn(2, 6))


@pytest.fixture(scope="module")
def pieces():
    pytest.importorskip("tokenizers")
    from kd_lib.lm.hf import train_tokenizer

    grammar = Grammar()
    stories = grammar.sample(200, seed=10)
    special = {grammar.index[PAD], grammar.index[BOS], grammar.index[EOS]}
    words = [[grammar.vocab[i] for i in row.tolist() if i not in special] for row in stories]
    tokenizer = train_tokenizer([" ".join(w) for w in words], vocab_size=120, kind="bpe")
    return grammar, stories, words, tokenizer


def test_word_alignment_pairs_first_pieces_with_words(pieces):
    grammar, stories, words, tokenizer = pieces
    x, y, positions = word_alignment(tokenizer, words, max_length=200)
    _, word_targets = lm_data(stories)
    assert x.shape == y.shape == positions.shape
    split = 0
    for n in range(len(words)):
        kept = positions[n] >= 0
        assert int(kept.sum()) == len(words[n]) + 1  # every word and the end of the story
        for j in kept.nonzero()[:, 0].tolist():
            word = grammar.vocab[int(word_targets[n, positions[n, j]])]
            piece = tokenizer.convert_ids_to_tokens(int(y[n, j]))
            assert word.startswith(piece) or word == piece == EOS
        split += int(((y[n] != -100) & ~kept).sum())
    assert split > 0  # some words are split into several pieces, and those positions are not aligned
    with pytest.raises(ValueError, match="max_length"):
        word_alignment(tokenizer, words, max_length=10)


def test_aligned_teacher_and_first_piece_map(pieces):
    grammar, stories, words, tokenizer = pieces
    x, y, positions = word_alignment(tokenizer, words[:8], max_length=200)
    teacher_logits = torch.randn(8, stories.shape[1] - 1, grammar.vocab_size)
    teacher_logits[..., [grammar.index[PAD], grammar.index[BOS]]] = -1e4  # a teacher never predicts them
    mapping = first_piece_map(tokenizer, grammar.vocab, {EOS: tokenizer.eos_token_id})
    assert mapping.shape == (grammar.vocab_size, len(tokenizer))
    assert torch.equal(mapping.sum(1) == 0, torch.tensor([w in (PAD, BOS) for w in grammar.vocab]))
    served = AlignedTeacher(x, teacher_logits, positions, vocab_map=mapping)(x[:3])
    assert torch.allclose(served.logits.exp().sum(-1)[served.aligned], torch.tensor(1.0), atol=1e-4)
    first = positions[0].tolist().index(0)  # the student position aligned with teacher position 0
    word_probs = torch.softmax(teacher_logits[0, 0], -1)
    torch.testing.assert_close(served.logits[0, first].exp(), word_probs @ mapping, rtol=1e-4, atol=1e-6)
    student = torch.randn(3, x.shape[1], len(tokenizer), requires_grad=True)
    loss = uld_distillation_loss(student, AlignedTeacher(x, teacher_logits, positions)(x[:3]), y[:3])
    loss.backward()
    assert torch.isfinite(loss) and float(student.grad.abs().sum()) > 0
    with pytest.raises(ValueError, match="AlignedLogits"):
        uld_distillation_loss(student, teacher_logits[:3], y[:3])


def test_calibration_and_kl_per_word_against_the_truth():
    grammar = Grammar()
    inputs, targets = lm_data(grammar.sample(50, seed=3))
    truth = grammar.next_token_probs(inputs)

    rows = {row.numpy().tobytes(): i for i, row in enumerate(inputs)}

    class Truth(torch.nn.Module):  # predicts the true distribution (sharpened by a power)
        def __init__(self, sharpen=1.0):
            super().__init__()
            self.sharpen = sharpen
            self.anchor = torch.nn.Parameter(torch.zeros(()))

        def forward(self, x):
            found = torch.tensor([rows[row.numpy().tobytes()] for row in x])
            return truth[found].clamp_min(1e-30).log().clamp_min(-1e4) * self.sharpen

    exact = calibration_to_truth(Truth(), grammar, inputs, targets)
    assert exact["ece"] < 1e-5 and abs(exact["overconfidence"]) < 1e-5 and abs(exact["entropy_gap"]) < 1e-4
    sharp = calibration_to_truth(Truth(3.0), grammar, inputs, targets)
    assert sharp["overconfidence"] > 0.05 and sharp["entropy_gap"] < -0.1
    model = Truth()
    assert abs(kl_per_word(grammar, inputs, targets, story_log_probs(model, inputs, targets))) < 1e-4
    assert abs(kl_to_truth(model, grammar, inputs, targets)) < 1e-4
