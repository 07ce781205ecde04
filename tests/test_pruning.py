"""kd_lib.methods.pruning: structured pruning gives smaller dense models with the kept units' weights."""
import pytest
import torch

from kd_lib.lm.gpt import GPT, GPTConfig
from kd_lib.metrics import count_parameters
from kd_lib.models import CNN1D, CNN1DConfig, MLP
from kd_lib.methods.pruning import cnn_importance, gpt_importance, prune_cnn, prune_gpt, top_units


def cnn(seed=0):
    torch.manual_seed(seed)
    model = CNN1D(CNN1DConfig(in_features=16, channels=(6, 8), hidden=10, num_classes=4))
    model.train()
    with torch.no_grad():
        for _ in range(5):
            model(torch.randn(32, 16))
    return model.eval()


def gpt(seed=0, **kw):
    torch.manual_seed(seed)
    config = dict(vocab_size=20, block_size=12, n_layer=3, n_head=4, n_embd=16)
    return GPT(GPTConfig(**{**config, **kw})).eval()


def test_top_units():
    assert top_units(torch.tensor([0.1, 3.0, 2.0, 3.0]), 2).tolist() == [1, 3]
    with pytest.raises(ValueError, match="keep"):
        top_units(torch.ones(3), 4)
    with pytest.raises(ValueError, match="NaN"):
        top_units(torch.tensor([1.0, float("nan")]), 1)


@pytest.mark.parametrize("method", ["l1", "activation"])
def test_keeping_every_unit_gives_the_same_function(method):
    model, x = cnn(), torch.randn(20, 16)
    importance = cnn_importance(model, method, x)
    same = prune_cnn(model, (6, 8), 10, importance)
    assert torch.allclose(same(x), model(x), atol=1e-6)


def test_pruned_cnn_equals_the_original_with_units_zeroed():
    """Removing a unit equals zeroing its output: check against a masked copy of the original."""
    model, x = cnn(), torch.randn(20, 16)
    importance = cnn_importance(model, "l1")
    pruned = prune_cnn(model, (3, 5), 4, importance)
    assert pruned.config.channels == (3, 5) and pruned.config.hidden == 4
    assert count_parameters(pruned) < count_parameters(model)
    masked = cnn()
    with torch.no_grad():
        norms = [m for m in masked.features if isinstance(m, torch.nn.BatchNorm1d)]
        for norm, score, k in zip(norms, importance, (3, 5)):
            drop = torch.ones(len(score), dtype=torch.bool)
            drop[top_units(score, k)] = False
            norm.weight[drop], norm.bias[drop] = 0.0, 0.0  # output 0 after ReLU
        drop = torch.ones(10, dtype=torch.bool)
        drop[top_units(importance[-1], 4)] = False
        masked.dense[1].weight[drop], masked.dense[1].bias[drop] = 0.0, 0.0
    assert torch.allclose(pruned(x), masked(x), atol=1e-5)


def test_activation_importance_sees_dead_channels():
    model, x = cnn(), torch.randn(50, 16)
    with torch.no_grad():
        model.features[1].bias[2] = -100.0  # channel 2 of block 0 never fires
    scores = cnn_importance(model, "activation", x)
    assert [len(s) for s in scores] == [6, 8, 10]
    assert scores[0][2] == 0 and scores[0].argmin() == 2
    assert 2 not in top_units(scores[0], 5).tolist()


def test_cnn_pruning_errors():
    model = cnn()
    with pytest.raises(ValueError, match="method"):
        cnn_importance(model, "random")
    with pytest.raises(ValueError, match="calibration"):
        cnn_importance(model, "activation")
    with pytest.raises(ValueError, match="CNN1D"):
        cnn_importance(MLP(), "l1")
    importance = cnn_importance(model)
    with pytest.raises(ValueError, match="widths"):
        prune_cnn(model, (3,), 4, importance)
    with pytest.raises(ValueError, match="keep"):
        prune_cnn(model, (7, 5), 4, importance)
    with pytest.raises(ValueError, match="importance"):
        prune_cnn(model, (3, 5), 4, importance[:2])


