"""The LoRA / LoCon / LoHa / LoKr network: peft adapters injected into the UNet and text encoders, named like kohya.

What this module does
---------------------
* :func:`build_network` injects peft LoRA layers (``peft.inject_adapter_in_model``) into the modules kohya's
  ``networks.lora`` targets (see ``shared/reference/lora-format.md`` §1.2):

  - UNet: every ``Linear``/``Conv2d`` inside a ``Transformer2DModel`` (proj_in/proj_out, attn1/attn2
    to_q/to_k/to_v/to_out.0, ff.net.0.proj, ff.net.2);
  - LoCon (``conv_dim`` > 0): also every ``Linear``/``Conv2d`` inside ``ResnetBlock2D`` (conv1, conv2,
    conv_shortcut, time_emb_proj), ``Downsample2D`` and ``Upsample2D``. 3×3 convs use conv_dim/conv_alpha,
    the 1×1 conv_shortcut and the Linear time_emb_proj use network_dim/network_alpha (as kohya);
  - text encoders: every Linear inside ``CLIPAttention``/``CLIPMLP`` (q/k/v/out_proj, fc1, fc2).

* :meth:`LoraNetwork.kohya_state_dict` writes kohya names: ``lora_unet_`` + diffusers path (SD1/SD2) or SGM
  path (SDXL), ``lora_te_``/``lora_te1_``/``lora_te2_`` + ``text_model_`` + path; per module
  ``lora_down.weight`` (peft lora_A), ``lora_up.weight`` (peft lora_B) and a 0-dim ``alpha``.

Why ``peft.inject_adapter_in_model`` and not diffusers' ``unet.add_adapter``: it works the same way on the
UNet and on transformers' CLIP models (one code path for three models), it does not depend on diffusers'
or transformers' peft integration (whose behaviour changes between releases), and it lets us name the
adapter ourselves so that a LoRA loaded later by a diffusers pipeline (``adapter_name="default_0"``) never
collides with the one being trained.

LyCORIS LoHa and LoKr (``spec.algo``) use peft's own ``LoHaConfig``/``LoKrConfig`` layers on the same modules
as LoCon (with ``use_effective_conv2d=False``: no Tucker core, a 3×3 conv's second factor is rank×(in·3·3)).
Their math is the one A1111, Forge and ComfyUI apply to LyCORIS files (lora-format.md §2.1-2.3; checked by
tests/test_lycoris.py):

* LoHa: ΔW = (hada_w1_a @ hada_w1_b) ⊙ (hada_w2_a @ hada_w2_b) · alpha/r, reshaped to the layer's weight;
* LoKr: ΔW = kron(w1, w2) · alpha/r with w1 = lokr_w1 or lokr_w1_a @ lokr_w1_b (w2 likewise), where the
  loaders use scale 1 when neither factor is split (no ``_b`` matrix). LyCORIS trains such a module with
  alpha = r (scale 1) and so does Patina (peft alone would keep alpha/r: with kohya_ss's LoKr habit of
  network_dim 100000 and alpha 1 that would be a scale of 1e-5). Should such a module ever hold another
  scale, the file gets it baked into ``lokr_w2`` with ``alpha = r`` (lora-format.md §2.1), and loading
  divides it out again.

The tensors keep LyCORIS's names under the kohya prefixes (``lora_unet_…​.hada_w1_a``); the metadata says
``ss_network_module = lycoris.kohya`` (:mod:`patina.core.lora.kohya_format`).

Per-module ranks (conv vs linear, block_dims) are peft ``rank_pattern``/``alpha_pattern`` entries keyed by
the *escaped full module path* (peft matches them as regular expressions anchored at the end).

See :mod:`patina.core.lora.targets` for which modules a spec adapts and the block indices.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterator, Sequence

from patina.core.errors import PatinaError
from patina.core.lora.targets import NetworkSpec, Target, check_not_adapted, collect_targets
from patina.core.models.families import check_family

if TYPE_CHECKING:  # pragma: no cover
    import torch

ADAPTER_NAME = "patina"

# the trainable tensors of each algorithm, by their LyCORIS / kohya file names
LYCORIS_SUFFIXES = {
    "loha": ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b"),
    "lokr": ("lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b"),
}
ALGO_LABELS = {"lora": "LoRA", "loha": "LoHa", "lokr": "LoKr"}

_family = check_family


# ----------------------------------------------------------------------------------------------------------
# The network
# ----------------------------------------------------------------------------------------------------------

@dataclass
class LoraModuleInfo:
    """One adapted module."""

    name: str  # kohya name, e.g. lora_unet_input_blocks_4_1_proj_in
    part: str  # "unet", "te1" or "te2" (an SD1/SD2 text encoder is "te1", written with prefix lora_te)
    path: str  # module path inside its model (diffusers / transformers spelling)
    kind: str  # "linear", "conv1x1" or "conv3x3"
    rank: int
    alpha: float
    block: int | None = None  # sd-scripts block index (UNet only)
    layer: Any = field(default=None, repr=False)  # the peft LoraLayer
    aliases: tuple[str, ...] = ()  # other names accepted when loading (diffusers-style SDXL, no text_model_)
    algo: str = "lora"  # "lora" (LoRA/LoCon), "loha" or "lokr"

    def weights(self) -> dict[str, "torch.nn.Parameter"]:
        """The trainable tensors by their file suffix (``lora_down.weight``, ``hada_w1_a``, ``lokr_w2``, ...)."""
        if self.algo == "lora":
            return {"lora_down.weight": self.lora_down, "lora_up.weight": self.lora_up}
        out = {}
        for suffix in LYCORIS_SUFFIXES[self.algo]:
            params = getattr(self.layer, suffix)
            if ADAPTER_NAME in params:
                out[suffix] = params[ADAPTER_NAME]
        return out

    @property
    def lokr_full(self) -> bool:
        """A LoKr module whose two factors are both full matrices (loaders then use scale 1, §2.1)."""
        return self.algo == "lokr" and ADAPTER_NAME in self.layer.lokr_w1 and ADAPTER_NAME in self.layer.lokr_w2

    @property
    def lora_down(self):
        return self.layer.lora_A[ADAPTER_NAME].weight

    @property
    def lora_up(self):
        return self.layer.lora_B[ADAPTER_NAME].weight

    @property
    def scale(self) -> float:
        return float(self.layer.scaling[ADAPTER_NAME])


@dataclass
class WeightsLoad:
    """What :meth:`LoraNetwork.load_kohya_state_dict` did (a config file's load is config.files.LoadResult)."""

    loaded: list[str]
    missing: list[str]  # network modules the file has no weights for (they keep their initial weights)
    unexpected: list[str]  # file modules the network does not have



def _patterns(values: dict[str, Any]) -> dict[str, Any]:
    r"""peft rank/alpha patterns: one regex per distinct value, an alternation of the escaped full paths.

    peft tries every pattern on every module (``re.match(rf"(.*\.)?({pattern})$", key)``); one pattern per
    module would cost O(modules²) regex compilations once they overflow ``re``'s cache (measured: 30 s for
    a real SDXL UNet with block_dims), one per distinct value keeps it to a handful of patterns."""
    by_value: dict[Any, list[str]] = {}
    for path, value in values.items():
        by_value.setdefault(value, []).append(re.escape(path))
    return {"(?:" + "|".join(paths) + ")": value for value, paths in by_value.items()}


def _layer_alpha(layer) -> float:
    """The alpha of our adapter in a peft layer (LoRA layers call it lora_alpha, LyCORIS layers alpha)."""
    alphas = layer.lora_alpha if hasattr(layer, "lora_alpha") else layer.alpha
    return float(alphas[ADAPTER_NAME])


def _inject(root, targets: list[Target], spec: NetworkSpec) -> None:
    from peft import LoHaConfig, LoKrConfig, LoraConfig, inject_adapter_in_model

    if not targets:
        return
    dropout = spec.network_dropout
    rank_counts = Counter(t.rank for t in targets)
    alpha_counts = Counter(t.alpha for t in targets)
    r = rank_counts.most_common(1)[0][0]
    alpha = alpha_counts.most_common(1)[0][0]
    common = dict(
        r=r, alpha=alpha, target_modules=[t.path for t in targets],
        rank_pattern=_patterns({t.path: t.rank for t in targets if t.rank != r}),
        alpha_pattern=_patterns({t.path: t.alpha for t in targets if t.alpha != alpha}),
        # no Tucker core: a conv's factors are 2-D (rank×(in·kh·kw)), the plain LyCORIS layout
        use_effective_conv2d=False,
    )
    if spec.algo != "lora":  # LyCORIS's rank and module dropout (peft applies them only while training)
        common.update(rank_dropout=float(spec.rank_dropout or 0.0), module_dropout=float(spec.module_dropout or 0.0))
    if spec.algo == "loha":
        # peft's init: w1_a, w1_b, w2_a kaiming-uniform, w2_b zeros (ΔW starts at 0)
        config = LoHaConfig(**common, init_weights=True)
    elif spec.algo == "lokr":
        # LyCORIS's init: w1 (or its factors) kaiming-uniform, w2 (or w2_b) zeros. A rank at or above half a
        # factor's larger side keeps that factor a full matrix (LyCORIS's rule; 100000 asks for full factors).
        config = LoKrConfig(**common, decompose_factor=int(spec.factor), decompose_both=bool(spec.decompose_both),
                            rank_dropout_scale=bool(spec.rank_dropout_scale), init_weights="lycoris")
    if spec.algo != "lora":
        inject_adapter_in_model(config, root, adapter_name=ADAPTER_NAME)
        return
    config = LoraConfig(
        r=r,
        lora_alpha=alpha,
        target_modules=[t.path for t in targets],
        rank_pattern=_patterns({t.path: t.rank for t in targets if t.rank != r}),
        alpha_pattern=_patterns({t.path: t.alpha for t in targets if t.alpha != alpha}),
        # peft applies dropout to the layer *input* (x -> dropout -> lora_A -> lora_B); sd-scripts'
        # network_dropout drops the *output of lora_down* (the rank-r activations). Both are regularisers
        # of the same strength class; the saved file is identical either way, only training noise differs.
        lora_dropout=float(dropout or 0.0),
        bias="none",
        init_lora_weights=True,  # lora_A kaiming-uniform(a=sqrt(5)), lora_B zeros: the same as sd-scripts
    )
    inject_adapter_in_model(config, root, adapter_name=ADAPTER_NAME)


def _assemble(unet, text_encoders, family: str, spec: NetworkSpec, targets: list[Target]) -> "LoraNetwork":
    import torch

    roots = [unet] + [te for te in (text_encoders or []) if te is not None]
    for root in roots:
        if root is not None:
            check_not_adapted(root, "UNet" if root is unet else "text encoder")
            root.requires_grad_(False)

    by_root: dict[int, list[Target]] = {}
    for t in targets:
        by_root.setdefault(id(t.root), []).append(t)
    for root in roots:
        if root is not None and id(root) in by_root:
            _inject(root, by_root[id(root)], spec)

    modules = []
    for t in targets:
        layer = t.root.get_submodule(t.path)
        if int(layer.r[ADAPTER_NAME]) != t.rank or _layer_alpha(layer) != t.alpha:
            raise RuntimeError(f"peft gave {t.path} rank {layer.r[ADAPTER_NAME]} alpha "
                               f"{_layer_alpha(layer)}, expected {t.rank}/{t.alpha}")
        modules.append(LoraModuleInfo(t.name, t.part, t.path, t.kind, t.rank, t.alpha, t.block, layer, t.aliases,
                                      spec.algo))
    net = LoraNetwork(unet, list(text_encoders or []), family, spec, modules)
    net.cast_lora_params(torch.float32)
    return net


def build_network(unet, text_encoders: list | None, family: str, spec: NetworkSpec) -> "LoraNetwork":
    """Inject LoRA (or LoCon) adapters into *unet* and *text_encoders* (SD1/SD2: ``[te]``; SDXL:
    ``[te1, te2]``) in place and return the :class:`LoraNetwork` that manages them.

    Base weights are frozen; only LoRA parameters require grad and they are fp32 whatever the base dtype.
    Parts that are not trained (``spec.train_unet``/``spec.train_text_encoder`` False) get no adapters.
    """
    family = _family(family)
    spec.validate(family)
    text_encoders = list(text_encoders or [])
    _check_te_count(family, text_encoders, spec.train_text_encoder)
    if not spec.train_unet and not spec.train_text_encoder:
        raise PatinaError("Nothing to train: both the UNet and the text encoder are switched off.")
    targets = collect_targets(unet, text_encoders, family, spec)
    if not targets:
        raise PatinaError("These settings create no LoRA module at all (every block has rank 0 or lr weight 0).")
    net = _assemble(unet, text_encoders, family, spec, targets)
    for m in net.modules:
        if m.lokr_full:  # LyCORIS: both Kronecker factors full -> alpha = rank (scale 1), as the loaders apply it
            net._set_alpha(m, float(m.rank))
    return net


def build_network_from_weights(unet, text_encoders: list | None, family: str, state_dict: dict,
                               spec: NetworkSpec | None = None) -> "LoraNetwork":
    """Build a network whose modules, ranks and alphas are those of a kohya-format *state_dict* (kohya's
    ``dim_from_weights``) and load the weights. *spec* still supplies dropout and block lr weights."""
    import dataclasses

    family = _family(family)
    spec = spec or NetworkSpec()
    text_encoders = list(text_encoders or [])
    modules = _group_kohya(state_dict)
    algos = {a for a in (module_algo(t) for t in modules.values()) if a}
    if len(algos) > 1:
        raise PatinaError(f"The LoRA weights mix module types ({', '.join(ALGO_LABELS[a] for a in sorted(algos))}); "
                          "Patina trains one type per network.")
    algo = algos.pop() if algos else "lora"
    spec = dataclasses.replace(spec, algo=algo, use_tucker=False,
                               network_dropout=spec.network_dropout if algo == "lora" else 0.0)
    spec.validate(family)
    shapes: dict[str, tuple[int, float]] = {}
    for name, tensors in modules.items():
        if module_algo(tensors) != algo:
            continue
        rank = module_rank(tensors)
        alpha = tensors.get("alpha")
        alpha = float(alpha.item()) if alpha is not None else float(rank or 0)
        shapes[name] = (rank or 0, alpha or float(rank or 0))
    if not shapes:
        raise PatinaError("The LoRA weights hold no kohya-format module (no '*.lora_down.weight', '*.hada_w1_a' "
                          "or '*.lokr_w1' keys).")
    has_te = any(n.startswith("lora_te") for n in shapes)
    _check_te_count(family, text_encoders, has_te)
    targets = collect_targets(unet, text_encoders, family, spec, from_weights=shapes)
    found = {t.name for t in targets} | {a for t in targets for a in t.aliases}
    unknown = sorted(n for n in shapes if n not in found)
    if unknown:
        raise PatinaError(
            f"{len(unknown)} module(s) of the LoRA file do not exist in this {family.upper()} model; is the file "
            f"for another model family?", problems=unknown[:10] + (["…"] if len(unknown) > 10 else []))
    if algo == "lokr":
        spec = _lokr_layout_from_weights(targets, modules, spec)
    net = _assemble(unet, text_encoders, family, spec, targets)
    try:
        net.load_kohya_state_dict(state_dict, strict=True)
    except BaseException:
        net.remove()  # leave the models as they were
        raise
    return net


def _check_te_count(family: str, text_encoders: list, needed: bool) -> None:
    if not needed:
        return
    want = 2 if family == "sdxl" else 1
    if len([t for t in text_encoders if t is not None]) != want:
        raise PatinaError(
            f"{family.upper()} has {want} text encoder{'s' if want > 1 else ''}; got {len(text_encoders)}. "
            "Pass them all (or switch text encoder training off).")


def module_algo(tensors: dict) -> str | None:
    """"lora", "loha" or "lokr" by a module's tensor names (the loaders' detection, §2.2-2.5); None otherwise."""
    if "lora_down.weight" in tensors or "lora_up.weight" in tensors:
        return "lora"
    if any(k.startswith("hada_") for k in tensors):
        return "loha"
    if any(k.startswith("lokr_") for k in tensors):
        return "lokr"
    return None


def module_rank(tensors: dict) -> int | None:
    """The rank a module's scale divides by: lora_down rows, hada_w1_b rows, a LoKr ``_b`` factor's rows
    (None for a LoKr module with two full factors, whose scale is 1 in every loader)."""
    for key in ("lora_down.weight", "hada_w1_b", "lokr_w1_b", "lokr_w2_b"):
        t = tensors.get(key)
        if t is not None and getattr(t, "ndim", 0) >= 1:
            return int(t.shape[0])
    return None


def _lokr_layout_from_weights(targets: list[Target], modules: dict, spec: NetworkSpec) -> NetworkSpec:
    """The LoKr factor (and decompose_both) that rebuild the file's factor shapes, and each module's rank:
    peft splits every layer with one ``decompose_factor``, so try -1 and the sizes of the file's w1 factors."""
    import dataclasses

    from peft.tuners.lokr.layer import factorization

    rows = []
    for t in targets:
        tensors = next(modules[n] for n in (t.name,) + t.aliases if n in modules)
        w1, w2 = tensors.get("lokr_w1"), tensors.get("lokr_w2")
        a, c = (tuple(w1.shape[:2]) if w1 is not None else
                (int(tensors["lokr_w1_a"].shape[0]), int(tensors["lokr_w1_b"].shape[1])))
        b = int(w2.shape[0]) if w2 is not None else int(tensors["lokr_w2_a"].shape[0])
        weight = t.root.get_submodule(t.path).weight
        rows.append((t, tensors, a, c, b, int(weight.shape[0]), int(weight.shape[1])))
    candidates = [-1] + sorted({x for r in rows for x in r[2:4] if x > 1})
    for f in candidates:
        if all(factorization(o, f) == (a, o // a) and factorization(i, f) == (c, i // c)
               for _t, _ts, a, c, _b, o, i in rows):
            break
    else:
        raise PatinaError("The LoKr file's factor shapes cannot be rebuilt with one factor; set the factor and "
                          "ranks yourself (untick 'Rank from weights').")
    for t, tensors, a, c, b, o, i in rows:
        if module_rank(tensors) is None:  # both factors full: any rank from max(b, d)/2 on gives that layout
            d = i // c
            t.rank = max(1, -(-max(b, d) // 2))
            t.alpha = float(t.rank)  # scale 1, as the loaders apply it
    return dataclasses.replace(spec, factor=f, decompose_both=any("lokr_w1_a" in r[1] for r in rows))


_SUPPORTED_SUFFIXES = ("lora_down.weight", "lora_up.weight", "alpha")


def _group_kohya(sd: dict) -> dict[str, dict[str, Any]]:
    modules: dict[str, dict[str, Any]] = {}
    for key, value in sd.items():
        name, dot, suffix = key.partition(".")
        if not dot:
            suffix = ""
        modules.setdefault(name, {})[suffix] = value
    return modules


class LoraNetwork:
    """The adapters of one training run. Build with :func:`build_network`."""

    def __init__(self, unet, text_encoders: list, family: str, spec: NetworkSpec, modules: list[LoraModuleInfo]):
        self.unet = unet
        self.text_encoders = text_encoders
        self.family = family
        self.spec = spec
        self.modules = modules
        self.block_lr_weights = spec.block_lr_weights(family)
        self._by_name: dict[str, LoraModuleInfo] = {}
        for m in modules:
            if m.name in self._by_name:
                raise RuntimeError(f"duplicate LoRA name {m.name}")
            self._by_name[m.name] = m
        self._aliases = {a: m for m in modules for a in m.aliases if a not in self._by_name}

    # -- inspection ------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.modules)

    @property
    def unet_modules(self) -> list[LoraModuleInfo]:
        return [m for m in self.modules if m.part == "unet"]

    @property
    def text_encoder_modules(self) -> list[LoraModuleInfo]:
        return [m for m in self.modules if m.part != "unet"]

    def module(self, name: str) -> LoraModuleInfo:
        return self._by_name[name]

    @property
    def algo(self) -> str:
        """"lora" (LoRA/LoCon), "loha" or "lokr"."""
        return self.spec.algo

    def lora_parameters(self) -> Iterator[tuple[str, "torch.nn.Parameter"]]:
        """(``<kohya name>.<tensor>``, parameter) for every trainable tensor: ``lora_down.weight`` and
        ``lora_up.weight`` of a LoRA, the ``hada_*`` / ``lokr_*`` tensors of LoHa / LoKr."""
        for m in self.modules:
            for suffix, p in m.weights().items():
                yield f"{m.name}.{suffix}", p

    def trainable_parameters(self) -> list["torch.nn.Parameter"]:
        return [p for _, p in self.lora_parameters() if p.requires_grad]

    # -- optimizer -------------------------------------------------------------------------------------
    def param_groups(self, unet_lr: float | None, text_encoder_lr: float | Sequence[float] | None,
                     loraplus_unet_ratio: float | None = 0, loraplus_te_ratio: float | None = 0, *,
                     default_lr: float | None = None) -> list[dict]:
        """Optimizer parameter groups, each ``{"params", "lr", "name"}``.

        * ``"textencoder"`` (or ``"textencoder1"``/``"textencoder2"`` when *text_encoder_lr* is a sequence with
          different values per encoder) and ``"unet"``, or ``"unet_block_N"`` per sd-scripts block when block lr
          weights are set (lr multiplied by the block's weight).
        * LoRA+: with a ratio > 0, each group's ``lora_up`` (peft lora_B) parameters go to a ``<name>_plus``
          group with lr × ratio. LoHa/LoKr have no up matrix: their tensors stay in the plain group.
        * A None lr falls back to *default_lr*. Groups with lr 0 are left out (as sd-scripts), so a part with
          lr 0 is not trained.
        """
        def resolve(lr, what):
            if lr is None:
                lr = default_lr
            if lr is None:
                raise PatinaError(f"No learning rate for the {what}: set it or the base learning rate.")
            return float(lr)

        groups: list[dict] = []

        def add(mods: list[LoraModuleInfo], lr: float, ratio: float | None, name: str) -> None:
            if not mods or lr == 0:
                return
            if ratio and any(m.algo == "lora" for m in mods):
                plain = [p for m in mods for p in ([m.lora_down] if m.algo == "lora" else m.weights().values())]
                plus = [m.lora_up for m in mods if m.algo == "lora"]
                groups.append({"params": plain, "lr": lr, "name": name})
                groups.append({"params": plus, "lr": lr * float(ratio), "name": name + "_plus"})
            else:
                params = [p for m in mods for p in m.weights().values()]
                groups.append({"params": params, "lr": lr, "name": name})

        te_mods = self.text_encoder_modules
        if te_mods:
            if isinstance(text_encoder_lr, (list, tuple)):
                lrs = [resolve(v, "text encoder") for v in text_encoder_lr] or [resolve(None, "text encoder")]
                parts = sorted({m.part for m in te_mods})
                if len(set(lrs)) == 1 or len(parts) == 1:
                    add(te_mods, lrs[0], loraplus_te_ratio, "textencoder")
                else:
                    for part in parts:
                        i = int(part[2:]) - 1
                        lr = lrs[i] if i < len(lrs) else lrs[-1]
                        add([m for m in te_mods if m.part == part], lr, loraplus_te_ratio, f"textencoder{i + 1}")
            else:
                add(te_mods, resolve(text_encoder_lr, "text encoder"), loraplus_te_ratio, "textencoder")

        unet_mods = self.unet_modules
        if unet_mods:
            base = resolve(unet_lr, "UNet")
            if self.block_lr_weights is None:
                add(unet_mods, base, loraplus_unet_ratio, "unet")
            else:
                by_block: dict[int, list[LoraModuleInfo]] = {}
                for m in unet_mods:
                    by_block.setdefault(m.block if m.block is not None else -1, []).append(m)
                for block in sorted(by_block):
                    w = self.block_lr_weights[block] if 0 <= block < len(self.block_lr_weights) else 1.0
                    add(by_block[block], base * w, loraplus_unet_ratio, f"unet_block_{block}")
        return groups

    # -- export / import -------------------------------------------------------------------------------
    def export_alpha(self, m: LoraModuleInfo) -> float:
        """The ``.alpha`` to write so that every client's ``alpha / rank`` equals the trained scale (a LoKr module
        with two full factors: its rank, the scale being baked into ``lokr_w2``)."""
        if m.lokr_full:
            return float(m.rank)
        alpha = _layer_alpha(m.layer)
        if m.algo == "lora" and m.layer.use_rslora.get(ADAPTER_NAME, False):  # not used by Patina; kept exact if ever switched on
            alpha *= math.sqrt(m.rank)
        return alpha

    def kohya_state_dict(self, dtype: "torch.dtype | None" = None) -> dict[str, "torch.Tensor"]:
        """kohya-format tensors (CPU, contiguous, *dtype*, default fp16): ``<name>.lora_down.weight``,
        ``<name>.lora_up.weight`` (LoHa: ``hada_w1_a``, ``hada_w1_b``, ``hada_w2_a``, ``hada_w2_b``; LoKr:
        ``lokr_w1`` or ``lokr_w1_a``/``_b``, ``lokr_w2`` or ``lokr_w2_a``/``_b``) and a 0-dim ``<name>.alpha``.
        A LoKr module with two full factors gets its scale baked into ``lokr_w2`` (the loaders use scale 1)."""
        import torch

        dtype = dtype or torch.float16
        sd: dict[str, torch.Tensor] = {}
        with torch.no_grad():
            for m in self.modules:
                for suffix, p in m.weights().items():
                    t = p.detach().float() * m.scale if (m.lokr_full and suffix == "lokr_w2") else p.detach()
                    sd[f"{m.name}.{suffix}"] = t.to("cpu", dtype).contiguous().clone()
                sd[f"{m.name}.alpha"] = torch.tensor(self.export_alpha(m), dtype=dtype)
        return sd

    def load_kohya_state_dict(self, sd: dict, strict: bool = True) -> WeightsLoad:
        """Copy kohya-format weights into the adapters (continue training from ``network_weights``).

        Also accepts the usual variants of the names (SDXL UNet in diffusers spelling, text encoder names
        without ``text_model_``, ``lora_te1_`` in an SD1 file). A file alpha different from the network's
        replaces it (sd-scripts loads the alpha buffer too), so the scale stays the trained one.

        LoHa/LoKr networks read their ``hada_*``/``lokr_*`` tensors the same way; a LoKr module with two full
        factors gets the baked scale divided out of ``lokr_w2`` again (its alpha stays the network's).

        Raises :class:`PatinaError` for a rank/shape mismatch, for tensors of another module type (a LoHa file
        into a LoRA network, Tucker lora_mid/hada_t1, DoRA, ...) and, when *strict*, for modules missing on
        either side.
        """
        import torch

        grouped = _group_kohya(sd)
        unexpected, unsupported, mismatched, loaded = [], [], [], []
        matched: dict[str, tuple[LoraModuleInfo, dict]] = {}
        for name, tensors in grouped.items():
            m = self._by_name.get(name) or self._aliases.get(name)
            if m is None:
                unexpected.append(name)
                continue
            own = m.weights()
            extra = sorted(s for s in tensors if s not in own and s != "alpha")
            if extra:
                unsupported.append(f"{name}: {', '.join(extra)}")
                continue
            lacking = sorted(s for s in own if s not in tensors)
            if lacking:
                unsupported.append(f"{name}: {', '.join(lacking)} missing ({', '.join(own)} are all needed)")
                continue
            if any(tuple(tensors[s].shape) != tuple(p.shape) for s, p in own.items()):
                mismatched.append(f"{name}: file " + ", ".join(f"{s} {tuple(tensors[s].shape)}" for s in own)
                                  + "; network " + ", ".join(f"{s} {tuple(p.shape)}" for s, p in own.items()))
                continue
            matched[m.name] = (m, tensors)
        if unsupported:
            label = {"lora": "LoRA/LoCon lora_down/lora_up", "loha": "LoHa hada_w1_a/hada_w1_b/hada_w2_a/hada_w2_b",
                     "lokr": "LoKr lokr_w1/lokr_w2 (or their _a/_b factors)"}[self.algo]
            raise PatinaError(
                f"The LoRA file holds tensors this {ALGO_LABELS[self.algo]} network cannot continue training from "
                f"(it reads {label} and alpha; is the file another LoRA type, or does it use Tucker or DoRA?):",
                problems=unsupported[:10] + (["…"] if len(unsupported) > 10 else []))
        if mismatched:
            raise PatinaError(
                "The LoRA file does not fit this network (different rank or model). Set network_dim/conv_dim to "
                "the file's ranks, or build the network from the file's dims:",
                problems=mismatched[:10] + (["…"] if len(mismatched) > 10 else []))
        missing = [m.name for m in self.modules if m.name not in matched]
        if strict and (missing or unexpected):
            problems = [f"missing in file: {n}" for n in missing[:8]] + [f"not in network: {n}" for n in unexpected[:8]]
            raise PatinaError(
                f"The LoRA file and the network differ: {len(missing)} network module(s) have no weights in the "
                f"file and {len(unexpected)} file module(s) are not in the network (another LoRA type, model "
                "family, or train UNet/text encoder setting?).", problems=problems)
        with torch.no_grad():
            for m, tensors in matched.values():
                if not m.lokr_full:  # a full-full LoKr module keeps its alpha; the file's scale is 1
                    alpha = tensors.get("alpha")
                    alpha = float(alpha.item()) if alpha is not None else float(m.rank)
                    self._set_alpha(m, alpha or float(m.rank))
                for suffix, p in m.weights().items():
                    value = tensors[suffix].to(torch.float32)
                    if m.lokr_full and suffix == "lokr_w2":
                        value = value / m.scale
                    p.copy_(value.to(p.dtype))
                loaded.append(m.name)
        return WeightsLoad(loaded=loaded, missing=missing, unexpected=unexpected)

    def _set_alpha(self, m: LoraModuleInfo, alpha: float) -> None:
        m.alpha = alpha
        if m.algo == "lora":
            m.layer.lora_alpha[ADAPTER_NAME] = alpha
        else:
            m.layer.alpha[ADAPTER_NAME] = alpha
        m.layer.scaling[ADAPTER_NAME] = alpha / m.rank

    # -- training helpers ------------------------------------------------------------------------------
    def cast_lora_params(self, dtype: "torch.dtype") -> None:
        """Cast the LoRA weights (default after build: fp32, whatever the base model's dtype)."""
        for holder in self._weight_holders():
            holder.to(dtype=dtype)

    def to(self, device) -> "LoraNetwork":
        """Move the LoRA weights (not the base model) to *device*."""
        for holder in self._weight_holders():
            holder.to(device)
        return self

    def _weight_holders(self) -> Iterator["torch.nn.Module"]:
        """The submodules that hold the LoRA weights (peft's lora_A/lora_B Linear/Conv, or LyCORIS
        ParameterDicts that hold only this network's adapter), for in-place dtype/device moves."""
        for m in self.modules:
            if m.algo == "lora":
                yield m.layer.lora_A[ADAPTER_NAME]
                yield m.layer.lora_B[ADAPTER_NAME]
            else:
                for suffix in LYCORIS_SUFFIXES[m.algo]:
                    params = getattr(m.layer, suffix)
                    if ADAPTER_NAME in params:
                        yield params

    def apply_max_norm(self, max_norm: float) -> tuple[int, float, float]:
        """sd-scripts' ``scale_weight_norms``: where ‖ΔW‖ (ΔW = up·down·alpha/rank, or the LoHa/LoKr ΔW) exceeds
        *max_norm*, scale the module's k tensors by (max_norm/‖ΔW‖)^(1/k) each: ΔW is linear in each of them
        (up and down; the four hada_ matrices; the LoKr factors), so ‖ΔW‖ becomes *max_norm*.
        Returns (modules scaled, mean norm, max norm) after scaling."""
        import torch

        if not self.modules:
            return 0, 0.0, 0.0
        scaled, norms = 0, []
        with torch.no_grad():
            for m in self.modules:
                if m.algo == "lora":
                    down, up = m.lora_down, m.lora_up
                    delta = up.reshape(up.shape[0], -1).float() @ down.reshape(down.shape[0], -1).float()
                    norm = float(delta.norm()) * m.scale
                else:
                    norm = float(m.layer.get_delta_weight(ADAPTER_NAME).float().norm())
                if norm > max_norm and norm > 0:
                    ratio = max_norm / norm
                    params = list(m.weights().values())
                    factor = ratio ** (1.0 / len(params))
                    for p in params:
                        p.mul_(factor)
                    scaled += 1
                    norm *= ratio
                norms.append(norm)
        return scaled, sum(norms) / len(norms), max(norms)

    def set_enabled(self, enabled: bool) -> None:
        """Switch the adapters on or off (off: the models behave like the base models). Keeps requires_grad."""
        flags = [(p, p.requires_grad) for _, p in self.lora_parameters()]
        for m in self.modules:
            m.layer.enable_adapters(bool(enabled))
        for p, flag in flags:  # peft toggles requires_grad; a switch must not change what trains
            p.requires_grad_(flag)

    @property
    def enabled(self) -> bool:
        return bool(self.modules) and not self.modules[0].layer.disable_adapters

    @contextlib.contextmanager
    def disable_adapters(self) -> Iterator[None]:
        """``with net.disable_adapters(): ...`` runs the base models (e.g. a sample without the LoRA)."""
        was = self.enabled
        self.set_enabled(False)
        try:
            yield
        finally:
            self.set_enabled(was)

    @contextlib.contextmanager
    def weight(self, multiplier: float) -> Iterator[None]:
        """``with net.weight(0.8): ...`` runs the models with the LoRA at that weight, as a user would load it
        at ``<lora:name:0.8>`` (0 runs the base models). The trained scales are put back afterwards."""
        if multiplier == 0:
            with self.disable_adapters():
                yield
            return
        saved = [(m, m.layer.scaling[ADAPTER_NAME]) for m in self.modules]
        try:
            for m, scale in saved:
                m.layer.scaling[ADAPTER_NAME] = scale * multiplier
            yield
        finally:
            for m, scale in saved:
                m.layer.scaling[ADAPTER_NAME] = scale

    def remove(self) -> None:
        """Take the adapters out of the models again (the base layers are put back)."""
        for m in self.modules:
            root = self.unet if m.part == "unet" else self.text_encoders[int(m.part[2:]) - 1]
            parent_path, _, child = m.path.rpartition(".")
            parent = root.get_submodule(parent_path) if parent_path else root
            setattr(parent, child, m.layer.get_base_layer())
        for root in [self.unet, *self.text_encoders]:
            if root is not None and hasattr(root, "peft_config"):  # set by peft.inject_adapter_in_model
                with contextlib.suppress(AttributeError):
                    del root.peft_config
        self.modules = []
        self._by_name = {}
        self._aliases = {}
