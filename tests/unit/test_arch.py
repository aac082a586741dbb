"""Every dense row of the adapter table against a tiny random model of that architecture.

For each ``model_type`` a 2-layer model is built from its config class (no downloads, see
tests/tiny_archs.py), resolved, and run once with hooks: the module the table points at must be
the one whose input is the activation z and whose output h satisfies ``h = z @ down_weight(l).T
(+ bias)``, and z itself must equal the FFN recomputed by hand from the up-projection's input
with the config's activation and ``up_weight``/``gate_weight``. A wrong path, a transposed
weight, a swapped gate/up half or the wrong activation all fail here. The same model then checks
that α scaling by hook (:func:`scale_neurons`) gives the logits of the weight edit
(:func:`scale_down_weights`). Mixture-of-experts rows are in test_arch_moe.py.

Biases: GPT-2 (Conv1D), Phi, GPT-NeoX, BLOOM and others have FFN biases; the module output
includes the down-projection bias, so the check adds it. CETT's h excludes it
(``hooks.down_output``, the paper's h_t = W_down·z_t; see tests/unit/test_features.py), which this
file checks separately.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel
from transformers.activations import ACT2FN

from hneurons.core.arch import ARCHITECTURES, arch_for, resolve, supported_architectures, text_config
from hneurons.errors import UnsupportedArchitecture
from hneurons.core.hooks import CETT_EPS, capture_cett, down_output, record_cett
from tests.tiny_archs import D, F, L, MODEL_TYPES, V, activation_name, assert_alpha_hook_equals_weight_edit, build

DENSE = [t for t in MODEL_TYPES if not ARCHITECTURES[t].is_moe]
IDS = torch.tensor([[1, 7, 21, 5, 33, 9, 12, 40]])


def test_every_row_has_a_builder_and_the_table_is_broad() -> None:
    assert sorted(MODEL_TYPES) == sorted(ARCHITECTURES)
    assert len(ARCHITECTURES) >= 40
    assert sum(a.is_moe for a in ARCHITECTURES.values()) >= 6


def _logits(model: nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=IDS).logits


@pytest.mark.parametrize("model_type", DENSE)
def test_row_resolves_the_true_down_projection(model_type: str) -> None:
    model = build(model_type)
    assert model.config.model_type == model_type
    layout = resolve(model)
    cfg = text_config(model.config)
    width = 4 * D if model_type in ("bloom", "mpt") else F  # BLOOM and MPT have no intermediate size
    assert (layout.n_layers, layout.d_ff, layout.d_model, layout.n_neurons) == (L, width, D, L * width)
    assert layout.describe()["n_neurons"] == L * width and layout.experts is None

    # Where the text decoder has ``.mlp`` modules, found independently of the table, the
    # down-projection must be one of their children.
    mlps = [m for name, m in model.named_modules() if name.endswith(".mlp") and "vision" not in name]
    if mlps:
        assert len(mlps) == L
        for layer, mlp in enumerate(mlps):
            assert any(layout.down_projs[layer] is m for m in mlp.children())
            assert any(layout.up_projs[layer] is m for m in mlp.children())

    captured: dict[tuple[str, int], torch.Tensor] = {}
    handles = []
    for layer in range(L):
        handles.append(layout.down_projs[layer].register_forward_hook(
            # clones: Falcon adds attention into the MLP output in place
            lambda mod, args, out, layer=layer: captured.update({("z", layer): args[0].clone(), ("h", layer): out.clone()})))
        handles.append(layout.up_projs[layer].register_forward_pre_hook(
            lambda mod, args, layer=layer: captured.update({("x", layer): args[0].clone()})))
    with torch.no_grad():
        model(input_ids=IDS)
    for h in handles:
        h.remove()

    if ARCHITECTURES[model_type].flat_tokens:  # OPT's FFN sees [batch·seq, d]: one sequence here
        captured = {k: v.view(1, *v.shape) for k, v in captured.items()}
    act = ACT2FN[activation_name(model_type, cfg)]
    tol = 1e-7 if model_type == "bloom" else 1e-9  # BloomGelu rounds √(2/π) to 8 digits
    for layer in range(L):
        z, h, x = captured[("z", layer)], captured[("h", layer)], captured[("x", layer)]
        assert z.shape == (1, IDS.shape[1], width) and h.shape == (1, IDS.shape[1], D)
        w_down = layout.down_weight(layer)
        assert w_down.shape == (D, width)
        bias = layout.down_projs[layer].bias
        expected_h = z @ w_down.T + (bias if bias is not None else 0)
        torch.testing.assert_close(h, expected_h, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(down_output(layout.down_projs[layer], h), z @ w_down.T, rtol=1e-10, atol=1e-10)

        # Recompute the FFN's activation z by hand from the up-projection's input.
        up = layout.up_weight(layer)
        gate = layout.gate_weight(layer)
        assert up.shape == (width, D)
        up_bias = layout.up_projs[layer].bias
        up_bias = None if up_bias is None else up_bias[-width:]
        pre_up = x @ up.T + (up_bias if up_bias is not None else 0)
        # xIELU (Apertus) has learned parameters, which build() redrew: use the layer's own module.
        layer_act = mlps[layer].act_fn if model_type.startswith("apertus") else act
        if gate is None:
            expected_z = layer_act(pre_up)
        else:
            assert gate.shape == (width, D)
            expected_z = layer_act(x @ gate.T) * pre_up
        torch.testing.assert_close(z, expected_z, rtol=tol, atol=tol)

    # α by hook equals α by weight edit, and the neurons matter.
    neurons = [0, 5, width - 1, width + 2, width + 20]
    base = _logits(model)
    assert_alpha_hook_equals_weight_edit(layout, neurons, lambda: _logits(model), base)


@pytest.mark.parametrize("model_type", ["gpt2", "phi", "gpt_neox", "bloom", "opt"])
def test_cett_of_biased_ffn_excludes_the_bias(model_type: str) -> None:
    """h in CETT is W_down·z (the paper, arXiv 2512.01797, §6.1.2 Eqs. 1–3): per-token CETT from capture_cett equals the hand value
    without the bias, so Σ_j CETT ≥ 1 holds (triangle inequality), which fails with the bias in."""
    model = build(model_type)
    layout = resolve(model)
    assert layout.down_projs[0].bias is not None
    captured: dict[int, torch.Tensor] = {}
    handles = [layout.down_projs[i].register_forward_hook(lambda mod, args, out, i=i: captured.__setitem__(i, args[0]))
               for i in range(L)]
    ids = torch.tensor([[1, 7, 21, 5, 33, 9]])
    t = ids.shape[1]
    with torch.no_grad(), capture_cett(layout, torch.eye(t)[None]) as feats:  # one region per token
        model(input_ids=ids)
    for h in handles:
        h.remove()
    for layer in range(L):
        z = captured[layer].reshape(1, t, -1)[0]  # OPT hands its FFN [seq, d_ff]
        w = layout.down_weight(layer)
        hand = z.abs() * w.norm(dim=0) / ((z @ w.T).norm(dim=-1, keepdim=True) + CETT_EPS)
        torch.testing.assert_close(feats[0, layer].double(), hand, rtol=1e-5, atol=1e-7)
        assert (feats[0, layer].sum(-1) >= 1 - 1e-5).all()


def test_flat_token_row_keeps_rows_and_positions_apart() -> None:
    """OPT hands its FFN [batch·seq, d_ff]; per (row, token) CETT from capture_cett and record_cett
    must be the hand value of that row and token, so two rows of a batch never mix."""
    model = build("opt")
    layout = resolve(model)
    ids = torch.tensor([[1, 7, 21, 5, 33, 9], [4, 8, 15, 16, 23, 42]])
    b, t = ids.shape
    neurons = [0, 5, F + 3, F + 40]
    captured: dict[int, torch.Tensor] = {}
    handles = [layout.down_projs[i].register_forward_hook(lambda mod, args, out, i=i: captured.__setitem__(i, args[0]))
               for i in range(L)]
    with torch.no_grad(), capture_cett(layout, torch.eye(t)[None].repeat(b, 1, 1)) as feats, \
            record_cett(layout, neurons) as records:
        model(input_ids=ids)
    for h in handles:
        h.remove()
    hand = []
    for layer in range(L):
        assert captured[layer].shape == (b * t, F)  # the row really flattens
        z = captured[layer].reshape(b, t, F)
        w = layout.down_weight(layer)
        hand.append(z.abs() * w.norm(dim=0) / ((z @ w.T).norm(dim=-1, keepdim=True) + CETT_EPS))
        torch.testing.assert_close(feats[:, layer].double(), hand[layer], rtol=1e-5, atol=1e-7)
    assert len(records) == 1 and records[0].shape == (b, t, len(neurons))
    for c, flat in enumerate(neurons):
        layer, j = divmod(flat, F)
        torch.testing.assert_close(records[0][..., c].double(), hand[layer][..., j], rtol=1e-5, atol=1e-7)


def test_gemma3_multimodal_never_picks_the_vision_tower() -> None:
    model = build("gemma3")
    layout = resolve(model)
    vision_ids = {id(m) for name, m in model.named_modules() if "vision" in name}
    vision_fc2 = [m for name, m in model.named_modules() if "vision" in name and name.endswith("mlp.fc2")]
    assert len(vision_fc2) >= 2  # the tower has FFNs of the same width that a name search would find
    assert not {id(m) for m in layout.down_projs + layout.up_projs + (layout.gate_projs or [])} & vision_ids
    text_layers = model.model.language_model.layers
    assert [id(m) for m in layout.down_projs] == [id(layer.mlp.down_proj) for layer in text_layers]


def test_gpt2_default_inner_size_is_four_times_hidden() -> None:
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=V, n_embd=D, n_layer=L, n_head=4, n_positions=64))
    layout = resolve(model)
    assert layout.d_ff == 4 * D
    assert layout.down_weight(0).shape == (D, 4 * D)
    assert layout.up_weight(1).shape == (4 * D, D)


@pytest.mark.parametrize("model_type", ["phi3", "glm", "glm4"])
def test_fused_gate_up_halves(model_type: str) -> None:
    model = build(model_type)
    layout = resolve(model)
    fused = layout.up_projs[0].weight
    assert torch.equal(layout.gate_weight(0), fused[:F]) and torch.equal(layout.up_weight(0), fused[F:])


def test_dense_neuron_names() -> None:
    layout = resolve(build("llama"))
    assert layout.neuron(F + 7) == (1, None, 7) and layout.neuron_name(F + 7) == "L1.N7"
    assert layout.width(1) == F


@pytest.mark.parametrize(("model_type", "closest"), [("llama3", "llama"), ("mixtral_v2", "mixtral"), ("qwen3_mo", "qwen3_moe")])
def test_unsupported_type_names_the_closest_row(model_type: str, closest: str) -> None:
    class Fake(nn.Module):
        config = type("Cfg", (), {"model_type": model_type})()

    with pytest.raises(UnsupportedArchitecture) as exc:
        resolve(Fake())
    msg = str(exc.value)
    assert "\n" not in msg and repr(model_type) in msg
    assert f"closest supported: {closest!r}" in msg and "hneurons archs" in msg
    with pytest.raises(UnsupportedArchitecture, match="nothing to compare"):
        arch_for("")
    assert [name for name, _ in supported_architectures()] == sorted(ARCHITECTURES)


@pytest.mark.parametrize(("model_type", "why"), [("bitnet", "normalisation"), ("gemma3n_text", "sparsifies"),
                                                 ("gemma3n", "sparsifies")])
def test_known_unsupported_family_says_why_not_a_sibling(model_type: str, why: str) -> None:
    """BitNet must not be pointed at the llama row: the refusal names the family's reason."""
    with pytest.raises(UnsupportedArchitecture) as exc:
        arch_for(model_type)
    msg = str(exc.value)
    assert "\n" not in msg and why in msg and "closest supported" not in msg
    assert model_type not in ARCHITECTURES


def test_row_that_does_not_match_the_model_is_rejected() -> None:
    model = build("gpt2")
    model.config.model_type = "llama"  # llama's paths do not exist in a GPT-2 module tree
    with pytest.raises(UnsupportedArchitecture, match="none of the layer paths"):
        resolve(model)
    model = build("llama")
    model.config.num_hidden_layers = 3
    with pytest.raises(UnsupportedArchitecture, match="config says 3"):
        resolve(model)
    model = build("mixtral")
    model.config.model_type = "llama"  # MoE layers have no mlp.down_proj
    with pytest.raises(UnsupportedArchitecture, match="weighted module at 'mlp.down_proj'"):
        resolve(model)
