"""Model configuration: one dataclass per component, paper constants as defaults."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from mole_inference.config.base import check, positive

RouterType = Literal["star", "linear", "random", "early_exit", "full", "mod", "dynamic_exit"]
ActionFamily = Literal["diffusion", "autoregressive", "flow"]
ACTION_FAMILIES = ("diffusion", "autoregressive", "flow")
# Routers whose choice is one layer set per sample, which the autoregressive decode reuses for every action token
# and the flow expert pairs with its own layers.
LAYER_SET_ROUTERS = ("star", "linear", "random", "early_exit", "full")


@dataclass
class EncoderConfig:
    """One ViT backbone of the fused vision tower (DINOv2 or SigLIP shapes)."""

    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 2
    mlp_size: int = 256
    layer_norm_eps: float = 1e-6

    def __post_init__(self) -> None:
        positive(self, "hidden_size", "num_layers", "num_heads", "mlp_size")
        check(self.hidden_size % self.num_heads == 0, "hidden_size", self.hidden_size,
              f"must be divisible by num_heads={self.num_heads}")


@dataclass
class VisionConfig:
    """DINOv2 + SigLIP patch features concatenated per patch and projected to the LLM width (Prismatic)."""

    image_size: int = 112
    patch_size: int = 14
    dinov2: EncoderConfig = field(default_factory=EncoderConfig)
    siglip: EncoderConfig = field(default_factory=EncoderConfig)
    dinov2_weights: str | None = None  # local HF folder; random init when None
    siglip_weights: str | None = None
    text_film: bool = False  # beyond the paper: image tokens modulated by the instruction (model/film.py)
    # beyond the paper, with text_film: its pooled instruction also keeps the word order, through a position-aware
    # MLP ("mlp") or a linear map per token position ("slots") (model/film.py); "off": the bag of words
    text_film_order: Literal["off", "mlp", "slots"] = "off"
    # beyond the paper: the measured EE pose added to the cognition token (model/state_input.py);
    # every caller of `Policy.infer` must then pass `state`
    state_input: bool = False
    # with state_input: 2 * N sin/cos features of the hand's height (periods 50 cm / 2^k, k < N) beside the linear
    # ones, so a centimetre of height is a visible change (model/state_input.py); 0: the linear features only
    state_height_bands: int = 0
    # "dinov2+siglip": Prismatic's fused tower (CogACT, OpenVLA); "siglip": SigLIP alone through one linear
    # projection, as PaliGemma (pi0); the dinov2 section is then unused.
    backbones: Literal["dinov2+siglip", "siglip"] = "dinov2+siglip"

    def __post_init__(self) -> None:
        positive(self, "image_size", "patch_size")
        check(self.backbones in ("dinov2+siglip", "siglip"), "backbones", self.backbones,
              "must be dinov2+siglip or siglip")
        check(self.image_size % self.patch_size == 0, "image_size", self.image_size,
              f"must be a multiple of patch_size={self.patch_size}")
        check(0 <= self.state_height_bands <= 12, "state_height_bands", self.state_height_bands,
              "must be in 0..12 (the finest period is 50 cm / 2^(N-1))")
        check(self.state_height_bands == 0 or self.state_input, "state_height_bands", self.state_height_bands,
              "needs vision.state_input: true")
        check(self.text_film_order in ("off", "mlp", "slots"), "text_film_order", self.text_film_order,
              "must be off, mlp or slots")
        check(self.text_film_order == "off" or self.text_film, "text_film_order", self.text_film_order,
              "needs vision.text_film: true (it orders FiLM's pooled instruction)")
        check(self.dinov2.mlp_size % self.dinov2.hidden_size == 0, "dinov2.mlp_size", self.dinov2.mlp_size,
              f"must be a multiple of dinov2.hidden_size={self.dinov2.hidden_size} (DINOv2 has an mlp_ratio)")

    @property
    def num_patches(self) -> int:
        """Image tokens per frame."""
        return (self.image_size // self.patch_size) ** 2


@dataclass
class LLMConfig:
    """LLaMA-family decoder shapes; MoLe wraps its layers."""

    hidden_size: int = 128
    intermediate_size: int = 344
    num_layers: int = 8
    num_heads: int = 4
    num_kv_heads: int | None = None
    vocab_size: int = 260
    max_text_tokens: int = 32  # instructions are padded/truncated to this: fixed shapes for export
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    tokenizer: str | None = None  # local tokenizer folder; the built-in `text_tokenizer` when None
    text_tokenizer: Literal["byte", "word"] = "byte"  # built-in tokenizer: UTF-8 bytes or hashed words
    weights: str | None = None  # local HF LLaMA folder; random init when None
    # MLP activation of the LLM (and the flow expert): "silu" is LLaMA's SwiGLU (every config written before this
    # field); "gelu_pytorch_tanh" makes LlamaMLP Gemma's GeGLU (pi0's PaliGemma and action expert).
    hidden_act: Literal["silu", "gelu_pytorch_tanh"] = "silu"

    def __post_init__(self) -> None:
        positive(self, "hidden_size", "intermediate_size", "num_layers", "num_heads", "vocab_size",
                 "max_text_tokens")
        check(self.hidden_act in ("silu", "gelu_pytorch_tanh"), "hidden_act", self.hidden_act,
              "must be silu (LLaMA) or gelu_pytorch_tanh (Gemma)")
        check(self.hidden_size % self.num_heads == 0, "hidden_size", self.hidden_size,
              f"must be divisible by num_heads={self.num_heads}")
        check(self.text_tokenizer in ("byte", "word"), "text_tokenizer", self.text_tokenizer, "must be byte or word")
        if self.num_kv_heads is not None:
            check(self.num_heads % self.num_kv_heads == 0, "num_kv_heads", self.num_kv_heads,
                  f"must divide num_heads={self.num_heads}")


@dataclass
class RouterConfig:
    """MoLe layer router (Eq. 7-12). `num_active_layers` is the paper's top-k."""

    type: RouterType = "star"
    num_active_layers: int = 4
    proj_dim: int = 64  # d1 of W_p (Eq. 8)
    spatial_hidden: int = 64  # width of the spatial MLP (Eq. 9)
    encoder_layers: int = 1  # temporal Transformer depth (Eq. 10)
    encoder_heads: int = 4
    encoder_ffn: int = 128
    # Defaults of the two options below are the behaviour checkpoints were trained with before they existed (a
    # config.yaml without them loads as trained); the paper preset cogact-7b sets the paper's forms.
    blend: Literal["alpha", "sum"] = "alpha"  # how S and T combine (Eq. 11-12); "sum" is Eq. 12 as printed
    spatial_order: Literal["pool_mlp", "mlp_pool"] = "pool_mlp"  # Eq. 9: pool then MLP, or the paper's MLP then pool
    temperature: float = 1.0
    seed: int = 0  # random router only
    mod_capacity: float = 0.5  # mod: share of the prompt's tokens each layer processes (cognition token included)
    exit_threshold: float = 0.0  # dynamic_exit: relative change of the cognition feature below which it exits
    exit_min_layers: int = 1  # dynamic_exit: layers run before an exit is allowed
    # dynamic_exit training: "every_layer" trains the full depth only (the exit is inference-only); "random_depth"
    # trains each sample through the first j layers, j uniform in [exit_min_layers, K] per sample and step, so the
    # head learns every exit's cognition feature (DeeR trains a loss at every exit; this is its stochastic form)
    exit_training: Literal["every_layer", "random_depth"] = "every_layer"

    def __post_init__(self) -> None:
        positive(self, "num_active_layers", "proj_dim", "spatial_hidden", "encoder_layers", "encoder_heads",
                 "encoder_ffn", "temperature", "exit_min_layers")
        check(0.0 < self.mod_capacity <= 1.0, "mod_capacity", self.mod_capacity, "must be in (0, 1]")
        check(self.exit_threshold >= 0.0, "exit_threshold", self.exit_threshold, "must be >= 0 (0 runs every layer)")
        check(self.proj_dim % self.encoder_heads == 0, "proj_dim", self.proj_dim,
              f"must be divisible by encoder_heads={self.encoder_heads}")


