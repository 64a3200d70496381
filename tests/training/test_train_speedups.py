"""Head training step: the direct (Accelerate-free) step and the upstream-style plain step give the same maths."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import pecmae_hub.training.head as training
from pecmae_hub.models.head import PrototypeHead
from pecmae_hub.training.head import TrainConfig, make_accelerator, make_optimizer, train_step

pytestmark = pytest.mark.usefixtures("one_thread")
C, K, D, B = 4, 2, 32, 24


def _setup(seed=0, dropout=True):
    torch.manual_seed(seed)
    head = PrototypeHead([f"c{i}" for i in range(C)], D, K, "l2", "transformer", 0.1, 0.4)
    if not dropout:
        for m in head.modules():
            if isinstance(m, nn.Dropout):
                m.p = 0.0
            if isinstance(m, nn.MultiheadAttention):
                m.dropout = 0.0
    cfg = TrainConfig(protos_per_class=K, total_steps=50, device="cpu")
    acc = make_accelerator(cfg)
    opt = make_optimizer(head, cfg)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.max_lr, total_steps=cfg.total_steps)
    model, opt = acc.prepare(head, opt)
    model.train()
    g = torch.Generator().manual_seed(seed + 1)
    return head, (model, opt, sched, acc), cfg, torch.randn(B, D, generator=g) * 0.4 + 0.1, torch.arange(B) % C


def test_direct_step_equals_the_accelerate_step(monkeypatch):
    results = []
    for direct in (True, False):
        monkeypatch.setattr(training, "_plain_step_ok", lambda acc, opt, direct=direct: direct)
        head, parts, cfg, x, y = _setup(seed=3)
        torch.manual_seed(11)  # the dropout masks
        losses = [train_step(*parts, x, y, cfg)[0].item() for _ in range(8)]
        results.append((losses, {k: v.clone() for k, v in head.state_dict().items()}))
    (l1, s1), (l2, s2) = results
    assert l1 == l2 and all(torch.equal(s1[k], s2[k]) for k in s1)


def test_direct_step_is_taken_on_a_single_cpu_process():
    _, (_, opt, _, acc), *_ = _setup()
    assert training._plain_step_ok(acc, opt)


def _reference_step(ref, opt, sched, x, y, cfg):
    """Upstream's computation, plainly: stock summariser, (B, P, D) distance, loop over classes, Adam."""
    protos = ref.time_summarizer(ref.protos)[:, 0]
    d = ((((x - 0.1) / 0.8)[:, None, :] - protos[None]) ** 2).mean(-1)
    logits = ref.linear(torch.exp(-d))
    lp = torch.cat([d[y == c][:, c * K : (c + 1) * K].min(0).values for c in y.unique().tolist()]).mean()
    loss = cfg.alpha * lp + (1 - cfg.alpha) * F.cross_entropy(logits / cfg.temperature, y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    sched.step()
    return loss.item()


def test_same_losses_and_weights_as_the_plain_upstream_step():
    head, parts, cfg, x, y = _setup(seed=5, dropout=False)
    torch.manual_seed(5)
    ref = PrototypeHead([f"c{i}" for i in range(C)], D, K, "l2", "transformer", 0.1, 0.4).train()
    ref.load_state_dict(head.state_dict())
    for m in ref.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
        if isinstance(m, nn.MultiheadAttention):
            m.dropout = 0.0
    ref_opt = torch.optim.Adam(ref.parameters(), lr=cfg.max_lr, weight_decay=cfg.weight_decay, foreach=False)
    ref_sched = torch.optim.lr_scheduler.OneCycleLR(ref_opt, max_lr=cfg.max_lr, total_steps=cfg.total_steps)
    for _ in range(15):
        ours = train_step(*parts, x, y, cfg)[0].item()
        theirs = _reference_step(ref, ref_opt, ref_sched, x, y, cfg)
        assert ours == pytest.approx(theirs, rel=1e-5)
    # Q/K rows of in_proj: with one token their gradient is exactly 0 in ours; the stock attention's backward
    # leaves rounding noise (~1e-9) there, which Adam scales up to lr-sized steps. They never reach an output.
    for (k, a), b in zip(head.state_dict().items(), ref.state_dict().values()):
        if k.endswith("in_proj_weight") or k.endswith("in_proj_bias"):
            a, b = a[2 * D :], b[2 * D :]
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4, msg=k)


def test_threads_option_is_applied_and_restored(monkeypatch):
    from pecmae_hub.errors import ConfigError

    seen = []
    monkeypatch.setattr(training, "_train_head", lambda *args: seen.append(torch.get_num_threads()) or ("head", {}))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert training.train_head(None, None, config=TrainConfig(threads=1)) == ("head", {})
        assert seen == [1] and torch.get_num_threads() == 2
        training.train_head(None, None, config=TrainConfig())
        assert seen == [1, 2]
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ConfigError, match="threads"):
        TrainConfig(threads=-1).validate()
