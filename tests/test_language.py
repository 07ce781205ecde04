"""kd_lib.lm.language: the synthetic story grammar, its exact next-token distribution, LM batches."""
import math

import pytest
import torch
from torch import nn

from kd_lib.lm.language import BOS, EOS, PAD, Grammar, GrammarConfig, lm_data
from kd_lib.lm.metrics import kl_to_truth, lm_metrics



@pytest.fixture(scope="module")
def grammar():
    return Grammar()


@pytest.fixture(scope="module")
def stories(grammar):
    return grammar.sample(4000, seed=0)


class TruthModel(nn.Module):
    """A 'language model' that outputs the grammar's exact log-probabilities."""

    def __init__(self, grammar):
        super().__init__()
        self.grammar = grammar
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, tokens):
        return self.grammar.next_token_probs(tokens).clamp_min(1e-30).log()


def prefix_probs(grammar, text):
    """True next-token distribution after `<bos> text`, as {word: p} for p > 0."""
    tokens = torch.tensor([[grammar.index[BOS], *grammar.encode(text)]])
    probs = grammar.next_token_probs(tokens)[0, -1]
    return {grammar.vocab[i]: float(p) for i, p in enumerate(probs) if p > 0}


def test_tokenizer_round_trip_and_unknown_word(grammar):
    text = "once upon a time there was an old owl named zoe ."
    assert grammar.decode(grammar.encode(text)) == text
    assert grammar.vocab[:3] == [PAD, BOS, EOS] and grammar.vocab_size == len(set(grammar.vocab))
    with pytest.raises(ValueError, match="not in the vocabulary"):
        grammar.encode("once upon a dragon")


def test_samples_are_grammatical_padded_and_reproducible(grammar, stories):
    assert stories.shape == (4000, grammar.max_len) and bool((stories[:, 0] == grammar.index[BOS]).all())
    assert bool(grammar.is_grammatical(stories).all())
    assert torch.equal(stories, grammar.sample(4000, seed=0))
    assert not torch.equal(grammar.sample(50, seed=1), grammar.sample(50, seed=2))
    lengths = (stories != grammar.index[PAD]).sum(1)
    assert 20 <= float(lengths.float().mean()) <= 45 and int(lengths.max()) <= grammar.max_len


def test_agreement_and_copying_constraints(grammar):
    assert prefix_probs(grammar, "once") == {"upon": 1.0}
    after_an = prefix_probs(grammar, "once upon a time there was an")
    assert set(after_an) == {"old", "angry", "owl"} and math.isclose(sum(after_an.values()), 1.0, abs_tol=1e-6)
    assert set(prefix_probs(grammar, "long ago there lived a queen named")) == {"anna", "lily", "emma", "mia", "zoe"}
    story = "long ago there lived a dog named tom . he found an egg ."
    assert "it" in prefix_probs(grammar, story) and "she" not in prefix_probs(grammar, story)
    assert prefix_probs(grammar, story + " tom liked the") == {"egg": 1.0}
    assert prefix_probs(grammar, story + " tom liked the egg because") == {"it": 1.0}
    assert prefix_probs(grammar, story + " tom played with") == {"his": 1.0}
    assert prefix_probs(grammar, story + " in the end ,") == {"tom": 1.0}
    plural = "once upon a time there was a cat named mia . she had two boxes . mia liked the boxes because"
    assert prefix_probs(grammar, plural) == {"they": 1.0}


def test_exact_probabilities_match_sample_frequencies(grammar, stories):
    first = stories[:, 1] == grammar.index["once"]
    assert abs(float(first.float().mean()) - 0.6) < 4 * math.sqrt(0.6 * 0.4 / len(stories))
    # the truth at every position, averaged over stories, equals the empirical next-token frequency
    inputs, targets = lm_data(stories)
    truth = grammar.next_token_probs(inputs)
    position = 12
    empirical = torch.bincount(stories[:, position + 1], minlength=grammar.vocab_size).float() / len(stories)
    assert float((truth[:, position].mean(0) - empirical).abs().max()) < 0.03
    assert torch.allclose(truth.sum(-1), torch.ones(truth.shape[:2]), atol=1e-5)
    kept = targets != -100
    p_of_actual = truth.gather(-1, targets.clamp_min(0).unsqueeze(-1)).squeeze(-1)
    assert bool((p_of_actual[kept] > 0).all())