@dataclass
class ActionHeadConfig:
    """The action head family (paper Table 1) and its settings; 7-DoF end-effector deltas (Eq. 4).

    `type: diffusion` (CogACT): a DiT denoises a chunk conditioned on the cognition token (Eq. 6), the fields
    below up to `ddim_clip`. `type: autoregressive` (OpenVLA): the LLM itself decodes `action_dim` tokens per
    control step among the last `num_bins` vocabulary ids (model/action_tokens.py); one action per step, so
    `chunk_size` must be 1, and the DiT fields are unused. `type: flow` (pi0): an action expert, a smaller decoder
    with one layer per LLM layer (`depth` = llm.num_layers, width `hidden_size`, `num_heads` x `head_dim`, MLP
    `mlp_ratio` x width), reads each LLM layer's prefix keys/values and is trained with flow matching; a chunk is
    `flow_steps` Euler steps (model/flow_expert.py, model/flow_matching.py).
    """

    type: ActionFamily = "diffusion"  # the default keeps every config written before this field as it was
    num_bins: int = 256  # autoregressive: uniform bins over [-1, 1] (OpenVLA's n_action_bins)
    hidden_size: int = 128
    depth: int = 2
    num_heads: int = 4
    mlp_ratio: float = 4.0
    chunk_size: int = 16
    action_dim: int = 7
    train_timesteps: int = 100
    beta_schedule: Literal["cosine", "linear"] = "cosine"
    ddim_steps: int = 10
    ddim_eta: float = 0.0
    cfg_scale: float = 1.0  # > 1 enables classifier-free guidance with a learned null condition
    cond_dropout: float = 0.1  # probability of the null condition in training (enables CFG)
    # DDIM clipping of the predicted x_0 to [-1, 1]: at every step (this code's original behaviour, the default so
    # older checkpoints sample as before) or only the final sample, as CogACT samples (clip_denoised=False).
    ddim_clip: Literal["every_step", "final"] = "every_step"
    # Beyond the paper (diffusion family, off by default): a two-layer classifier on the cognition feature gives the
    # chunk's gripper column as P(open) per step instead of the DiT's sampled value, so the grasp / release decision
    # is not redrawn from noise at every replan (model/gripper_head.py); trained with `training.gripper_weight`.
    gripper_head: bool = False
    # flow (pi0, openpi src/openpi/models/pi0.py): expert attention shapes (None: hidden_size / num_heads and
    # num_heads), Euler steps from t=1 to t=0, and training times t = Beta(flow_time_alpha, 1) scaled to
    # [flow_time_min, 1] (openpi: Beta(1.5, 1) * 0.999 + 0.001).
    head_dim: int | None = None
    num_kv_heads: int | None = None
    flow_steps: int = 10
    flow_time_alpha: float = 1.5
    flow_time_min: float = 0.001

    def __post_init__(self) -> None:
        positive(self, "hidden_size", "depth", "num_heads", "chunk_size", "action_dim", "train_timesteps",
                 "ddim_steps", "mlp_ratio")
        check(self.hidden_size % self.num_heads == 0, "hidden_size", self.hidden_size,
              f"must be divisible by num_heads={self.num_heads}")
        check(self.ddim_steps <= self.train_timesteps, "ddim_steps", self.ddim_steps,
              f"must be <= train_timesteps={self.train_timesteps}")
        check(self.cfg_scale >= 1.0, "cfg_scale", self.cfg_scale, "must be >= 1 (1 disables guidance)")
        check(0.0 <= self.cond_dropout < 1.0, "cond_dropout", self.cond_dropout, "must be in [0, 1)")
        check(self.type in ACTION_FAMILIES, "type", self.type, f"must be one of {list(ACTION_FAMILIES)}")
        check(self.cfg_scale == 1.0 or self.type == "diffusion", "cfg_scale", self.cfg_scale,
              f"classifier-free guidance is the diffusion head's; this head is {self.type!r}")
        check(not self.gripper_head or self.type == "diffusion", "gripper_head", self.gripper_head,
              f"the gripper classifier replaces the DiT's gripper column; this head is {self.type!r}")
        positive(self, "flow_steps", "flow_time_alpha")
        check(0.0 <= self.flow_time_min < 1.0, "flow_time_min", self.flow_time_min, "must be in [0, 1)")
        if self.head_dim is not None:
            positive(self, "head_dim")
        if self.num_kv_heads is not None:
            check(self.num_kv_heads > 0 and self.num_heads % self.num_kv_heads == 0, "num_kv_heads",
                  self.num_kv_heads, f"must be > 0 and divide num_heads={self.num_heads}")
        check(self.num_bins >= 2, "num_bins", self.num_bins, "must be >= 2")
        if self.type == "autoregressive":
            check(self.chunk_size == 1, "chunk_size", self.chunk_size,
                  "must be 1 with type=autoregressive (OpenVLA predicts one action per control step)")


