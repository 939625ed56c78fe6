"""Optimizers, LR schedulers and sample prompts (kohya syntax) — the small pieces of the engine."""

import importlib.util

import pytest
import torch

from patina.core.errors import PatinaError
from patina.core.train.optimizers import build_optimizer, build_scheduler, current_lrs, parse_kv_args, warmup_steps
from patina.core.config.schema import SAMPLERS, defaults
from patina.core.train.sampling import make_scheduler, parse_prompt_line, parse_prompts, sample_filename


def _groups():
    return [{"params": [torch.nn.Parameter(torch.zeros(3))], "lr": 1e-3},
            {"params": [torch.nn.Parameter(torch.zeros(2))], "lr": 1e-4}]


def test_parse_kv_args():
    assert parse_kv_args("weight_decay=0.01 betas=0.9,0.99 relative_step=False decouple=true", "x") == {
        "weight_decay": 0.01, "betas": (0.9, 0.99), "relative_step": False, "decouple": True}
    with pytest.raises(PatinaError, match="key=value"):
        parse_kv_args("weight_decay", "optimizer_args")


def test_builtin_optimizers_and_args():
    opt = build_optimizer("AdamW", _groups(), 1e-4, "weight_decay=0.05")
    assert isinstance(opt, torch.optim.AdamW) and opt.param_groups[0]["weight_decay"] == 0.05
    sgd = build_optimizer("SGDNesterov", _groups(), 1e-4)
    assert sgd.param_groups[0]["nesterov"] and sgd.param_groups[0]["momentum"] == 0.9
    ada = build_optimizer("Adafactor", _groups(), 1e-4, "relative_step=False scale_parameter=False warmup_init=False")
    assert type(ada).__name__ == "Adafactor" and ada.param_groups[1]["lr"] == 1e-4
    rel = build_optimizer("Adafactor", _groups(), 1e-4)  # kohya default: relative step, no explicit lr
    assert rel.param_groups[0]["relative_step"]
    with pytest.raises(PatinaError, match="do not fit AdamW"):
        build_optimizer("AdamW", _groups(), 1e-4, "bogus_arg=1")


@pytest.mark.parametrize("name,package", [("Prodigy", "prodigyopt"), ("Lion", "lion_pytorch"),
                                          ("DAdaptation", "dadaptation")])
def test_optional_optimizers_name_the_package_to_install(name, package):
    if importlib.util.find_spec(package) is not None:
        opt = build_optimizer(name, _groups(), 1.0)
        assert isinstance(opt, torch.optim.Optimizer) and name.lower()[:4] in type(opt).__name__.lower()
        assert [len(g["params"]) for g in opt.param_groups] == [1, 1]
    else:
        with pytest.raises(PatinaError, match=f"pip install {package.replace('_', '-')}"):
            build_optimizer(name, _groups(), 1.0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU message")
def test_8bit_optimizers_need_cuda():
    with pytest.raises(PatinaError, match="NVIDIA GPU"):
        build_optimizer("AdamW8bit", _groups(), 1e-4)


@pytest.mark.parametrize("sched", ["constant", "constant_with_warmup", "cosine", "cosine_with_restarts", "linear",
                                   "polynomial"])
def test_schedulers_with_warmup(sched):
    cfg = defaults()
    cfg.update(lr_scheduler=sched, lr_warmup=10, lr_scheduler_num_cycles=2, lr_scheduler_power=2.0)
    opt = build_optimizer("AdamW", _groups(), 1e-3)
    s = build_scheduler(cfg, opt, total_steps=100)
    lrs = []
    for _ in range(100):
        lrs.append(current_lrs(opt, ["unet", "te"])["unet"])
        opt.step()
        s.step()
    warm = warmup_steps(cfg, 100)
    if sched == "constant":
        assert warm == 0 and set(lrs) == {1e-3}
    else:
        assert warm == 10 and lrs[0] == 0.0 and lrs[10] == pytest.approx(1e-3)
    if sched in ("cosine", "linear", "polynomial"):
        assert lrs[-1] < 2e-4
    if sched == "cosine_with_restarts":
        assert max(lrs[60:]) > 5 * min(lrs[40:60])  # restarted


def test_warmup_steps_override_and_adafactor_scheduler():
    cfg = defaults()
    cfg.update(lr_scheduler="cosine", lr_warmup=10, lr_warmup_steps=7)
    assert warmup_steps(cfg, 100) == 7
    cfg.update(lr_scheduler="adafactor")
    with pytest.raises(PatinaError, match="only works with the Adafactor optimizer"):
        build_scheduler(cfg, build_optimizer("AdamW", _groups(), 1e-3), 10)
    ada = build_optimizer("Adafactor", _groups(), 1e-3)
    sched = build_scheduler(cfg, ada, 10)
    assert type(sched).__name__ == "AdafactorSchedule"  # it reads the optimizer's own relative step size
    assert sched.get_lr() == [cfg["learning_rate"]] * 2  # before the first step: the config's learning rate


def test_prompt_syntax():
    p = parse_prompt_line("masterpiece, 1girl --n low quality, worst --w 768 --h 640 --d 1 --l 7.5 --s 28 --ss euler",
                          default_size=(512, 512))
    assert (p.prompt, p.negative, p.width, p.height, p.seed, p.cfg_scale, p.steps, p.sampler) == (
        "masterpiece, 1girl", "low quality, worst", 768, 640, 1, 7.5, 28, "euler")
    q = parse_prompt_line("a dog with a--hyphen --S 5000", default_size=(1024, 1024))
    assert q.prompt == "a dog with a--hyphen" and q.steps == 1000 and (q.width, q.height) == (1024, 1024)
    assert [x.prompt for x in parse_prompts("one\n\n# skipped\ntwo --w 64")] == ["one", "two"]
    with pytest.raises(PatinaError, match="line 2"):
        parse_prompts("ok\nbad --w wide")
    with pytest.raises(PatinaError, match="sampler"):
        parse_prompt_line("x --ss nonsense")


def test_every_sampler_builds_a_diffusers_scheduler():
    from patina.core.models.tiny import SCHEDULER

    for name in SAMPLERS:
        sched = make_scheduler(name, dict(SCHEDULER))
        sched.set_timesteps(4)
        assert len(sched.timesteps) >= 4, name
    assert make_scheduler("k_dpmsolver++", dict(SCHEDULER)).config.use_karras_sigmas
    assert make_scheduler("dpmsolver++", dict(SCHEDULER)).config.algorithm_type == "dpmsolver++"


def test_sample_filenames_follow_kohya():
    from datetime import datetime

    when = datetime(2026, 11, 22, 5, 6, 7)
    assert sample_filename("dog", step=500, epoch=None, index=0, seed=None, when=when) == "dog_000500_00_20261122050607.png"
    assert sample_filename("dog", step=500, epoch=3, index=12, seed=42, when=when) == "dog_e000003_12_20261122050607_42.png"
