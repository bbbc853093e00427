"""Grad-CAM (captum as oracle), hook hygiene, periodicity, inverse mapping, gradcam.zarr."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from captum.attr import LayerGradCam
from glasscam.analysis.cnn.gradcam import grad_cam, particle_scores, run_gradcam
from glasscam.analysis.cnn.network import GLASS, GRADCAM_LAYER, LIQUID, CNNConfig, GlassCNN
from glasscam.analysis.cnn.train import TrainConfig, train
from glasscam.insitu.gridize import deposition_weights, gridize
from glasscam.insitu.schema import CLASSES, GRADCAM_SCHEMA, SchemaError, open_gradcam_store

from glasscam.testing import synthetic_samples_store

GRID = 16


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("gc") / "samples.zarr"
    synthetic_samples_store(path, nsamples=20, natoms=64, grid=GRID, seed=3)
    return path


@pytest.fixture(scope="module")
def model_dir(store, tmp_path_factory):
    out = tmp_path_factory.mktemp("gc") / "model"
    train(store, out, TrainConfig(epochs=2, batch_size=8, seed=0, threads=2))
    return out


def _model_and_images(seed: int = 0):
    torch.manual_seed(seed)
    model = GlassCNN(CNNConfig(grid=GRID)).eval()
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(5):
        pos = rng.random((64, 2)) * 7.3
        images.append(gridize(pos, rng.integers(0, 2, 64), (7.3, 7.3), GRID, 2))
    return model, torch.from_numpy(np.stack(images))


@pytest.mark.parametrize("target", [GLASS, LIQUID])
def test_gradcam_equals_captum_layergradcam(target):
    model, x = _model_and_images()
    cam, logits = grad_cam(model, x, target)
    ref = LayerGradCam(model, model.get_submodule(GRADCAM_LAYER)).attribute(
        x, target=target, relu_attributions=True
    )
    assert cam.shape == (5, GRID, GRID) and ref.shape == (5, 1, GRID, GRID)
    assert float(cam.max()) > 0  # a non-trivial map
    torch.testing.assert_close(cam, ref[:, 0].detach(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logits, model(x).detach())


def test_hooks_removed_and_model_unchanged():
    model, x = _model_and_images(1)
    model.train()  # mode must come back as it was
    with torch.no_grad():
        model.eval()
        before = model(x)
        model.train()
    flags = [p.requires_grad for p in model.parameters()]
    grad_cam(model, x)
    assert model.training
    assert [p.requires_grad for p in model.parameters()] == flags
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), before, atol=0, rtol=0)
    # hooks go even when the forward fails
    with pytest.raises(ValueError):
        grad_cam(model, torch.rand(1, 2, GRID + 1, GRID + 1))
    assert not model.get_submodule(GRADCAM_LAYER)._forward_hooks


def test_rolling_the_input_rolls_the_cam():
    model, x = _model_and_images(2)
    cam, _ = grad_cam(model, x)
    for shifts, dims in (((3,), (2,)), ((5,), (3,)), ((2, 7), (2, 3))):
        rolled, _ = grad_cam(model, torch.roll(x, shifts, dims))
        torch.testing.assert_close(
            rolled, torch.roll(cam, shifts, tuple(d - 1 for d in dims)), atol=1e-6, rtol=1e-5
        )


@pytest.mark.parametrize("kernel", ["cic", "ngp"])
def test_inverse_mapping_delta_and_constant(kernel):
    rng = np.random.default_rng(4)
    box = np.array([9.0, 9.0])
    pos = rng.random((300, 2)) * box
    m = 12
    idx, w = deposition_weights(pos, box, m, kernel)
    own = idx[np.arange(len(pos)), np.argmax(w, axis=1)]  # each particle's own pixel
    for pixel in np.unique(own)[:10]:
        cam = np.zeros((m, m))
        cam.flat[pixel] = 1.0
        gamma = particle_scores(cam, pos, box, kernel)
        in_pixel = np.flatnonzero(own == pixel)
        assert np.argmax(gamma) in in_pixel
        assert gamma.max() == gamma[in_pixel].max() > 0
        # the particle geometrically inside the pixel is the one the deposition calls its own
        cell = np.floor(pos / box * m).astype(int)
        assert np.all(cell[in_pixel, 1] * m + cell[in_pixel, 0] == pixel)
    gamma = particle_scores(np.full((m, m), 0.37), pos, box, kernel)
    np.testing.assert_allclose(gamma, 0.37, rtol=1e-12)


def test_run_gradcam_store(store, model_dir, tmp_path):
    out = tmp_path / "gradcam.zarr"
    summary = run_gradcam(store, model_dir, out, split="test", batch_size=4, device="cpu")
    root = open_gradcam_store(out)
    assert root.attrs["schema"] == GRADCAM_SCHEMA
    params, prov = root.attrs["parameters"], root.attrs["model"]
    assert params["target_class"] == "glass" and params["split"] == "test"
    assert prov["epochs_trained"] == 2 and len(prov["sha256"]) == 64
    samples = zarr_open(store)
    test = np.flatnonzero(np.asarray(samples["split"][:]) == 2)
    assert summary["items"] == 2 * len(test)
    model, _ = _load(model_dir)
    for c, cls in enumerate(CLASSES):
        done = np.asarray(root[f"{cls}/done"][:])
        assert np.array_equal(np.flatnonzero(done), test)  # only the split, both classes
        s = int(test[0])
        image = torch.from_numpy(np.asarray(samples[f"{cls}/image"][s : s + 1]))
        cam, logits = grad_cam(model, image, GLASS)
        np.testing.assert_allclose(root[f"{cls}/cam"][s], cam[0].numpy(), atol=1e-6)
        np.testing.assert_allclose(root[f"{cls}/logits"][s], logits[0].numpy(), atol=1e-5)
        gamma = particle_scores(
            cam[0].numpy(), samples[f"{cls}/positions"][s], samples[f"{cls}/box"][s], "cic"
        )
        np.testing.assert_allclose(root[f"{cls}/gamma"][s], gamma, rtol=1e-5, atol=1e-7)
        correct = np.asarray(root[f"{cls}/correct"][:])[test]
        pred = np.asarray(root[f"{cls}/logits"][:])[test].argmax(1)
        assert np.array_equal(correct, pred == c)
    flagged = {(w["class"], w["sample"]) for w in summary["misclassified"]}
    assert flagged == {
        (cls, int(s))
        for cls in CLASSES
        for s in test
        if not bool(root[f"{cls}/correct"][s])
    }
    again = run_gradcam(store, model_dir, out, split="test", device="cpu")
    assert again["items"] == 0 and again["already_done"] == summary["items"]


def test_grid_size_mismatch_is_a_clear_error(model_dir, tmp_path):
    other = tmp_path / "small.zarr"
    synthetic_samples_store(other, nsamples=6, natoms=32, grid=8, seed=1)
    with pytest.raises(SchemaError, match=r"small\.zarr.*grid size M = 8.*expects.*= 16"):
        run_gradcam(other, model_dir, tmp_path / "g.zarr", device="cpu")


def zarr_open(path):
    import zarr

    return zarr.open_group(path, mode="r")


def _load(model_dir):
    from glasscam.analysis.cnn.train import load_model

    return load_model(model_dir)


def test_ensemble_gamma_is_the_mean_of_its_members(store, tmp_path):
    """Three seeded networks: Γ is the mean of the members' own Γ, each member's Γ equals the
    Grad-CAM of that network alone, the class probability is the members' mean, and the
    members differ (they are independent networks, not copies)."""
    from glasscam.analysis.cnn.train import load_model, train_ensemble

    model = tmp_path / "model"
    metrics = train_ensemble(store, model, 3, TrainConfig(epochs=2, batch_size=8, seed=4,
                                                          threads=2))
    assert metrics["ensemble"] == ["member0", "member1", "member2"]
    assert len(metrics["member_test_accuracy"]) == 3
    out = tmp_path / "gradcam.zarr"
    run_gradcam(store, model, out, split="test", batch_size=4, device="cpu")
    root = open_gradcam_store(out)
    assert root.attrs["parameters"]["members"] == 3
    samples = zarr_open(store)
    test = np.flatnonzero(np.asarray(samples["split"][:]) == 2)
    s = int(test[0])
    nets = [load_model(model / f"member{k}")[0] for k in range(3)]
    assert [n.state_dict()["conv1.weight"].sum().item() for n in nets] != [
        nets[0].state_dict()["conv1.weight"].sum().item()] * 3
    for cls in CLASSES:
        members = np.asarray(root[f"{cls}/gamma_members"][s])
        assert members.shape == (3, 64)
        np.testing.assert_allclose(root[f"{cls}/gamma"][s], members.mean(axis=0), rtol=1e-6)
        image = torch.from_numpy(np.asarray(samples[f"{cls}/image"][s : s + 1]))
        probs = []
        for k, net in enumerate(nets):
            cam, logits = grad_cam(net, image, GLASS)
            gamma = particle_scores(cam[0].numpy(), samples[f"{cls}/positions"][s],
                                    samples[f"{cls}/box"][s], "cic")
            np.testing.assert_allclose(members[k], gamma, rtol=1e-5, atol=1e-7)
            probs.append(torch.softmax(logits[0], -1).numpy())
        stored = torch.softmax(torch.from_numpy(np.asarray(root[f"{cls}/logits"][s])), -1)
        np.testing.assert_allclose(stored.numpy(), np.mean(probs, axis=0), rtol=1e-5)
    # a folder holding one network cannot silently become an ensemble
    single = tmp_path / "single"
    train(store, single, TrainConfig(epochs=1, batch_size=8, seed=0, threads=2))
    with pytest.raises(SchemaError, match="holds a single network"):
        train_ensemble(store, single, 2, TrainConfig(epochs=1, batch_size=8, threads=2))
