"""α-scaling of neurons: hook vs hand-computed MLP vs weight editing, reversibility, batching.

Tiny random models of four architectures (gated Llama / Qwen2, GPT-2 with its transposed Conv1D
weights, GPT-NeoX) are built from config classes, so nothing is downloaded.
"""

from __future__ import annotations

import math

import pytest
import torch

from hneurons.core.arch import resolve
from hneurons.errors import ConfigError
from hneurons.core.hooks import check_alpha, scale_down_weights, scale_neurons

D_FF = 32
N_LAYERS = 2


def _make(kind: str, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    import transformers as tf

    torch.manual_seed(0)
    common = dict(vocab_size=64, num_hidden_layers=N_LAYERS, num_attention_heads=2)
    if kind == "llama":
        cfg = tf.LlamaConfig(hidden_size=16, intermediate_size=D_FF, num_key_value_heads=2,
                             max_position_embeddings=64, **common)
        model = tf.LlamaForCausalLM(cfg)
    elif kind == "qwen2":
        cfg = tf.Qwen2Config(hidden_size=16, intermediate_size=D_FF, num_key_value_heads=2,
                             max_position_embeddings=64, **common)
        model = tf.Qwen2ForCausalLM(cfg)
    elif kind == "gpt2":
        cfg = tf.GPT2Config(n_embd=16, n_layer=N_LAYERS, n_head=2, n_inner=D_FF, n_positions=64, vocab_size=64)
        model = tf.GPT2LMHeadModel(cfg)
    elif kind == "gpt_neox":
        cfg = tf.GPTNeoXConfig(hidden_size=16, intermediate_size=D_FF, max_position_embeddings=64, **common)
        model = tf.GPTNeoXForCausalLM(cfg)
    else:
        raise AssertionError(kind)
    # Random init leaves some weights tiny; widen them so every neuron matters in the logits.
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0, 0.3)
    return model.to(dtype).eval()


KINDS = ["llama", "qwen2", "gpt2", "gpt_neox"]
IDS = torch.tensor([[3, 17, 5, 42, 9, 1, 33, 8]])
NEURONS = [0, 5, 31, D_FF + 2, D_FF + 20]  # flat: layer 0 → 0, 5, 31; layer 1 → 2, 20


def _logits(model: torch.nn.Module, ids: torch.Tensor = IDS) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits


def _snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_same_params(model: torch.nn.Module, snap: dict[str, torch.Tensor]) -> None:
    for k, v in model.state_dict().items():
        assert torch.equal(v, snap[k]), f"parameter {k} changed"


def _no_hooks(model: torch.nn.Module) -> bool:
    return all(not m._forward_pre_hooks and not m._forward_hooks for m in model.modules())