DistillMode = Literal["none", "mse", "kl", "reverse_kl", "mse+reverse_kl"]


def _default_source_weights() -> dict[str, float]:
    return {"policy": 1.0, "teleop": 1.0, "hold": 0.0}


@dataclass
class TrainingConfig:
    """Training constants from the paper (Implementation Details, Eq. 3, 14-18) and the trainer's knobs.

    `batch_size` is the global batch (split over torchrun ranks). `distill` picks the CogKD variant of Tab. 3
    ("mse+reverse_kl" is Eq. 17; "none" trains without the teacher); the router variant is `router.type`.
    `load_balance` is the differentiable surrogate trained for Eq. 3 (see training/losses.py).
    `source_weights` weights samples by who commanded the first action after the frame; 0 drops them.
    """

    batch_size: int = 64
    learning_rate: float = 2e-5  # peak (constant after warmup unless lr_schedule is cosine)
    lr_schedule: Literal["constant", "cosine"] = "constant"  # cosine: decays to 10 % of the peak at max_steps
    warmup_steps: int = 0  # linear warmup from 0
    diffusion_repeats: int = 8  # repeated diffusion steps per sample
    ema_decay: float = 0.999
    lambda_cog_kl: float = 0.5  # lambda_1, Eq. 17
    lambda_cog: float = 0.5  # lambda_2, Eq. 18
    lambda_lb: float = 0.1  # lambda_3, Eq. 18
    max_steps: int = 1000
    seed: int = 0
    distill: DistillMode = "mse+reverse_kl"
    load_balance: Literal["switch", "cv", "none"] = "switch"
    toi_scaled: bool = True  # Eq. 14 scores divided by sqrt(d) before the sigmoid; False: as printed
    kl_temperature: float = 1.0  # softmax temperature over the feature dim (Eq. 16)
    # Eq. 16's mask M: "in_softmax" multiplies the features inside the softmax (the original reading, default so
    # runs resumed from older configs keep their loss); "token_weight" weights each token's KL term (the paper's).
    kl_mask: Literal["in_softmax", "token_weight"] = "in_softmax"
    weight_decay: float = 0.0
    grad_clip: float = 1.0  # max global grad norm; 0 disables
    crop_scale: float = 0.9  # random crop keeps an area fraction in [crop_scale, 1] (CogACT: 0.9)
    color_jitter: float = 0.1  # brightness/contrast jitter amplitude; 0 disables
    task_balance: bool = True  # every task equally likely per draw (mixed-task sampling)
    source_weights: dict[str, float] = field(default_factory=_default_source_weights)
    early_frames: int = 0  # an episode's first frames drawn `early_weight` times as often (0: off)
    early_weight: float = 1.0  # they show every object, so the instruction alone decides where to go
    # Beyond the paper: an auxiliary linear head regresses the pose offset to the next subgoal (where the hand
    # goes next and how it turns, training/windows.py) from the cognition feature, weight `goal_weight` (0: off),
    # the position in units of `goal_scale` metres, the rotation in units of `goal_rot_scale` rad (0: position
    # only). A direct signal for "which object did the instruction name" and "how to turn to grasp it".
    goal_weight: float = 0.0
    goal_scale: float = 0.1
    goal_rot_scale: float = 0.0
    # m: > 0 regresses each position offset d as d / (|d| + goal_knee) instead of d / goal_scale: bounded in
    # (-1, 1) for the far approach, slope 1 / goal_knee near zero, so the last centimetres above the cube weigh as
    # much in the loss as the approach does (with d / 0.1 m a 15 mm miss costs 0.02, a 30 cm approach 9)
    goal_knee: float = 0.0
    # weight of the gripper classifier's binary cross-entropy (with `action_head.gripper_head`; else unused)
    gripper_weight: float = 1.0
    # The router's parameters learn at this multiple of the schedule's rate (1: one rate for all). Beyond the
    # paper: on the tiny preset the router's logits stayed within 0.006 of each other under one rate.
    router_lr_scale: float = 1.0
    num_workers: int = 2
    log_every: int = 10
    checkpoint_every: int = 250
    keep_checkpoints: int = 3

    def __post_init__(self) -> None:
        positive(self, "batch_size", "learning_rate", "diffusion_repeats", "max_steps", "kl_temperature",
                 "log_every", "checkpoint_every", "keep_checkpoints")
        check(0.0 <= self.ema_decay < 1.0, "ema_decay", self.ema_decay, "must be in [0, 1)")
        for name in ("lambda_cog_kl",):
            check(0.0 <= getattr(self, name) <= 1.0, name, getattr(self, name), "must be in [0, 1]")
        for name in ("lambda_cog", "lambda_lb", "weight_decay", "grad_clip", "color_jitter", "num_workers",
                     "goal_weight", "gripper_weight"):
            check(getattr(self, name) >= 0, name, getattr(self, name), "must be >= 0")
        check(self.early_frames >= 0, "early_frames", self.early_frames, "must be >= 0")
        check(self.early_weight > 0, "early_weight", self.early_weight, "must be > 0")
        check(self.goal_scale > 0, "goal_scale", self.goal_scale, "must be > 0")
        check(self.router_lr_scale > 0, "router_lr_scale", self.router_lr_scale, "must be > 0")
        check(self.goal_rot_scale >= 0, "goal_rot_scale", self.goal_rot_scale, "must be >= 0 (0: position only)")
        check(self.goal_knee >= 0, "goal_knee", self.goal_knee, "must be >= 0 m (0: linear, d / goal_scale)")
        check(self.warmup_steps >= 0, "warmup_steps", self.warmup_steps, "must be >= 0")
        check(self.lr_schedule in ("constant", "cosine"), "lr_schedule", self.lr_schedule, "must be constant or cosine")
        check(0.0 < self.crop_scale <= 1.0, "crop_scale", self.crop_scale, "must be in (0, 1]")
        unknown = sorted(set(self.source_weights) - {"policy", "teleop", "hold"})
        check(not unknown, "source_weights", self.source_weights, "keys must be policy, teleop, hold")
        check(all(w >= 0 for w in self.source_weights.values()), "source_weights", self.source_weights,
              "weights must be >= 0")


