"""Attribution methods (issue 16): captum as the oracle where it has the method, each CAM
against a direct implementation of its paper's formula, the identities that must hold, circular
padding, the gridization's adjoint, the stores, the sanity checks and the ranking table."""

from __future__ import annotations

import csv
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from glasscam.analysis.cnn import attribution as attr
from glasscam.analysis.cnn.gradcam import grad_cam, run_attributions, run_gradcam
from glasscam.analysis.cnn.network import GLASS, LIQUID, CNNConfig, GlassCNN
from glasscam.insitu.gridize import deposition_weights, gridize, inverse_gridize
from glasscam.insitu.schema import CLASSES, ParameterMismatchError, open_gradcam_store

from glasscam.testing import synthetic_samples_store

GRID = 10
CAMS = ("gradcam", "gradcam++", "hirescam", "xgradcam", "layercam")
INPUTS = ("saliency", "input-x-gradient", "integrated-gradients")


def _net(head: str = "fc", seed: int = 0) -> GlassCNN:
    """A small network with input standardisation (what the presets train)."""
    torch.manual_seed(seed)
    cfg = CNNConfig(grid=GRID, conv_channels=(4, 6, 8), fc_width=8, dropout=0.0, head=head,
                    input_mean=(0.5, 0.3), input_std=(0.4, 0.25))
    return GlassCNN(cfg).eval()


def _images(n: int = 4, seed: int = 0) -> tuple[torch.Tensor, list]:
    rng = np.random.default_rng(seed)
    images, configs = [], []
    for _ in range(n):
        pos = rng.random((60, 2)) * 7.0
        types = (rng.random(60) < 0.35).astype(np.int8)
        images.append(gridize(pos, types, (7.0, 7.0), GRID, 2))
        configs.append((pos, types, np.array([7.0, 7.0])))
    return torch.from_numpy(np.stack(images)), configs


def _close(mine: torch.Tensor, ref: torch.Tensor, tol: float = 1e-5) -> None:
    """Equal to ``tol`` relative to the reference's largest magnitude (maps of an untrained
    network are O(1e-3): an absolute 1e-5 would say nothing)."""
    scale = float(ref.abs().max())
    assert scale > 0, "a trivial map tests nothing"
    torch.testing.assert_close(mine / scale, ref / scale, atol=tol, rtol=tol)


# ---- captum is the oracle where it has the method ----------------------------------------------


@pytest.mark.parametrize("layer", attr.LAYERS)
@pytest.mark.parametrize("target", [GLASS, LIQUID])
def test_gradcam_equals_captum_at_every_layer(layer, target):
    from captum.attr import LayerGradCam

    model, (x, _) = _net(), _images()
    mine, logits = attr.cam(model, x, "gradcam", target, layer)
    ref = LayerGradCam(model, model.get_submodule(layer)).attribute(
        x, target=target, relu_attributions=True)
    _close(mine, ref[:, 0].detach())
    torch.testing.assert_close(logits, model(x).detach())
    # the kernel of the registry is the stage's grad_cam, bit for bit
    old, _ = grad_cam(model, x, target, model.get_submodule(layer))
    assert torch.equal(mine, old)


@pytest.mark.filterwarnings("ignore:Input Tensor 0 did not already require gradients")
@pytest.mark.parametrize("target", [GLASS, LIQUID])
def test_input_space_methods_equal_captum(target):
    from captum.attr import InputXGradient, IntegratedGradients, Saliency

    model, (x, _) = _net(), _images()
    sal, _ = attr.attribute(model, x, "saliency", target)
    _close(sal, Saliency(model).attribute(x, target=target, abs=True).detach())
    ixg, _ = attr.attribute(model, x, "input-x-gradient", target)
    _close(ixg, InputXGradient(model).attribute(x, target=target).detach())
    base = attr.uniform_baseline(x)
    for steps in (attr.IG_STEPS, 7):
        ig, logits = attr.attribute(model, x, "integrated-gradients", target, steps=steps)
        ref = IntegratedGradients(model).attribute(x, baselines=base, target=target,
                                                   n_steps=steps, method="gausslegendre")
        _close(ig, ref.detach())
        torch.testing.assert_close(logits, model(x).detach())
    zero, _ = attr.integrated_gradients(model, x, target, 9, baseline="zero")
    _close(zero, IntegratedGradients(model).attribute(x, target=target, n_steps=9).detach())


