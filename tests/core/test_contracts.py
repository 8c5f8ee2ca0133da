"""Plugin contracts, generated from the registries: every registered dataset, backbone, neck, loss and
postprocess step (built in, or installed by entry point) is built at a tiny size and exercised by
``core.contracts.check``; nobody lists them. A plugin that breaks its contract fails here the moment it
registers (shown with a temporary plugin package that registers a loss returning NaN)."""

import os
import subprocess
import sys
import textwrap

import pytest

from core.contracts import ContractError, check
from core.hookspecs import HOOK_POINTS
from core.plugins import build_registries
from tests.helpers import ROOT

REGISTRIES = build_registries()
CASES = [(point, name) for point in HOOK_POINTS for name in sorted(REGISTRIES[point].factories)]


def test_every_hook_point_has_plugins_to_check():
    assert {point for point, _ in CASES} == set(HOOK_POINTS)


@pytest.mark.parametrize("point, name", CASES, ids=[f"{p}-{n}" for p, n in CASES])
def test_plugin_keeps_its_contract(point, name, tiny_survey):
    check(point, name, REGISTRIES, survey=tiny_survey / "train")


def test_a_broken_plugin_fails_its_contract_by_name():
    import torch

    from core.plugins import Registry

    class Nan(torch.nn.Module):
        def forward(self, embeddings, labels):
            return embeddings.sum() * float("nan")

    reg = dict(REGISTRIES, loss=Registry("loss"))
    reg["loss"].add("nan", lambda embedding_size, num_classes: Nan(), "here")
    with pytest.raises(ContractError, match="the loss is not finite"):
        check("loss", "nan", reg)
    reg["loss"].add("needs", lambda embedding_size, num_classes, margin_table: Nan(), "here")
    with pytest.raises(ContractError, match="contract_options"):
        check("loss", "needs", reg)


def test_an_installed_plugin_that_returns_nan_fails_the_generated_tests(tmp_path):
    """A plugin package on the path (its entry point in group whaleid) registers a loss; the contract tests,
    run as they are, pick it up and fail on it by name."""
    (tmp_path / "nanloss_plugin.py").write_text(textwrap.dedent('''
        import torch
        from core.hookspecs import hookimpl

        class NanLoss(torch.nn.Module):
            def __init__(self, embedding_size, num_classes):
                super().__init__()
                self.w = torch.nn.Parameter(torch.ones(embedding_size))

            def forward(self, embeddings, labels):
                return (embeddings * self.w).sum() * float("nan")

        @hookimpl
        def register_losses(register):
            register("nan_loss", NanLoss)
    '''))
    dist = tmp_path / "nanloss_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: nanloss-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[whaleid]\nnanloss = nanloss_plugin\n")
    env = dict(os.environ, PYTHONPATH=f"{tmp_path}{os.pathsep}{ROOT}", OMP_NUM_THREADS="1")
    env.pop("PYTEST_XDIST_WORKER", None)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:cacheprovider",
                           "tests/core/test_contracts.py", "-k", "keeps_its_contract and loss-"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1, proc.stdout[-3000:]
    assert "FAILED tests/core/test_contracts.py::test_plugin_keeps_its_contract[loss-nan_loss]" in proc.stdout
    assert "the loss is not finite" in proc.stdout
    assert "1 failed" in proc.stdout and " passed" in proc.stdout  # the built-in losses still pass


def test_a_fitted_step_is_fitted_by_its_contract_and_a_broken_fit_fails_it():
    """The contract fits a fitted step on what it recorded (local_match keeps it above); a fit that returns
    other keys than its fitted_keys, one that ranks the true copy low after the fit, or one that returns options it
    does not rank with itself (core.training.fit ranks with the step it fitted), is named."""
    import numpy as np

    from core.plugins import Registry

    knn = REGISTRIES["postprocess"].factory("knn")

    class Fitted:
        fitted_keys = ("weight",)
        needs_top_k = 5

        def __init__(self, weight=None, wrong=False, applies=True):
            self.weight, self.wrong, self.applies, self.record = weight, wrong, applies, None

        def __call__(self, ctx):
            if self.record is not None:
                self.record.append(ctx.query_ids)
            if self.weight is not None and self.weight < 0:  # the fitted order: reversed, scores still in [0, 1]
                ctx.ranked = [(idx[::-1].copy(), np.sort(sc)[::-1].copy()) for idx, sc in ctx.ranked]
            return ctx

        def fit(self, records, truth):
            if self.applies:
                self.weight = -1.0
            return {"other": 1} if self.wrong else {"weight": -1.0}

    reg = {"postprocess": Registry("postprocess")}
    reg["postprocess"].add("knn", knn, "here")
    reg["postprocess"].add("wrong_keys", lambda: Fitted(wrong=True), "here")
    with pytest.raises(ContractError, match="expected its fitted_keys"):
        check("postprocess", "wrong_keys", reg)
    reg["postprocess"].add("reverses", lambda weight=None: Fitted(weight), "here")
    with pytest.raises(ContractError, match="rank another first|not valid"):
        check("postprocess", "reverses", reg)
    reg["postprocess"].add("forgets", lambda weight=None: Fitted(weight, applies=False), "here")
    with pytest.raises(ContractError, match="ranks otherwise than one rebuilt"):  # fit returned, never applied
        check("postprocess", "forgets", reg)


def test_the_local_match_step_offers_what_the_catalogue_uses(tmp_path):
    from catalogue.deciding.local import Evidence
    from core.contracts import FittedStep, LocalMatching

    step = REGISTRIES["postprocess"].build({"name": "local_match"})
    assert isinstance(step, LocalMatching) and isinstance(step, FittedStep)
    assert isinstance(Evidence(tmp_path / "c.sqlite").step, LocalMatching)
    assert not isinstance(REGISTRIES["postprocess"].build({"name": "knn"}), LocalMatching)