@dataclass
class ModelConfig:
    """The whole MoLe-VLA: vision -> MoLe LLM -> cognition token -> DiT action head."""

    name: str = "tiny"
    vision: VisionConfig = field(default_factory=VisionConfig)
    llm: LLMConfig = field(default_factory=LLMConfig)
    router: RouterConfig = field(default_factory=RouterConfig)
    action_head: ActionHeadConfig = field(default_factory=ActionHeadConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    action_dt: float = 0.1  # seconds between consecutive actions of a chunk (policy rate)

    def __post_init__(self) -> None:
        check(self.router.num_active_layers <= self.llm.num_layers, "router.num_active_layers",
              self.router.num_active_layers, f"must be <= llm.num_layers={self.llm.num_layers}")
        check(self.router.exit_min_layers <= self.llm.num_layers, "router.exit_min_layers",
              self.router.exit_min_layers, f"must be <= llm.num_layers={self.llm.num_layers}")
        positive(self, "action_dt")
        if self.action_head.type == "autoregressive":
            check(self.action_head.num_bins <= self.llm.vocab_size, "action_head.num_bins", self.action_head.num_bins,
                  f"must be <= llm.vocab_size={self.llm.vocab_size} (the bins are the last vocabulary ids)")
            check(self.router.type in LAYER_SET_ROUTERS, "router.type", self.router.type,
                  f"with action_head.type=autoregressive must pick one layer set per step: one of "
                  f"{list(LAYER_SET_ROUTERS)}")

        if self.action_head.type == "flow":
            self._check_flow()

    def _check_flow(self) -> None:
        """The expert pairs with the LLM layer by layer and shares its attention over the prefix keys/values."""
        a, llm = self.action_head, self.llm
        check(a.depth == llm.num_layers, "action_head.depth", a.depth,
              f"must equal llm.num_layers={llm.num_layers} with type=flow (expert layer j reads LLM layer j)")
        llm_head_dim = llm.hidden_size // llm.num_heads
        check((a.head_dim or a.hidden_size // a.num_heads) == llm_head_dim, "action_head.head_dim", a.head_dim,
              f"must equal the LLM's head dim {llm_head_dim} with type=flow (the expert's queries read the LLM's "
              f"keys); set action_head.head_dim")
        llm_kv = llm.num_kv_heads or llm.num_heads
        check((a.num_kv_heads or a.num_heads) == llm_kv, "action_head.num_kv_heads", a.num_kv_heads,
              f"must equal the LLM's key/value heads {llm_kv} with type=flow; set action_head.num_kv_heads")
        check(self.router.type in LAYER_SET_ROUTERS, "router.type", self.router.type,
              f"with action_head.type=flow must pick one layer set per step (the expert skips the same layers): "
              f"one of {list(LAYER_SET_ROUTERS)}")

    @property
    def seq_len(self) -> int:
        """LLM tokens per step: image patches + padded instruction + cognition token."""
        return self.vision.num_patches + self.llm.max_text_tokens + 1
