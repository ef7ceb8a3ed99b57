"""The method of the paper (section 3.2), pinned: each test fails when its equation or component is
changed (sigmoid -> tanh in the gate, ReLU(sum) -> product, HAPM's residual or a branch dropped,
nearest instead of bilinear upsampling, the Dice or the BCE term of the loss off).

Equations are checked on small tensors whose expected values are worked out by hand (written as
the arithmetic, with the paper's symbols in comments); whole components against the composition
of their parts as the paper describes it (the parts' own weights, random)."""

import math

import pytest
import torch
import torch.nn.functional as F

from halsr_hf import HalsrConfig, HalsrForSemanticSegmentation
from halsr_hf.modeling_halsr import (
    AtrousSpatialPyramidPooling,
    AttentionGate,
    ChannelAttention,
    HybridAttentionPoolingModule,
    ReconstructionModule,
    SpatialAttention,
    SpatialPyramidPooling,
    bce_dice_loss,
)


def sigmoid(v: float) -> float:
    return 1 / (1 + math.exp(-v))


def set_conv(conv, weight, bias) -> None:
    with torch.no_grad():
        conv.weight.copy_(torch.as_tensor(weight, dtype=torch.float32).reshape(conv.weight.shape))
        conv.bias.copy_(torch.as_tensor(bias, dtype=torch.float32).reshape(conv.bias.shape))


def grid(rows) -> torch.Tensor:
    """A (1, 1, H, W) tensor."""
    return torch.tensor(rows, dtype=torch.float32)[None, None]


# ---- attention gate, eqs. (2)-(5) ---------------------------------------------------------------


def test_attention_gate_equations_2_to_5_by_hand():
    gate = AttentionGate(decoder_channels=1, skip_channels=1)
    set_conv(gate.conv_h, [2.0], [0.0])  # eq. (2): F_H = Conv1x1(F_h) = 2 F_h
    set_conv(gate.conv_l, [1.0], [-1.0])  # eq. (3): F_L = Conv1x1(F_l) = F_l - 1
    set_conv(gate.conv_psi, [1.0], [-2.0])  # eq. (4): F_sigma = sigmoid(ReLU(F_H + F_L) - 2)
    f_h = grid([[1.0, -1.0], [0.5, 0.0]])  # decoder feature (already upsampled)
    f_l = grid([[2.0, 3.0], [-1.0, 1.0]])  # encoder skip feature

    # F_H = [[2, -2], [1, 0]], F_L = [[1, 2], [-2, 0]], F_H + F_L = [[3, 0], [-1, 0]]
    # ReLU -> [[3, 0], [0, 0]]; minus 2 -> [[1, -2], [-2, -2]]; sigmoid -> F_sigma
    f_sigma = [[sigmoid(1), sigmoid(-2)], [sigmoid(-2), sigmoid(-2)]]
    gated = [[f_sigma[0][0] * 2.0, f_sigma[0][1] * 3.0], [f_sigma[1][0] * -1.0, f_sigma[1][1] * 1.0]]  # F_sigma x F_l
    expected = torch.cat([grid(gated), grid([[2.0, -2.0], [1.0, 0.0]])], dim=1)  # eq. (5): Concat(F_sigma x F_l, F_H)
    torch.testing.assert_close(gate(f_h, f_l), expected)


# ---- HAPM, section 3.2.2 -----------------------------------------------------------------------


@pytest.fixture
def hapm():
    torch.manual_seed(0)
    config = HalsrConfig(hidden_sizes=[8, 16])
    module = HybridAttentionPoolingModule(config, channels=16).eval()
    with torch.no_grad():  # BatchNorm statistics that are not the identity, so nothing cancels by chance
        for bn in (m for m in module.modules() if isinstance(m, torch.nn.BatchNorm2d)):
            bn.running_mean.uniform_(-0.2, 0.2)
            bn.running_var.uniform_(0.5, 1.5)
    return module


def test_hapm_adds_its_four_fused_branches_to_the_input(hapm):
    """HAPM(x) = x + Fuse(Concat(ASPP(x), SPP(x), CA(x), SA(x))): four parallel branches, residual."""
    x = torch.randn(2, 16, 8, 8)
    with torch.no_grad():
        branches = [hapm.aspp(x), hapm.spp(x), hapm.channel_attention(x), hapm.spatial_attention(x)]
        assert [b.shape[1] for b in branches] == [4, 4, 16, 16]  # ASPP/SPP: channels // hapm_branch_ratio
        fused = hapm.fuse(torch.cat(branches, dim=1))
        assert fused.abs().sum() > 0
        torch.testing.assert_close(hapm(x), x + fused)


