"""GeoAdaLNMLP: shapes, the fused Jacobian, and loading PLONK checkpoints (a random state dict in PLONK's layout)."""

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch.func import jacfwd, vmap

from geo_models.flow import GeoAdaLNMLP, SphereFlowPipeline
from geo_models.testing import tiny_sphere_flow_pipeline

DIM, DEPTH, EXPANSION, COND = 32, 3, 2, 12


def plonk_layout(dim=DIM, depth=DEPTH, expansion=EXPANSION, cond_dim=COND, input_dim=3) -> dict[str, tuple]:
    """PLONK's ``GeoAdaLNMLP`` state-dict keys and shapes (plonk/models/networks/mlp.py, diff-plonk 0.4)."""
    c = dim // 4  # TimeEmbedder("positional", dim // 4, 1000, expansion=4)
    layout = {
        "time_embedder.encode_time.freqs": (c // 2,),
        "time_embedder.map_time.0.weight": (4 * c, c),
        "time_embedder.map_time.0.bias": (4 * c,),
        "time_embedder.map_time.2.weight": (4 * c, 4 * c),
        "time_embedder.map_time.2.bias": (4 * c,),
        "cond_mapper.weight": (dim, cond_dim),
        "cond_mapper.bias": (dim,),
        "initial_mapper.weight": (dim, input_dim),
        "initial_mapper.bias": (dim,),
        "final_adaln.1.weight": (2 * dim, dim),
        "final_adaln.1.bias": (2 * dim,),
        "final_linear.weight": (input_dim, dim),
        "final_linear.bias": (input_dim,),
    }
    for i in range(depth):  # FusedMLP = Sequential(Linear, GELU, Dropout, Linear); ada_map = Sequential(SiLU, Linear)
        layout |= {
            f"blocks.{i}.mlp.0.weight": (expansion * dim, dim),
            f"blocks.{i}.mlp.0.bias": (expansion * dim,),
            f"blocks.{i}.mlp.3.weight": (dim, expansion * dim),
            f"blocks.{i}.mlp.3.bias": (dim,),
            f"blocks.{i}.ada_map.1.weight": (3 * dim, dim),
            f"blocks.{i}.ada_map.1.bias": (3 * dim,),
        }
    return layout


def random_plonk_state(seed=0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    state = {k: torch.randn(shape, generator=g) * 0.3 for k, shape in plonk_layout().items()}
    c = DIM // 4  # EDM positional embedding: freqs_k = (1 / 10000) ** (2 k / C)
    state["time_embedder.encode_time.freqs"] = (1 / 10000) ** (2 * torch.arange(c // 2, dtype=torch.float32) / c)
    return state


def plonk_forward(sd, x, gamma, emb, depth=DEPTH):
    """PLONK's forward written from its source, on a bare state dict."""
    lin = lambda h, name: F.linear(h, sd[f"{name}.weight"], sd[f"{name}.bias"])  # noqa: E731
    t = torch.outer(gamma * 1000, sd["time_embedder.encode_time.freqs"])
    t = torch.cat([t.cos(), t.sin()], dim=1)
    t = (t - t.mean(-1, keepdim=True)) / t.std(-1, keepdim=True)
    t = lin(F.silu(lin(t, "time_embedder.map_time.0")), "time_embedder.map_time.2")
    cond = lin(emb, "cond_mapper") + t
    h = lin(x, "initial_mapper")
    for i in range(depth):
        g, mu, sigma = lin(F.silu(cond), f"blocks.{i}.ada_map.1").chunk(3, dim=-1)
        res = (1 + g) * F.layer_norm(h, (h.shape[-1],)) + mu
        h = h + lin(F.gelu(lin(res, f"blocks.{i}.mlp.0")), f"blocks.{i}.mlp.3") * sigma
    g, mu = lin(F.silu(cond), "final_adaln.1").chunk(2, dim=-1)
    return lin((1 + g) * F.layer_norm(h, (h.shape[-1],)) + mu, "final_linear")


def save_plonk_checkpoint(folder, state):
    folder.mkdir(parents=True, exist_ok=True)
    save_file(state, str(folder / "model.safetensors"))
    config = {"input_dim": 3, "dim": DIM, "depth": DEPTH, "expansion": EXPANSION, "cond_dim": COND}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_shapes_zero_init_and_state_dict_layout():
    net = GeoAdaLNMLP(dim=DIM, depth=DEPTH, expansion=EXPANSION, cond_dim=COND)
    out = net(torch.randn(5, 3), torch.rand(5), torch.randn(5, COND)).sample
    assert out.shape == (5, 3) and torch.equal(out, torch.zeros(5, 3))  # zero-initialised output layer
    assert net(torch.randn(2, 3), 0.5, torch.randn(2, COND), return_dict=False)[0].shape == (2, 3)
    layout = plonk_layout()
    assert {k: tuple(v.shape) for k, v in net.state_dict().items()} == layout
    freqs = "time_embedder.encode_time.freqs"
    assert torch.equal(net.state_dict()[freqs], random_plonk_state()[freqs])


def test_fused_jacobian_matches_autograd():
    net = tiny_sphere_flow_pipeline().network.double()
    x, emb = torch.randn(6, 3, dtype=torch.float64), torch.randn(6, 16, dtype=torch.float64)
    mods = net.modulations(net.embed_condition(emb), 0.37)
    out, jac = net.trunk_with_jacobian(x, mods)
    assert torch.allclose(out, net(x, 0.37, emb).sample, atol=1e-13)

    def f(xi, ei):
        return net(xi[None], 0.37, ei[None]).sample[0]

    assert torch.allclose(jac, vmap(jacfwd(f))(x, emb), atol=1e-12)
    assert jac.abs().max() > 0.05  # the tiny network is not trivially flat
    dirs = torch.randn(6, 2, 3, dtype=torch.float64)  # only K = 2 tangents: J @ dirs^T
    out2, ju = net.trunk_with_jacobian(x, mods, directions=dirs)
    assert ju.shape == (6, 3, 2) and torch.allclose(out2, out, atol=1e-13)
    assert torch.allclose(ju, jac @ dirs.transpose(1, 2), atol=1e-12)


def test_loads_plonk_checkpoint(tmp_path):
    state = random_plonk_state()
    folder = save_plonk_checkpoint(tmp_path / "PLONK_YFCC", state)
    net = GeoAdaLNMLP.from_plonk(folder)
    assert net.config.dim == DIM and net.config.depth == DEPTH and not net.training
    for k, v in net.state_dict().items():
        assert torch.equal(v, state[k]), k
    x = F.normalize(torch.randn(7, 3), dim=-1)
    gamma, emb = torch.rand(7), torch.randn(7, COND)
    with torch.no_grad():
        assert torch.allclose(net(x, gamma, emb).sample, plonk_forward(state, x, gamma, emb), atol=1e-5)
    # The pipeline recognises PLONK's format (config without model_type) and its objective from the name.
    pipe = SphereFlowPipeline.from_pretrained(folder)
    assert pipe.objective.name == "riemannian" and pipe.schedule.start == -7 and pipe.schedule.end == 3
    assert SphereFlowPipeline.from_plonk(save_plonk_checkpoint(tmp_path / "x_flow", state)).objective.name == "flow_r3"
    diffusion = SphereFlowPipeline.from_pretrained(save_plonk_checkpoint(tmp_path / "PLONK_OSV_5M_diffusion", state))
    assert diffusion.objective.name == "diffusion_r3"
    assert SphereFlowPipeline.from_pretrained(folder, objective="flow_r3").objective.name == "flow_r3"
    lp = pipe.log_prob(torch.tensor([[48.85, 2.35]]), image_embeddings=torch.randn(1, COND), atol=1e-4, rtol=1e-4)
    assert lp.shape == (1,) and torch.isfinite(lp).all()


def test_plonk_checkpoint_errors(tmp_path):
    state = random_plonk_state()
    del state["blocks.0.mlp.3.bias"]
    with pytest.raises(RuntimeError, match="blocks.0.mlp.3.bias"):
        GeoAdaLNMLP.from_plonk(save_plonk_checkpoint(tmp_path / "a", state))
    (tmp_path / "b").mkdir()
    with pytest.raises(ValueError, match="name_or_path"):
        GeoAdaLNMLP.from_plonk(tmp_path / "b")
    folder = save_plonk_checkpoint(tmp_path / "c", random_plonk_state())
    (folder / "config.json").write_text(json.dumps({"dim": DIM}))
    with pytest.raises(ValueError, match="PLONK"):
        GeoAdaLNMLP.from_plonk(folder)


@pytest.mark.parametrize(
    "kwargs, name",
    [({"dim": 30}, "dim"), ({"depth": 0}, "depth"), ({"cond_dim": 0}, "cond_dim"), ({"expansion": 0}, "expansion")],
)
def test_bad_config(kwargs, name):
    with pytest.raises(ValueError, match=name):
        GeoAdaLNMLP(**kwargs)


def test_forward_input_checks():
    net = GeoAdaLNMLP(dim=DIM, depth=1, expansion=1, cond_dim=COND)
    with pytest.raises(ValueError, match="sample"):
        net(torch.randn(2, 2), 0.5, torch.randn(2, COND))
    with pytest.raises(ValueError, match="image_embeddings"):
        net(torch.randn(2, 3), 0.5, torch.randn(2, COND + 1))
    with pytest.raises(ValueError, match="gamma"):
        net(torch.randn(2, 3), torch.rand(3), torch.randn(2, COND))