def _hand_z(kind: str, mlp: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The neuron activations z of one MLP, computed from its input by hand."""
    if kind in ("llama", "qwen2"):
        return mlp.act_fn(mlp.gate_proj(x)) * mlp.up_proj(x)
    if kind == "gpt2":
        return mlp.act(mlp.c_fc(x))
    return mlp.act(mlp.dense_h_to_4h(x))


def _down(kind: str, mlp: torch.nn.Module) -> torch.nn.Module:
    return getattr(mlp, {"llama": "down_proj", "qwen2": "down_proj", "gpt2": "c_proj", "gpt_neox": "dense_4h_to_h"}[kind])


def _mlp(kind: str, model: torch.nn.Module, layer: int) -> torch.nn.Module:
    if kind == "gpt2":
        return model.transformer.h[layer].mlp
    if kind == "gpt_neox":
        return model.gpt_neox.layers[layer].mlp
    return model.model.layers[layer].mlp


@pytest.mark.parametrize("kind", KINDS)
def test_alpha_one_is_bit_identical(kind: str) -> None:
    model = _make(kind)
    layout = resolve(model)
    base = _logits(model)
    with scale_neurons(layout, NEURONS, 1.0):
        hooked = _logits(model)
    assert torch.equal(base, hooked)


@pytest.mark.parametrize("kind", KINDS)
def test_alpha_zero_matches_hand_computed_mlp(kind: str) -> None:
    model = _make(kind)
    layout = resolve(model)
    mlp = _mlp(kind, model, 0)
    seen: dict[str, torch.Tensor] = {}
    handle = mlp.register_forward_hook(lambda m, a, o: seen.update(x=a[0].detach(), y=o.detach()))
    try:
        _logits(model)
        plain_y = seen["y"]
        with scale_neurons(layout, NEURONS, 0.0):
            _logits(model)
    finally:
        handle.remove()
    with torch.no_grad():
        z = _hand_z(kind, mlp, seen["x"])
        z[..., [0, 5, 31]] = 0.0
        expected = _down(kind, mlp)(z)
    torch.testing.assert_close(seen["y"], expected, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(plain_y, expected, atol=1e-4), "zeroing the neurons changed nothing; test is vacuous"


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("alpha", [0.0, 0.5, 2.0, 3.0])
def test_hook_equals_weight_editing(kind: str, alpha: float) -> None:
    model = _make(kind)
    layout = resolve(model)
    snap = _snapshot(model)
    base = _logits(model)
    with scale_neurons(layout, NEURONS, alpha):
        hooked = _logits(model)
    with scale_down_weights(layout, NEURONS, alpha):
        edited = _logits(model)
    torch.testing.assert_close(hooked, edited, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(hooked, base, atol=1e-4)
    _assert_same_params(model, snap)
    assert _no_hooks(model)


def test_per_neuron_alpha_mapping() -> None:
    model = _make("llama")
    layout = resolve(model)
    per = {n: (0.0 if n < D_FF else 2.0) for n in NEURONS}
    with scale_neurons(layout, NEURONS[:3], 0.0), scale_neurons(layout, NEURONS[3:], 2.0):
        two_hooks = _logits(model)
    with scale_neurons(layout, NEURONS, per):
        mapped = _logits(model)
    torch.testing.assert_close(mapped, two_hooks)


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_params_restored_and_hooks_removed_after_exception(kind: str) -> None:
    model = _make(kind)
    layout = resolve(model)
    snap = _snapshot(model)
    base = _logits(model)
    for cm in (scale_neurons, scale_down_weights):
        with pytest.raises(RuntimeError, match="boom"), cm(layout, NEURONS, 0.0):
            _logits(model)
            raise RuntimeError("boom")
        _assert_same_params(model, snap)
        assert _no_hooks(model)
    assert torch.equal(_logits(model), base)


def test_weight_editing_does_not_compound() -> None:
    """The official code's in-place edit compounds (1.5 then 2.0 = 3.0); ours restores each time."""
    model = _make("llama")
    layout = resolve(model)
    with scale_down_weights(layout, NEURONS, 1.5):
        pass
    with scale_down_weights(layout, NEURONS, 2.0):
        after = _logits(model)
    with scale_neurons(layout, NEURONS, 2.0):
        expected = _logits(model)
    torch.testing.assert_close(after, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("bad", [-0.5, math.nan, math.inf, "x", None])
def test_bad_alpha_is_config_error(bad: object) -> None:
    model = _make("llama")
    layout = resolve(model)
    for cm in (scale_neurons, scale_down_weights):
        with pytest.raises(ConfigError), cm(layout, NEURONS, bad):  # type: ignore[arg-type]
            pass
    assert _no_hooks(model)


def test_empty_set_and_out_of_range_are_config_errors() -> None:
    model = _make("gpt2")
    layout = resolve(model)
    for cm in (scale_neurons, scale_down_weights):
        with pytest.raises(ConfigError, match="empty"), cm(layout, [], 0.0):
            pass
        with pytest.raises(ConfigError, match="out of range"), cm(layout, [N_LAYERS * D_FF], 0.0):
            pass
        with pytest.raises(ConfigError, match="out of range"), cm(layout, [-1], 0.0):
            pass
    assert _no_hooks(model)


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_batched_left_padded_generation_equals_one_at_a_time(kind: str) -> None:
    model = _make(kind, torch.float64)
    layout = resolve(model)
    prompts = [[3, 17, 5, 42, 9], [8, 2], [11, 12, 13]]
    pad = 0
    width = max(map(len, prompts))
    ids = torch.full((3, width), pad)
    mask = torch.zeros((3, width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.tensor(p)
        mask[i, width - len(p):] = 1
    kw = dict(max_new_tokens=8, do_sample=False, pad_token_id=pad, eos_token_id=None)
    with scale_neurons(layout, NEURONS, 2.5), torch.no_grad():
        batched = model.generate(input_ids=ids, attention_mask=mask, **kw)[:, width:]
        single = [model.generate(input_ids=torch.tensor([p]), attention_mask=torch.ones(1, len(p), dtype=torch.long),
                                 **kw)[0, len(p):] for p in prompts]
    with torch.no_grad():
        plain_off = model.generate(input_ids=ids, attention_mask=mask, **kw)[:, width:]
    for i in range(3):
        assert batched[i].tolist() == single[i].tolist()
    assert not torch.equal(batched, plain_off), "the hook did not change any generated token; test is vacuous"


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_column_norms_cache_follows_weight_edits(kind):
    # cached per layer (no bf16→f32 copy per call) but never stale: an in-place edit of W_down
    # (the weight-editing intervention, or a user's) is seen at once, and undone edits too
    from hneurons.core.hooks import column_norms

    model = _make(kind)
    layout = resolve(model)
    w = layout.down_weight(1)
    direct = w.detach().float().norm(dim=0)
    torch.testing.assert_close(column_norms(layout, 1), direct)
    assert column_norms(layout, 1) is column_norms(layout, 1)
    with scale_down_weights(layout, [D_FF + 3], 0.0):
        assert column_norms(layout, 1)[3].item() == 0.0
    torch.testing.assert_close(column_norms(layout, 1), direct)
    with torch.no_grad():
        w.mul_(2.0)
    torch.testing.assert_close(column_norms(layout, 1), 2 * direct)


def test_one_alpha_check_names_where_the_value_came_from() -> None:
    from hneurons.config import check_guard, load_config

    assert check_alpha(2, "alpha") == 2.0 and check_alpha(0.0, "alpha") == 0.0
    for bad in (True, "0.5", -1e-9):
        with pytest.raises(ConfigError, match=r"^alpha must be a finite number ≥ 0"):
            check_alpha(bad, "alpha")
    with pytest.raises(ConfigError, match=r"^--alpha must be a finite number ≥ 0 .*got -2"):
        check_guard(-2, None)
    with pytest.raises(ConfigError, match=r"intervene\.alphas must be a finite number ≥ 0 .*got -1\.0"):
        load_config("smoke", overrides={"intervene.alphas": [0.0, -1.0]})
