"""The EMA teacher: the exact update formula, and no gradients ever reach it."""

import torch

from mole_inference.model.vla import MoLeVLA
from mole_inference.training.ema import ema_update, make_teacher


def test_teacher_follows_the_ema_formula_exactly(micro_cfg):
    torch.manual_seed(0)
    student = MoLeVLA(micro_cfg())
    teacher = make_teacher(student)
    for p in student.parameters():  # move the student away from the teacher
        p.data.add_(torch.randn_like(p))
    decay = 0.999
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    ema_update(teacher, student, decay)
    s = student.state_dict()
    for name, p in teacher.named_parameters():
        assert torch.equal(p, decay * before[name] + (1 - decay) * s[name]), name
    ema_update(teacher, student, 0.0)  # decay 0 copies the student
    for (name, p), q in zip(teacher.named_parameters(), student.parameters(), strict=True):
        assert torch.equal(p, q), name


def test_teacher_gets_no_gradients(micro_cfg):
    torch.manual_seed(0)
    cfg = micro_cfg()
    student = MoLeVLA(cfg)
    teacher = make_teacher(student)
    assert not any(p.requires_grad for p in teacher.parameters()) and not teacher.training
    b, s = 2, cfg.vision.image_size
    ids = torch.randint(4, 200, (b, cfg.llm.max_text_tokens))
    mask = torch.ones_like(ids, dtype=torch.bool)
    h_t = teacher.forward_train(torch.rand(b, 3, s, s), ids, mask, full=True)[0]
    h_s = student.forward_train(torch.rand(b, 3, s, s), ids, mask)[0]
    assert not h_t.requires_grad
    ((h_s - h_t) ** 2).mean().backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert any(p.grad is not None for p in student.parameters())
