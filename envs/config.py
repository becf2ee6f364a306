"""Configuration of a data-engineering episode: budgets, costs, noise, student."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from dataeng_gym.envs.domains import DOMAINS
from dataeng_gym.envs.hf_student import HFStudentConfig
from dataeng_gym.envs.student import StudentConfig
from dataeng_gym.envs.teacher import NoiseConfig


@dataclass(frozen=True)
class EnvConfig:
    """Everything that defines an episode apart from its seed. Logged whole once per run."""

    domain: str = "science"
    """Domain name (``dataeng-gym domains``); ``reset(options={"domain": ...})`` overrides it."""
    domain_seed: int = 0
    """Seed of the domain's public/private splits."""
    teacher_budget: int = 5000
    """Teacher samples per episode; generating or verifying one item costs one."""
    train_budget: int = 4
    """TRAIN runs per episode."""
    max_steps: int = 60
    """Actions per episode; the last one submits automatically."""
    min_train_items: int = 500
    """Fewest items a TRAIN accepts (the paper's validity threshold is 1,000 of 2,000)."""
    max_train_items: int = 2000
    """A TRAIN uses the first this-many items of the mixed, ordered pool (the paper: 2,000)."""
    amounts: tuple[int, ...] = (50, 100, 250, 500)
    """Item counts the structured ``amount`` action picks from (GENERATE and VERIFY)."""
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    """Noise model of the procedural teacher."""
    verify_error_rate: float = 0.05
    """Probability that VERIFY returns the wrong verdict for an item."""
    student: StudentConfig = field(default_factory=StudentConfig)
    """Architecture and training recipe of the tiny student."""
    student_kind: str = "tiny"
    """Which student TRAIN fine-tunes: "tiny" (built from ``student``), "hf" (``hf_student``) or
    "simulated" (the count-level twin whose TRAIN is the surrogate at ``simulator_path``)."""
    hf_student: HFStudentConfig = field(default_factory=HFStudentConfig)
    """Model and LoRA recipe of the "hf" student (the paper's defaults; ``model`` must be set)."""
    student_seed: int = 0
    """Seed of the base checkpoint; shared by all episodes so rewards are paired deltas."""
    base_items: int = 20000
    """Examples in the base student's general, skewed training mix."""
    base_skill_mix: tuple[float, ...] | None = None
    """Share of each skill (in a seeded order) in the base mix; None: the domain's ``base_mix``."""
    base_difficulty_mix: tuple[float, float, float] = (0.6, 0.3, 0.1)
    """Share of each difficulty in the base mix."""
    replay_ratio: float = 0.25
    """Base-mix examples mixed into every tiny-student TRAIN, as a share of the curated ones.
    Replaying general data keeps the student from forgetting what a pool does not show, so
    targeted pools pay off and the gain of an action varies less across seeds (0 = pool only,
    the DataEng-v0 behaviour). The hf student trains on the pool alone, as in the paper."""
    eval_public_limit: int = 0
    """Evaluate on an evenly spaced subset of ``public`` of this size (0 = all of it)."""
    eval_private_limit: int = 0
    """Evaluate on an evenly spaced subset of ``private`` of this size (0 = all of it)."""
    ngram: int = 8
    """Word n-gram length of the decontamination gate."""
    bad_cases: int = 5
    """Failed public items shown in the text observation after a TRAIN."""
    teacher_cost: float = 1e-5
    """Reward cost per teacher sample."""
    train_cost: float = 0.002
    """Reward cost per TRAIN run."""
    invalid_penalty: float = 0.01
    """Reward penalty for an invalid or unaffordable action."""
    contamination_penalty: float = 0.002
    """Reward penalty per evaluation item caught at the TRAIN gate."""
    cache_dir: str | None = None
    """Where base checkpoints are cached (default: $DATAENG_GYM_CACHE or ~/.cache/dataeng_gym)."""
    simulator_path: str | None = None
    """The surrogate.json of ``dataeng-gym calibrate`` (needed when student_kind is simulated)."""
    sim_noise: float = 0.0
    """Simulated student only: standard deviation (accuracy, 0-1) of seeded Gaussian noise on
    each skill's predicted *public* accuracy after a TRAIN. The real student's public scores
    scatter around the surrogate (held-out error 3-6 points per skill, and 102 public items per
    skill alone give about 5 points of sampling noise); a policy trained on the noise-free
    surrogate never sees such states. Private scores follow the noise-free prediction of the
    pool with the best noisy public score, as picking by a noisy public score does."""

    def __post_init__(self) -> None:
        if self.domain not in DOMAINS:
            raise ValueError(f"unknown domain {self.domain!r}; choose one of: {', '.join(DOMAINS)}")
        for name in (
            "teacher_budget",
            "train_budget",
            "max_steps",
            "min_train_items",
            "base_items",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"EnvConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.max_train_items < self.min_train_items:
            raise ValueError("EnvConfig.max_train_items must be >= min_train_items")
        if not self.amounts or min(self.amounts) < 1:
            raise ValueError(f"EnvConfig.amounts must be positive counts, got {self.amounts}")
        if not 0 <= self.replay_ratio <= 1:
            raise ValueError(
                f"EnvConfig.replay_ratio must be in [0, 1], got {self.replay_ratio}; "
                "0.25 replays one base example per four curated ones"
            )
        if not 0 <= self.verify_error_rate < 0.5:
            raise ValueError("EnvConfig.verify_error_rate must be in [0, 0.5)")
        difficulty_mix, skill_mix = self.base_difficulty_mix, self.base_skill_mix or (1.0,)
        if (
            abs(sum(difficulty_mix) - 1) > 1e-6
            or min(difficulty_mix) < 0
            or min(skill_mix) < 0
            or not sum(skill_mix) > 0
        ):
            raise ValueError(
                "EnvConfig base mixes must be non-negative, the skill mix must not be all zero "
                f"and the difficulty mix must sum to 1; got base_skill_mix={self.base_skill_mix}, "
                f"base_difficulty_mix={self.base_difficulty_mix}"
            )
        if self.student_kind not in ("tiny", "hf", "simulated"):
            raise ValueError(
                "EnvConfig.student_kind must be 'tiny', 'hf' or 'simulated', "
                f"got {self.student_kind!r}"
            )
        if self.student_kind == "simulated" and not self.simulator_path:
            raise ValueError(
                "EnvConfig.student_kind='simulated' needs simulator_path: the "
                "surrogate.json written by `dataeng-gym calibrate`"
            )
        if not 0 <= self.sim_noise < 0.5:
            raise ValueError(f"EnvConfig.sim_noise must be in [0, 0.5), got {self.sim_noise}")
        if self.eval_public_limit < 0 or self.eval_private_limit < 0:
            raise ValueError("EnvConfig eval limits must be >= 0 (0 = the whole split)")
        if self.student_kind == "hf" and not self.hf_student.model:
            raise ValueError(
                "EnvConfig.student_kind='hf' needs hf_student=HFStudentConfig(model=DIR_OR_HUB_ID)"
            )

    def replace(self, **changes: object) -> EnvConfig:
        """A copy with some fields changed; unknown names are an error that lists the valid ones."""
        valid = {f.name for f in fields(self)}
        unknown = set(changes) - valid
        if unknown:
            raise ValueError(f"unknown EnvConfig fields {sorted(unknown)}; valid: {sorted(valid)}")
        import dataclasses

        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


FAST = EnvConfig(
    domain="code",
    teacher_budget=1200,
    train_budget=3,
    max_steps=20,
    min_train_items=40,
    max_train_items=200,
    amounts=(20, 50, 100, 200),
    student=StudentConfig(
        hidden_size=16,
        num_layers=1,
        num_heads=2,
        intermediate_size=32,
        batch_size=16,
        max_train_steps=12,
        base_steps=60,
        base_batch_size=32,
        eval_batch_size=256,
        device="cpu",  # deterministic everywhere; a micro student gains nothing from a GPU
    ),
    base_items=2000,
    eval_public_limit=48,
    eval_private_limit=96,
)
"""The deterministic fast twin's configuration: a micro student, small budgets and eval subsets."""