def test_integrated_gradients_chunks_and_completeness():
    """Chunked passes give the same map; the uniform baseline keeps each channel's particle
    count; completeness: Σ IG = y(x) − y(x̄) (to quadrature accuracy)."""
    model, (x, _) = _net(head="gap", seed=3), _images(6, seed=2)
    with torch.no_grad():  # a non-linear enough network: bigger weights
        for p in model.parameters():
            p.mul_(3.0)
    base = attr.uniform_baseline(x)
    torch.testing.assert_close(base.sum(dim=(2, 3)), x.sum(dim=(2, 3)))
    full, _ = attr.integrated_gradients(model, x, GLASS, 64)
    old = attr.IG_CHUNK
    try:
        attr.IG_CHUNK = 7  # several passes, a partial last one
        chunked, _ = attr.integrated_gradients(model, x, GLASS, 64)
    finally:
        attr.IG_CHUNK = old
    torch.testing.assert_close(chunked, full, atol=1e-6, rtol=1e-5)
    with torch.no_grad():
        gap = model(x)[:, GLASS] - model(base)[:, GLASS]
    ig, _ = attr.integrated_gradients(model, x, GLASS, attr.IG_STEPS)
    np.testing.assert_allclose(ig.sum(dim=(1, 2, 3)).numpy(), gap.numpy(),
                               rtol=1e-2, atol=1e-3 * float(gap.abs().max()))


# ---- the other CAMs against their papers' formulas, written out --------------------------------


def _manual_a_g(model: GlassCNN, x: torch.Tensor, layer: str, target: int):
    """A and ∂y/∂A at ``layer`` by a forward written out with functional ReLUs (no hooks)."""
    h = (x - model.input_mean) * model.input_scale
    cut = None
    for k, conv in enumerate((model.conv1, model.conv2, model.conv3), start=1):
        h = torch.relu(conv(h))
        if layer == f"act{k}":
            h = h.detach().requires_grad_(True)
            cut = h
    y = model.head(h)
    (g,) = torch.autograd.grad(y[:, target].sum(), cut)
    return cut.detach().double().numpy(), g.double().numpy()


def _formula(name: str, a: np.ndarray, g: np.ndarray) -> np.ndarray:
    """The formulas of the four papers, one image and one feature map at a time."""
    b, m = a.shape[:2]
    out = np.zeros((b,) + a.shape[2:])
    for i in range(b):
        for k in range(m):
            A, G = a[i, k], g[i, k]
            if name == "gradcam++":  # Chattopadhay et al., eqs. 19 and 10
                den = 2 * G**2 + A.sum() * G**3
                alpha = np.divide(G**2, den, out=np.zeros_like(G), where=den != 0)
                out[i] += (alpha * np.maximum(G, 0)).sum() * A
            elif name == "hirescam":  # Draelos & Carin: element-wise gradient x activation
                out[i] += G * A
            elif name == "xgradcam":  # Fu et al., eq. 11
                out[i] += (A * G).sum() / A.sum() * A if A.sum() != 0 else 0.0
            elif name == "layercam":  # Jiang et al., eqs. 3-4
                out[i] += np.maximum(G, 0) * A
    return np.maximum(out, 0)


@pytest.mark.parametrize("layer", attr.LAYERS)
@pytest.mark.parametrize("name", ["gradcam++", "hirescam", "xgradcam", "layercam"])
def test_cams_match_their_formulas(name, layer):
    model, (x, _) = _net(seed=1), _images(seed=1)
    a, g = _manual_a_g(model, x, layer, GLASS)
    ref = torch.from_numpy(_formula(name, a, g))
    mine, _ = attr.cam(model, x, name, GLASS, layer)
    _close(mine.double(), ref)


