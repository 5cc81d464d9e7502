import math

import pytest
import torch

from neuromamba.training.schedule import CosineAnnealingWarmUpRestarts, lr_at_step, param_groups


def _run_schedule(total, **kw):
    p = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.AdamW([p], lr=1e-3)
    sched = CosineAnnealingWarmUpRestarts(opt, total_steps=total, **kw)
    lrs = []
    for _ in range(total):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def test_exact_values_one_cycle():
    lrs = _run_schedule(100)  # warmup 5 steps, min = 1e-5
    assert lrs[0] == pytest.approx(1e-5, rel=1e-12)             # step 0: min_lr
    assert lrs[2] == pytest.approx(1e-5 + (1e-3 - 1e-5) * 2 / 5, rel=1e-12)
    assert lrs[5] == pytest.approx(1e-3, rel=1e-12)              # end of warmup: peak
    mid = 5 + 94 / 2                                             # half-way through the cosine
    assert lrs[int(mid)] == pytest.approx(1e-5 + (1e-3 - 1e-5) * 0.5 * (1 + math.cos(math.pi * 47 / 94)), rel=1e-12)
    assert lrs[52] == pytest.approx((1e-3 + 1e-5) / 2, rel=1e-12)  # mid-cycle: halfway between
    assert lrs[-1] == pytest.approx(1e-5, rel=1e-12)             # last step: min_lr
    assert max(lrs) == pytest.approx(1e-3)


@pytest.mark.parametrize("total", [1, 2, 3, 7])
def test_any_run_length_ends_at_min(total):
    lrs = _run_schedule(total)
    assert all(1e-5 - 1e-15 <= lr <= 1e-3 + 1e-15 for lr in lrs)
    if total > 1:
        assert lrs[-1] == pytest.approx(1e-5)
    assert lrs == [lr_at_step(i, max_lr=1e-3, total_steps=total) for i in range(total)]


def test_restarts_with_gamma():
    lrs = [lr_at_step(i, max_lr=1.0, total_steps=100, cycle=0.25, gamma=0.5) for i in range(100)]
    # 4 cycles of 25 steps: warmup round(1.25)=1 step; peaks 1, .5, .25, .125; each ends at 0.01
    assert [lrs[25 * c + 1] for c in range(4)] == pytest.approx([1.0, 0.5, 0.25, 0.125])
    assert [lrs[25 * c + 24] for c in range(4)] == pytest.approx([0.01] * 4)
    assert lrs[25] == pytest.approx(0.01)  # each cycle starts at min_lr


def test_remainder_folded_into_last_cycle():
    lrs = [lr_at_step(i, max_lr=1.0, total_steps=10, cycle=0.3) for i in range(10)]
    assert lrs[-1] == pytest.approx(0.01)


def test_scheduler_state_dict_roundtrip():
    p = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.AdamW([p], lr=1e-3)
    sched = CosineAnnealingWarmUpRestarts(opt, total_steps=20)
    for _ in range(7):
        opt.step(); sched.step()
    opt2 = torch.optim.AdamW([p], lr=1e-3)
    sched2 = CosineAnnealingWarmUpRestarts(opt2, total_steps=20)
    sched2.load_state_dict(sched.state_dict())
    opt2.load_state_dict(opt.state_dict())
    opt2.step(); sched2.step(); opt.step(); sched.step()
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]


def test_bad_arguments():
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    for kw in ({"warmup_ratio": 1.0}, {"cycle": 0.0}, {"gamma": 0.0}, {"min_lr_ratio": 2.0}):
        with pytest.raises(ValueError):
            CosineAnnealingWarmUpRestarts(opt, total_steps=10, **kw)


def test_param_groups_no_decay_rules():
    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(3, 4)
            self.norm = torch.nn.LayerNorm(4)
            self.A_log = torch.nn.Parameter(torch.zeros(4))
            self.prompt = torch.nn.Parameter(torch.zeros(2, 4))
            self.prompt._no_weight_decay = True
            self.frozen = torch.nn.Parameter(torch.zeros(5, 5), requires_grad=False)

    m = M()
    groups = param_groups(m.named_parameters(), 0.01)
    decay = {id(p) for p in groups[0]["params"]}
    no_decay = {id(p) for p in groups[1]["params"]}
    assert groups[0]["weight_decay"] == 0.01 and groups[1]["weight_decay"] == 0.0
    assert decay == {id(m.lin.weight)}
    assert no_decay == {id(m.lin.bias), id(m.norm.weight), id(m.norm.bias), id(m.A_log), id(m.prompt)}
    assert id(m.frozen) not in decay | no_decay