def test_ungrammatical_stories_are_rejected(grammar, stories):
    story = stories[0].clone()
    eos = int((story == grammar.index[EOS]).nonzero()[0])
    name_at = int((story == grammar.index[","]).nonzero()[-1]) + 1  # "in the end , <name> was ..."
    wrong_name = story.clone()
    wrong_name[name_at] = grammar.index["zoe"] if int(story[name_at]) != grammar.index["zoe"] else grammar.index["tom"]
    truncated = story.clone()
    truncated[eos] = grammar.index[PAD]
    gap = story.clone()
    gap[3] = grammar.index[PAD]
    checks = grammar.is_grammatical(torch.stack([story, wrong_name, truncated, gap]))
    assert checks.tolist() == [True, False, False, False]
    bad = torch.tensor([[grammar.index[BOS], *grammar.encode("once upon a time there was a owl")]])
    assert not bool(grammar.is_grammatical(bad)[0])
    with pytest.raises(ValueError, match="impossible under the grammar"):
        grammar.next_token_probs(bad)
    with pytest.raises(ValueError, match="int64"):
        grammar.next_token_probs(story.float().unsqueeze(0))
    with pytest.raises(ValueError, match="lie in"):
        grammar.next_token_probs(torch.tensor([[1, 999]]))


def test_lm_data_shifts_and_masks_padding(grammar, stories):
    inputs, targets = lm_data(stories[:8])
    assert inputs.shape == targets.shape == (8, grammar.max_len - 1)
    kept = targets != -100
    assert torch.equal(targets[kept], stories[:8, 1:][kept]) and torch.equal(inputs, stories[:8, :-1])
    assert bool((stories[:8, 1:][~kept] == grammar.index[PAD]).all())
    assert int(kept.sum()) == int((stories[:8] != grammar.index[PAD]).sum()) - 8  # every token but <bos>
    with pytest.raises(ValueError):
        lm_data(stories[0])


def test_kl_to_truth_and_metrics_of_the_exact_model(grammar, stories):
    inputs, targets = lm_data(stories[:200])
    truth_model = TruthModel(grammar)
    assert kl_to_truth(truth_model, grammar, inputs, targets) < 1e-6
    uniform = nn.Sequential(nn.Embedding(grammar.vocab_size, grammar.vocab_size))
    nn.init.zeros_(uniform[0].weight)
    truth = grammar.next_token_probs(inputs)
    kept = targets != -100
    entropy = -(truth * truth.clamp_min(1e-30).log()).sum(-1)[kept].mean()
    expected = math.log(grammar.vocab_size) - float(entropy)  # KL(p || uniform) = log V - H(p)
    assert abs(kl_to_truth(uniform, grammar, inputs, targets) - expected) < 1e-4
    metrics = lm_metrics(truth_model, grammar, inputs, targets, num_samples=20, seed=0)
    assert metrics["grammatical"] == 1.0 and metrics["kl_to_truth"] < 1e-6
    actual = truth.gather(-1, targets.clamp_min(0).unsqueeze(-1)).squeeze(-1)[kept]
    assert abs(metrics["val_ce"] - float(-actual.log().mean())) < 1e-4  # CE of the truth = its surprisal


def test_config_makes_a_sub_language_and_validates(grammar):
    pets = Grammar(GrammarConfig(heroes=("dog", "cat"), verbs={"found": 3.0, "played": 3.0, "went": 1.0}))
    stories = pets.sample(300, seed=0)
    heroes = {pets.vocab[int(t)] for t in stories[:, 1:12].flatten()} & {"boy", "girl", "king", "queen", "fox"}
    assert heroes == set() and bool(pets.is_grammatical(stories).all())
    assert pets.vocab == grammar.vocab  # same tokenizer: a teacher of one can score the other
    assert not bool(pets.is_grammatical(grammar.sample(300, seed=0)).all())
    with pytest.raises(ValueError, match="heroes"):
        Grammar(GrammarConfig(heroes=("dragon",)))
    with pytest.raises(ValueError, match="verb"):
        Grammar(GrammarConfig(verbs={"flew": 1.0}))
    with pytest.raises(ValueError, match="stop_after"):
        Grammar(GrammarConfig(stop_after=(0.0, 0.5)))
    with pytest.raises(ValueError, match="needs no object|positive weight"):
        Grammar(GrammarConfig(verbs={"liked": 1.0, "played": 1.0}))
    with pytest.raises(ValueError, match="lie in"):
        Grammar(GrammarConfig(p_adjective=1.5))