def test_gpt_config_head_dim_and_mlp_hidden():
    model = gpt(n_embd=16, n_head=2, head_dim=5, mlp_hidden=7)
    assert model.blocks[0].qkv.weight.shape == (30, 16) and model.blocks[0].proj.weight.shape == (16, 10)
    assert model.blocks[0].mlp[0].weight.shape == (7, 16)
    tokens = torch.randint(0, 20, (2, 12))
    assert model(tokens).shape == (2, 12, 20)
    assert torch.allclose(model.forward_internals(tokens).logits, model(tokens), atol=1e-5)
    with pytest.raises(ValueError, match="head_dim"):
        gpt(head_dim=0)


def test_keeping_everything_gives_the_same_gpt():
    model, tokens = gpt(), torch.randint(0, 20, (3, 12))
    importance = gpt_importance(model, tokens)
    same = prune_gpt(model, importance, n_embd=16, n_head=4, mlp_hidden=64)
    assert torch.allclose(same(tokens), model(tokens), atol=1e-5)


def test_gpt_importance_shapes_and_block_scores():
    model, tokens = gpt(), torch.randint(0, 20, (3, 12))
    importance = gpt_importance(model, tokens)
    assert [len(n) for n in importance.neurons] == [64] * 3
    assert [len(h) for h in importance.heads] == [4] * 3
    assert importance.channels.shape == (16,) and importance.blocks.shape == (3,)
    assert (importance.blocks >= 0).all()
    with torch.no_grad():  # a block whose residual branches output 0 changes nothing
        model.blocks[1].proj.weight.zero_(), model.blocks[1].proj.bias.zero_()
        model.blocks[1].mlp[2].weight.zero_(), model.blocks[1].mlp[2].bias.zero_()
    assert gpt_importance(model, tokens).blocks[1] < 1e-10
    assert torch.allclose(prune_gpt(model, None, layers=[0, 2])(tokens), model(tokens), atol=1e-5)


def test_head_and_neuron_pruning_equal_zeroing_them():
    model, tokens = gpt(), torch.randint(0, 20, (3, 12))
    importance = gpt_importance(model, tokens)
    pruned = prune_gpt(model, importance, n_head=2, mlp_hidden=20)
    assert pruned.config.n_head == 2 and pruned.config.head_dim == 4 and pruned.config.mlp_hidden == 20
    masked = gpt()
    with torch.no_grad():
        for block, heads, neurons in zip(masked.blocks, importance.heads, importance.neurons):
            drop = torch.ones(4, dtype=torch.bool)
            drop[top_units(heads, 2)] = False
            columns = drop.repeat_interleave(4)
            block.proj.weight[:, columns] = 0.0  # the dropped heads contribute nothing
            drop = torch.ones(64, dtype=torch.bool)
            drop[top_units(neurons, 20)] = False
            block.mlp[2].weight[:, drop] = 0.0
    assert torch.allclose(pruned(tokens), masked(tokens), atol=1e-5)
    assert count_parameters(pruned) < count_parameters(model)


def test_channel_pruning_shapes():
    model, tokens = gpt(), torch.randint(0, 20, (3, 12))
    pruned = prune_gpt(model, gpt_importance(model, tokens), n_embd=10, layers=[2, 0])
    assert pruned.config.n_embd == 10 and pruned.config.n_layer == 2 and pruned.config.head_dim == 4
    assert pruned.tok_emb.weight.shape == (20, 10) and pruned.blocks[0].qkv.weight.shape == (48, 10)
    assert torch.isfinite(pruned(tokens)).all()


def test_gpt_pruning_errors():
    model, tokens = gpt(), torch.randint(0, 20, (3, 12))
    with pytest.raises(ValueError, match="importance"):
        prune_gpt(model, None, n_head=2)
    importance = gpt_importance(model, tokens)
    with pytest.raises(ValueError, match="n_head"):
        prune_gpt(model, importance, n_head=5)
    with pytest.raises(ValueError, match="layers"):
        prune_gpt(model, importance, layers=[0, 0])
    with pytest.raises(ValueError, match="layers"):
        prune_gpt(model, importance, layers=[3])
    with pytest.raises(ValueError, match="GPT"):
        gpt_importance(cnn(), tokens)