def test_hapm_channel_attention_is_cbam(hapm):
    """CA(x) = x * sigmoid(MLP(AvgPool(x)) + MLP(MaxPool(x))), one shared MLP."""
    ca = hapm.channel_attention
    assert isinstance(ca, ChannelAttention)
    x = torch.randn(2, 16, 5, 7)
    with torch.no_grad():
        weight = ca.mlp(x.mean(dim=(2, 3), keepdim=True)) + ca.mlp(x.amax(dim=(2, 3), keepdim=True))
        torch.testing.assert_close(ca(x), x * torch.sigmoid(weight))


def test_hapm_spatial_attention_is_cbam(hapm):
    """SA(x) = x * sigmoid(Conv7x7(Concat(mean over channels, max over channels)))."""
    sa = hapm.spatial_attention
    assert isinstance(sa, SpatialAttention) and sa.conv.kernel_size == (7, 7)
    x = torch.randn(2, 16, 5, 7)
    with torch.no_grad():
        descriptor = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        torch.testing.assert_close(sa(x), x * torch.sigmoid(sa.conv(descriptor)))


def test_hapm_aspp_is_a_1x1_and_dilated_3x3_convolutions(hapm):
    aspp = hapm.aspp
    assert isinstance(aspp, AtrousSpatialPyramidPooling)
    assert aspp.branches[0][0].kernel_size == (1, 1)
    assert [(b[0].kernel_size, b[0].dilation) for b in aspp.branches[1:]] == [((3, 3), (r, r)) for r in (1, 2, 4)]
    x = torch.randn(1, 16, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(aspp(x), aspp.project(torch.cat([b(x) for b in aspp.branches], dim=1)))


def test_hapm_spp_pools_to_grids_and_upsamples_bilinearly(hapm):
    spp = hapm.spp
    assert isinstance(spp, SpatialPyramidPooling) and spp.bins == [1, 2, 4]
    x = torch.randn(1, 16, 8, 8)
    with torch.no_grad():
        pooled = [F.interpolate(conv(F.adaptive_avg_pool2d(x, b)), size=(8, 8), mode="bilinear", align_corners=False)
                  for b, conv in zip(spp.bins, spp.reduce)]
        torch.testing.assert_close(spp(x), spp.project(torch.relu(torch.cat(pooled, dim=1))))


def test_every_decoder_block_and_the_bottleneck_have_hapm():
    model = HalsrForSemanticSegmentation(HalsrConfig(hidden_sizes=[4, 8, 8, 16, 16]))
    assert isinstance(model.halsr.bottleneck_hapm, HybridAttentionPoolingModule)
    assert all(isinstance(block.hapm, HybridAttentionPoolingModule) for block in model.halsr.decoder)
    assert all(isinstance(block.gate, AttentionGate) for block in model.halsr.decoder)


# ---- reconstruction, section 3.2.3 ---------------------------------------------------------------


def test_reconstruction_attention_squeeze_excite_bilinear_by_hand():
    """A 1-channel latent [0, 4]: attention map sigmoid(0) = 1/2, squeeze-and-excite weight
    sigmoid(0) = 1/2, so the class map is [0, 1] (+/- by the 1x1 classifier), upsampled
    bilinearly (half-pixel centres) from 2 to 4 columns: [0, 1/4, 3/4, 1]."""
    config = HalsrConfig(hidden_sizes=[1, 1], attention_reduction=8, id2label={0: "a", 1: "b"}, label2id={"a": 0, "b": 1})
    rec = ReconstructionModule(config, channels=1)
    set_conv(rec.attention, [0.0], [0.0])  # attention map = sigmoid(0) = 0.5
    for conv in (rec.squeeze_excite[1], rec.squeeze_excite[3]):  # SE: excite = sigmoid(FC(ReLU(FC(squeeze)))) = 0.5
        set_conv(conv, torch.zeros_like(conv.weight), torch.zeros_like(conv.bias))
    set_conv(rec.classifier, [[1.0], [-1.0]], [0.0, 0.0])
    latent = grid([[0.0, 4.0]])
    out = rec(latent, (1, 4))
    expected = torch.cat([grid([[0.0, 0.25, 0.75, 1.0]]), grid([[-0.0, -0.25, -0.75, -1.0]])], dim=1)
    torch.testing.assert_close(out, expected)


def test_reconstruction_is_attention_then_squeeze_excite_then_bilinear_class_maps():
    torch.manual_seed(0)
    rec = ReconstructionModule(HalsrConfig(hidden_sizes=[4, 16]), channels=16).eval()
    latent = torch.randn(2, 16, 3, 4)
    with torch.no_grad():
        attended = latent * torch.sigmoid(rec.attention(latent))  # 1x1 conv + sigmoid attention map, times the latent
        fc1, fc2 = rec.squeeze_excite[1], rec.squeeze_excite[3]
        excited = attended * torch.sigmoid(fc2(torch.relu(fc1(attended.mean(dim=(2, 3), keepdim=True)))))
        # the paper upsamples the SE map, then applies the 1x1 conv; both are linear: same result
        expected = rec.classifier(F.interpolate(excited, size=(12, 16), mode="bilinear", align_corners=False))
        torch.testing.assert_close(rec(latent, (12, 16)), expected, atol=1e-5, rtol=1e-5)


def test_logits_are_the_decoder_head_plus_the_reconstruction_map():
    """Element-wise addition of the network's output map and the reconstruction map (section 3.2)."""
    torch.manual_seed(0)
    model = HalsrForSemanticSegmentation(HalsrConfig(hidden_sizes=[4, 8, 8, 16, 16])).eval()
    x = torch.randn(1, 1, 32, 48)  # a multiple of 16: no padding
    with torch.no_grad():
        hidden = model.halsr(x)
        head, reconstruction = model.head(hidden.last_hidden_state), model.reconstruction(hidden.latent, (32, 48))
        assert reconstruction.abs().sum() > 0
        torch.testing.assert_close(model(x).logits, head + reconstruction)


# ---- loss, eqs. (6)-(8) ------------------------------------------------------------------------


#: Two pixels, two classes. Pixel 1: logits (ln 3, 0) -> softmax (3/4, 1/4), label 0.
#: Pixel 2: logits (0, 0) -> (1/2, 1/2), label 1.
LOGITS = torch.tensor([[[[math.log(3.0), 0.0]], [[0.0, 0.0]]]])  # (B=1, K=2, H=1, W=2)
LABELS = torch.tensor([[[0, 1]]])
#: eq. (6) over the N = 2 pixels x 2 classes of the one-hot target y and the probabilities p:
#: -(1/N) sum [y log p + (1 - y) log(1 - p)]
BCE = -(math.log(3 / 4) + math.log(1 - 1 / 4) + math.log(1 - 1 / 2) + math.log(1 / 2)) / 4
#: eq. (7) per class with eps = 1 (dice_smooth), averaged over the classes:
#: class 0: sum y p = 3/4, sum y = 1, sum p = 3/4 + 1/2; class 1: sum y p = 1/2, sum y = 1, sum p = 1/4 + 1/2
DICE = 1 - ((2 * 3 / 4 + 1) / (1 + 5 / 4 + 1) + (2 * 1 / 2 + 1) / (1 + 3 / 4 + 1)) / 2


def test_loss_bce_term_is_equation_6():
    assert bce_dice_loss(LOGITS, LABELS, alpha=1.0, beta=0.0).item() == pytest.approx(BCE, abs=1e-6)


def test_loss_dice_term_is_equation_7():
    assert bce_dice_loss(LOGITS, LABELS, alpha=0.0, beta=1.0).item() == pytest.approx(DICE, abs=1e-6)


def test_loss_is_equation_8_with_the_papers_weights():
    config = HalsrConfig()
    assert (config.loss_alpha, config.loss_beta, config.dice_smooth) == (0.5, 0.5, 1.0)  # section 4.3
    assert bce_dice_loss(LOGITS, LABELS).item() == pytest.approx(0.5 * BCE + 0.5 * DICE, abs=1e-6)
    assert bce_dice_loss(LOGITS, LABELS, alpha=0.3, beta=0.7).item() == pytest.approx(0.3 * BCE + 0.7 * DICE, abs=1e-6)