def test_identities():
    """HiResCAM = Grad-CAM when the gradient is constant over the grid (a GAP head); on the
    kernels: LayerCAM = HiResCAM when every gradient is ≥ 0, XGrad-CAM = Grad-CAM when each
    feature map is constant over the grid, all CAMs ≥ 0."""
    model, (x, _) = _net(head="gap", seed=2), _images(seed=3)
    hires, _ = attr.cam(model, x, "hirescam")
    grad, _ = attr.cam(model, x, "gradcam")
    _close(hires, grad, 1e-6)
    gen = torch.Generator().manual_seed(0)
    a = torch.rand(3, 5, 6, 6, generator=gen, dtype=torch.float64)
    g = torch.randn(3, 5, 6, 6, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(attr.layercam_map(a, g.abs()), attr.hirescam_map(a, g.abs()))
    flat = a.mean(dim=(2, 3), keepdim=True).expand_as(a)
    torch.testing.assert_close(attr.xgradcam_map(flat, g), attr.gradcam_map(flat, g))
    for kernel in attr.CAM_KERNELS.values():
        assert float(kernel(a, g).min()) >= 0
    # zero feature maps and zero gradients give zero, never NaN
    z = torch.zeros_like(a)
    for kernel in attr.CAM_KERNELS.values():
        assert torch.equal(kernel(z, g), torch.zeros(3, 6, 6, dtype=torch.float64))
        assert torch.equal(kernel(a, z), torch.zeros(3, 6, 6, dtype=torch.float64))


def test_hooks_removed_and_model_restored():
    model, (x, _) = _net(), _images()
    model.train()
    flags = [p.requires_grad for p in model.parameters()]
    for name in attr.METHODS:
        attr.attribute(model, x, name, GLASS, steps=3)
        assert model.training and [p.requires_grad for p in model.parameters()] == flags
    for m in model.modules():
        assert not m._forward_hooks and not m._backward_hooks
    with pytest.raises(ValueError):
        attr.attribute(model, torch.rand(1, 2, GRID + 1, GRID + 1), "hirescam")
    assert all(not m._forward_hooks for m in model.modules()) and model.training
    with pytest.raises(ValueError, match="unknown attribution method 'gradcam\\+'"):
        attr.attribute(model, x, "gradcam+")
    with pytest.raises(ValueError, match="unknown layer 'act4'"):
        attr.attribute(model, x, "hirescam", layer="act4")
    with pytest.raises(ValueError, match="no layer"):
        attr.attribute(model, x, "saliency", layer="act2")
    assert attr.check_layer("conv2") == "act2"


# ---- circular padding: rolling the input rolls the maps ---------------------------------------


def _roll_all(model, names, layers):
    x, _ = _images(3, seed=4)
    for name in names:
        for layer in (layers if name in CAMS else [None]):
            amap, _ = attr.attribute(model, x, name, GLASS, layer, steps=8)
            dims = (-2, -1)
            for shifts in ((3, 0), (0, 5), (2, 7)):
                rolled, _ = attr.attribute(model, torch.roll(x, shifts, (2, 3)), name, GLASS,
                                           layer, steps=8)
                _close(rolled, torch.roll(amap, shifts, dims), 1e-5)


def test_rolling_the_input_rolls_every_map():
    """A GAP head makes the whole network translation equivariant (circular padding, no
    pooling, a mean over the grid): every method's map rolls with the input, at every layer."""
    _roll_all(_net(head="gap", seed=5), attr.METHODS, attr.LAYERS)


def test_rolling_with_the_papers_dense_head():
    """The paper's dense head has a fixed spatial gradient ∂y/∂A at the last conv layer: the
    maps whose weights are sums over the grid of functions of g alone (Grad-CAM, Grad-CAM++)
    still roll exactly there; the others, and every map at act1/act2 (whose gradient carries
    the fixed pattern through ReLU masks that move), do not, and are not asserted."""
    _roll_all(_net(head="fc", seed=6), ("gradcam", "gradcam++"), ("act3",))


# ---- particles: the adjoint of the gridization ------------------------------------------------


@pytest.mark.parametrize("kernel", ["cic", "ngp"])
def test_particle_attribution_is_the_adjoint(kernel):
    """⟨G(q), a⟩ = Σ_i q_i Γ_i(a) for any particle weights q and any C-channel map a: each
    particle reads its own species' channel; one channel = the inverse gridization."""
    rng = np.random.default_rng(7)
    box = np.array([8.0, 8.0])
    pos, types = rng.random((150, 2)) * box, (rng.random(150) < 0.4).astype(np.int8)
    m = 9
    a = rng.normal(size=(2, m, m))
    q = rng.normal(size=150)
    idx, w = deposition_weights(pos, box, m, kernel)
    image = np.zeros(2 * m * m)
    np.add.at(image, (types[:, None] * m * m + idx).ravel(), (w * q[:, None]).ravel())
    gamma = attr.particle_attribution(a, pos, types, box, kernel)
    assert np.dot(image, a.ravel()) == pytest.approx(np.dot(q, gamma), rel=1e-12)
    np.testing.assert_allclose(attr.particle_attribution(a[:1], pos, None, box, kernel),
                               inverse_gridize(a[0], pos, box, kernel), rtol=1e-12)
    np.testing.assert_allclose(attr.particle_attribution(a[0], pos, None, box, kernel),
                               inverse_gridize(a[0], pos, box, kernel), rtol=1e-12)
    # a map on the other species' channel only is invisible to this species
    only_b = np.stack([np.zeros((m, m)), np.ones((m, m))])
    gamma = attr.particle_attribution(only_b, pos, types, box, kernel)
    np.testing.assert_allclose(gamma, types.astype(float), atol=1e-12)


def test_store_names():
    assert attr.store_name() == "gradcam.zarr"
    assert attr.store_name("gradcam++") == "gradcam_gradcampp.zarr"
    assert attr.store_name("hirescam", "act2") == "gradcam_hirescam_act2.zarr"
    assert attr.store_name("saliency", None, "cascade:conv3") == \
        "gradcam_saliency_cascade-conv3.zarr"
    assert attr.store_name("gradcam", "act3", "shuffled-labels") == \
        "gradcam_gradcam_shuffled-labels.zarr"
    assert attr.store_path("/r/gc", "gradcam") == attr.Path("/r/gc")  # --out kept as given
    assert attr.store_path("/r/gc.zarr", "layercam", "act1") == \
        attr.Path("/r/gc_layercam_act1.zarr")


def test_cli_names_match_the_module():
    from glasscam.analysis.cli import cnn

    assert cnn.ATTRIBUTION_METHODS == tuple(attr.METHODS)
    assert cnn.ATTRIBUTION_LAYERS == attr.LAYERS
    assert cnn.IG_STEPS == attr.IG_STEPS
    assert cnn.RANDOMIZATIONS == ("cascade", *(f"cascade:{m}" for m in attr.CASCADE),
                                  attr.SHUFFLED)


# ---- randomised weights -------------------------------------------------------------------------


def test_cascade_is_seeded_and_cumulative():
    base = _net(seed=8)
    one = attr.randomize_cascade(_net(seed=8), "fc", seed=1)
    two = attr.randomize_cascade(_net(seed=8), "conv3", seed=1)
    sb, s1, s2 = base.state_dict(), one.state_dict(), two.state_dict()
    for key in sb:
        top = key.split(".")[0]
        if top in ("output", "fc"):
            assert not torch.equal(s1[key], sb[key]) and torch.equal(s1[key], s2[key])
        elif top == "conv3":
            assert torch.equal(s1[key], sb[key]) and not torch.equal(s2[key], sb[key])
        else:
            assert torch.equal(s1[key], sb[key]) and torch.equal(s2[key], sb[key])
    state = torch.get_rng_state()
    attr.randomize_cascade(_net(seed=8), "conv1", seed=1)
    assert torch.equal(state, torch.get_rng_state())  # the global RNG untouched


# ---- the stores ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from glasscam.analysis.cnn.train import TrainConfig, train_ensemble

    folder = tmp_path_factory.mktemp("attr")
    store = folder / "samples.zarr"
    synthetic_samples_store(store, nsamples=20, natoms=48, grid=8, seed=5)
    train_ensemble(store, folder / "model", 2,
                   TrainConfig(epochs=3, batch_size=8, seed=0, threads=2, standardize=True))
    return store, folder / "model"


def test_stores_of_every_method(trained, tmp_path):
    """One store per method × layer beside gradcam.zarr; the paper's store keeps exactly its
    parameters; an input-space store's Γ reads each particle's species channel of the stored
    method's map; parameters are checked on resume; the cost is recorded."""
    import zarr
    from glasscam.analysis.cnn.train import load_members

    store, model_dir = trained
    out = tmp_path / "gradcam.zarr"
    summaries = run_attributions(store, model_dir, out, methods="all", layers="act3,act1",
                                 batch_size=4, device="cpu", ig_steps=5, echo=lambda s: None)
    names = sorted(p.name for p in tmp_path.glob("gradcam*.zarr"))
    assert len(summaries) == len(names) == 5 * 2 + 3
    assert "gradcam_gradcam_act1.zarr" in names and "gradcam_saliency.zarr" in names
    paper = open_gradcam_store(out)
    assert set(paper.attrs["parameters"]) == {"samples", "model", "members", "split",
                                              "target_class", "layer", "kernel", "grid",
                                              "nsamples", "natoms"}
    assert paper.attrs["cost"]["ms_per_sample"] > 0 and paper.attrs["cost"]["members"] == 2
    samples = zarr.open_group(store, mode="r")
    test = np.flatnonzero(np.asarray(samples["split"][:]) == 2)
    s = int(test[0])
    nets = [m for m, _ in load_members(model_dir)]
    for name in ("integrated-gradients", "hirescam"):
        layer = None if name in INPUTS else "act1"
        root = open_gradcam_store(attr.store_path(out, name, layer))
        params = root.attrs["parameters"]
        assert params["method"] == name and params["layer"] == (layer or "input")
        assert (params.get("ig_steps") == 5) == (name == "integrated-gradients")
        for cls in CLASSES:
            x = torch.from_numpy(np.asarray(samples[f"{cls}/image"][s:s + 1]))
            pos, box = samples[f"{cls}/positions"][s], samples[f"{cls}/box"][s]
            types = samples[f"{cls}/types"][s]
            members = []
            for net in nets:
                amap, _ = attr.attribute(net, x, name, GLASS, layer, steps=5)
                members.append(attr.particle_attribution(amap[0].numpy(), pos, types, box))
                shown = attr.display_map(amap)[0].numpy()
            np.testing.assert_allclose(root[f"{cls}/gamma_members"][s], np.stack(members),
                                       rtol=1e-4, atol=1e-6 * np.abs(members).max())
            assert root[f"{cls}/cam"].shape[1:] == shown.shape
    with pytest.raises(ParameterMismatchError, match="ig_steps"):
        run_attributions(store, model_dir, out, methods="integrated-gradients", device="cpu",
                         ig_steps=6, echo=lambda s: None)
    with pytest.raises(ValueError, match="unknown attribution method"):
        run_attributions(store, model_dir, out, methods="gradcam,grad-cam", device="cpu")


def test_sanity_stores_and_verdicts(trained, tmp_path):
    """Cascading randomisation and shuffled labels write their stores; the CAM of a randomised
    network differs from the trained one (ρ < 0.5 on the test store) or the check reports
    the method as failing — never both passing and unchanged (|ρ|: an inverted map has not
    changed)."""
    from glasscam.analysis.cnn.train import load_model
    from glasscam.analysis.correlate import attribution_ranking as ar
    from glasscam.analysis.correlate.tables import CorrelateOptions
    from glasscam.insitu.schema import open_samples_store

    store, model_dir = trained
    out = tmp_path / "gradcam.zarr"
    run_attributions(store, model_dir, out, methods="gradcam,hirescam,saliency",
                     randomize="cascade:output,cascade:conv1,shuffled-labels", batch_size=8,
                     device="cpu", echo=lambda s: None)
    shuffled = tmp_path / "gradcam_model_shuffled-labels"
    assert (shuffled / "ensemble.json").exists()
    net, ckpt = load_model(shuffled / "member1")
    assert ckpt["shuffled_labels"]["seed"] == 1 and ckpt["epoch"] == 3
    root = open_gradcam_store(tmp_path / "gradcam_hirescam_cascade-conv1.zarr")
    assert root.attrs["parameters"]["randomize"] == "cascade:conv1"
    inp = SimpleNamespace(run=tmp_path, samples=open_samples_store(store), samples_path=store,
                          natoms=48, propensity_paths=[], system="kam")
    rank_rows, sanity_rows = ar.ranking(inp, CorrelateOptions(split="test"), echo=lambda s: None)
    assert {r["store"] for r in rank_rows} == {"gradcam.zarr", "gradcam_hirescam.zarr",
                                               "gradcam_saliency.zarr"}
    paper_row = next(r for r in rank_rows if r["store"] == "gradcam.zarr")
    assert paper_row["agreement_with_gradcam"] == 1.0 and paper_row["ms_per_sample"] > 0
    assert len(sanity_rows) == 3 * 3
    for r in sanity_rows:
        assert r["samples"] + r["constant_maps"] > 0
        changed = abs(r["rank_correlation"]) < ar.RHO_MAX
        assert changed or (not r["passes"] and "survives" in r["verdict"]), r
        assert r["passes"] == changed  # no propensity: only the map comparison decides
    # the trained networks cannot be passed off as shuffled-label ones
    with pytest.raises(ValueError, match="not networks trained on shuffled labels"):
        run_gradcam(store, model_dir, tmp_path / "x.zarr", device="cpu",
                    randomize="shuffled-labels")
    verdicts = ar.method_verdicts(sanity_rows)
    assert set(verdicts) == {("gradcam", "act3"), ("hirescam", "act3"), ("saliency", "input")}
    # a resumed shuffled-label training from another network is refused
    ckpt_path = shuffled / "member0" / "checkpoint.pt"
    data = torch.load(ckpt_path, weights_only=True)
    data["shuffled_labels"]["sha256"] = "0" * 64
    torch.save(data, ckpt_path)
    with pytest.raises(ValueError, match="shuffled_labels"):
        attr.train_shuffled_labels(store, model_dir, shuffled, "cpu", echo=lambda s: None)


def test_holm_adjustment():
    from glasscam.analysis.correlate.attribution_ranking import holm

    got = holm([0.01, 0.04, float("nan"), 0.03, 0.005])
    np.testing.assert_allclose(got, [0.03, 0.06, np.nan, 0.06, 0.02], rtol=1e-12)
    assert holm([0.6, 0.7]).tolist() == [1.0, 1.0]


def test_shuffled_label_table():
    table = attr.shuffled_label_table(10, np.array([1, 4, 6, 7]), seed=3)
    codes = np.r_[[1, 4, 6, 7], [11, 14, 16, 17]]
    assert sorted(table[codes].tolist()) == [0, 0, 0, 0, 1, 1, 1, 1]
    assert np.all(np.delete(table, codes) == -1)
    assert np.array_equal(table, attr.shuffled_label_table(10, np.array([1, 4, 6, 7]), 3))


# ---- the ranking, scored like Γ -----------------------------------------------------------------


def _read(path):
    with open(path) as fh:
        return list(csv.DictReader(fh))


def test_ranking_and_sanity_tables(tmp_path):
    """On a run with a planted propensity (test_correlation.make_run: Γ = −volume, Δ follows
    the volume): a copy of Γ agrees with Grad-CAM at 1 and ranks with it, noise ranks last and
    is not significant; a randomised store of noise passes the check, one that kept Γ fails."""
    import zarr
    from glasscam.analysis.correlate.tables import CorrelateOptions, run_correlate
    from glasscam.insitu.schema import create_gradcam_store
    from test_correlation import make_run

    run = make_run(tmp_path, nsamples=3)
    gc = zarr.open_group(run / "gradcam.zarr", mode="r")
    rng = np.random.default_rng(0)

    def add(name, params, gamma_of):
        g = create_gradcam_store(run / name, {"nsamples": 3, "natoms": 400, "grid": 8,
                                              **params})
        for cls in CLASSES:
            g[f"{cls}/gamma"][:] = gamma_of(np.asarray(gc[f"{cls}/gamma"][:]))
            g[f"{cls}/correct"][:] = True
            g[f"{cls}/done"][:] = True
        g.attrs["cost"] = {"ms_per_sample": 1.5, "device": "cpu", "threads": 2}

    add("gradcam_hirescam.zarr", {"method": "hirescam", "layer": "act3"}, lambda g: 2 * g + 1)
    add("gradcam_saliency.zarr", {"method": "saliency", "layer": "input"},
        lambda g: rng.random(g.shape))
    add("gradcam_gradcam_cascade-conv1.zarr",
        {"method": "gradcam", "layer": "act3", "randomize": "cascade:conv1"},
        lambda g: rng.random(g.shape))
    add("gradcam_hirescam_cascade-output.zarr",
        {"method": "hirescam", "layer": "act3", "randomize": "cascade:output"},
        lambda g: g + 1e-3 * rng.random(g.shape))
    opts = CorrelateOptions(xi_grid=(0.0, 1.0, 2.0), split="all", dr=0.25, r_max_samples=3.0,
                            null_draws=99, bootstrap=20)
    notes = []
    written = {p.name for p in run_correlate(run, opts, echo=notes.append)}
    assert {"attribution_ranking.csv", "attribution_sanity.csv"} <= written
    rows = _read(run / "tables" / "attribution_ranking.csv")
    assert set(rows[0]) == set(__import__(
        "glasscam.analysis.correlate.attribution_ranking", fromlist=["x"]).RANKING_COLUMNS)
    mx = {r["store"]: r for r in rows if r["delta_target"] == "max"}
    assert set(mx) == {"gradcam.zarr", "gradcam_hirescam.zarr", "gradcam_saliency.zarr"}
    assert float(mx["gradcam_hirescam.zarr"]["agreement_with_gradcam"]) == pytest.approx(1.0)
    assert float(mx["gradcam_hirescam.zarr"]["c_mean"]) == pytest.approx(
        float(mx["gradcam.zarr"]["c_mean"]), abs=1e-9)  # same scores up to an affine map
    assert mx["gradcam_saliency.zarr"]["rank"] == "3"
    assert float(mx["gradcam.zarr"]["p_value"]) < 0.05
    assert float(mx["gradcam_saliency.zarr"]["p_value"]) > 0.05
    assert float(mx["gradcam_saliency.zarr"]["p_holm"]) >= float(
        mx["gradcam_saliency.zarr"]["p_value"])
    assert float(mx["gradcam_saliency.zarr"]["ms_per_sample"]) == 1.5
    ceiling = float(mx["gradcam.zarr"]["noise_ceiling"])
    assert float(mx["gradcam.zarr"]["fraction_of_ceiling"]) == pytest.approx(
        float(mx["gradcam.zarr"]["c_mean"]) / ceiling)
    sanity = {r["store"]: r for r in _read(run / "tables" / "attribution_sanity.csv")}
    assert sanity["gradcam_gradcam_cascade-conv1.zarr"]["passes"] == "True"
    kept = sanity["gradcam_hirescam_cascade-output.zarr"]
    assert kept["passes"] == "False" and "survives" in kept["verdict"] \
        and "still significant" in kept["verdict"]
    assert any("hirescam (act3) FAILS the sanity check" in n for n in notes)
    # the report's section: the table, the verdicts, the maps side by side
    from glasscam.analysis.report import html

    rep = html.Report(run)
    html.attribution_section(rep, "kam")
    (title, body), = rep.sections
    assert "Which attribution" in title and "FAILS" in body and "saliency" in body
    assert {p.name for p in rep.figures} >= {"attribution_maps_sample0.png",
                                             "attribution_particles_sample0.png"}
    assert any("fail the randomisation sanity check" in c for c in rep.cautions)
    # without rival stores nothing new is written (the paper's run is unchanged)
    for p in run.glob("gradcam_*.zarr"):
        import shutil

        shutil.rmtree(p)
    written = {p.name for p in run_correlate(run, opts, echo=lambda s: None)}
    assert "attribution_ranking.csv" not in written


def test_presets_pass_methods_and_check_them(tmp_path):
    """A preset's `methods` list reaches `glasscam gradcam` comma-separated; a method that
    does not exist is an error naming the file before anything runs; the pipeline moves the
    other stores with gradcam.zarr when the stage reruns."""
    from glasscam.analysis.pipeline.presets import PresetError, load_preset
    from glasscam.analysis.pipeline.runner import OUTPUTS, plan

    stages = {s.name: s for s in plan(tmp_path / "run", load_preset("tiny"), None)}
    argv = stages["gradcam"].commands[0]
    assert argv[argv.index("--methods") + 1] == "gradcam,hirescam,integrated-gradients"
    assert "gradcam_*" in OUTPUTS["gradcam"]
    bad = tmp_path / "bad.toml"
    bad.write_text('[gradcam]\nmethods = ["gradcam", "grad-cam++"]\n')
    with pytest.raises(PresetError, match=r"bad\.toml: \[gradcam\].*grad-cam\+\+"):
        plan(tmp_path / "run", load_preset(str(bad)), None)
