"""Log a run of episodes to Weights & Biases (the ``wandb`` extra); never fails the run.

One W&B run per experiment: the whole configuration once, every env step against our own
step counter (``env_step``, via ``define_metric``), a summary per episode (against
``episode_index``), a table of actions and pool statistics, and at the end the comparison table
and the report files as an artifact. ``WANDB_MODE`` defaults to ``offline`` (the run is written
under ``RUN_DIR/wandb`` and can be synced later with ``wandb sync``); tests set ``disabled``.

The local ``results.jsonl`` is the source of truth: any W&B error is reported once as a warning
and logging stops, the run goes on. Offline mode cannot resume a W&B run, so a rerun of the
same run directory starts a new W&B run whose config says ``resumed_from`` (the previous run's
id, kept in ``RUN_DIR/wandb_runs.json``).
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dataeng_gym.errors import MissingExtraError
from dataeng_gym.io import read_jsonl, write_json

STATE_FILE = "wandb_runs.json"

ACTION_COLUMNS = (
    "policy", "domain", "seed", "step", "op", "arguments", "invalid", "reward", "pool_size",
    "verified_frac", "duplicate_frac", "malformed_frac", "public", "best_public",
)  # fmt: skip


class WandbLogger:
    """W&B logging of one experiment's episodes; every method is a no-op after a W&B failure."""

    def __init__(
        self,
        run_dir: str | Path,
        experiment: str,
        config: dict[str, Any],
        project: str = "dataeng-gym",
    ) -> None:
        """Start the W&B run (``WANDB_MODE`` offline unless set).

        Args:
            run_dir: The run directory; W&B writes under ``run_dir/wandb``.
            experiment: Run name and group.
            config: The whole configuration, JSON-able; logged once.
            project: W&B project.

        Raises:
            MissingExtraError: ``wandb`` is not installed.
        """
        try:
            import wandb
        except ImportError as exc:
            raise MissingExtraError("wandb", "wandb") from exc
        self._wandb = wandb
        self.run: Any = None
        self.run_dir = Path(run_dir)
        self.env_steps = 0
        self.episodes = 0
        self.actions: list[list[Any]] = []
        state_path = self.run_dir / STATE_FILE
        self.resumed_from = None
        mode = os.environ.get("WANDB_MODE") or "offline"
        try:
            state = json.loads(state_path.read_text()) if state_path.exists() else {"runs": []}
            self.resumed_from = state["runs"][-1]["id"] if state["runs"] else None
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.run = wandb.init(
                project=project,
                name=experiment,
                group=experiment,
                job_type="compare",
                dir=str(self.run_dir),
                mode=mode,  # read now: wandb caches the mode of its first run in the process
                config={**config, "resumed_from": self.resumed_from},
                reinit="create_new",
            )
            self.run.define_metric("env_step")
            self.run.define_metric("step/*", step_metric="env_step")
            self.run.define_metric("episode_index")
            self.run.define_metric("episode/*", step_metric="episode_index")
            if mode != "disabled":
                state["runs"].append({"id": self.run.id, "mode": mode})
                write_json(state_path, state)
        except Exception as exc:
            self._fail("init", exc)

    def log_episode(self, record: dict[str, Any], episode_dir: str | Path) -> None:
        """Log an episode's steps (from its ``episode.jsonl``) and its summary."""
        if self.run is None:
            return
        try:
            self.episodes += 1
            log = Path(episode_dir) / "episode.jsonl"
            for s in read_jsonl(log) if log.exists() else ():
                self.env_steps += 1
                self.run.log(
                    {
                        "env_step": self.env_steps,
                        "step/episode": self.episodes,
                        "step/reward": s["reward"],
                        "step/public": s["public"],
                        "step/best_public": s["best_public"],
                        "step/pool_size": s["pool"]["size"],
                        "step/teacher_left": s["teacher_left"],
                        "step/invalid": int(bool(s["invalid_action"])),
                    }
                )
                action = s["action"] or {}
                self.actions.append(
                    [
                        record["policy"], record["domain"], record["seed"], s["step"],
                        action.get("op", "invalid"),
                        json.dumps({k: v for k, v in action.items() if k != "op"}),
                        s["invalid_action"] or "", s["reward"], s["pool"]["size"],
                        s["pool"]["verified_frac"], s["pool"]["duplicate_frac"],
                        s["pool"]["malformed_frac"], s["public"], s["best_public"],
                    ]
                )  # fmt: skip
            summary = record["summary"] or {}
            numbers = {
                f"episode/{k}": v
                for k, v in summary.items()
                if isinstance(v, int | float) and not isinstance(v, bool)
            }
            self.run.log(
                {
                    "episode_index": self.episodes,
                    "episode/ok": int(record["status"] == "ok"),
                    "episode/attempts": record["attempts"],
                    **numbers,
                }
            )
        except Exception as exc:
            self._fail("log_episode", exc)

    def log_report(self, rows: Sequence[dict[str, Any]], paths: dict[str, Path]) -> None:
        """Log the comparison table and the actions table, and the report files as an artifact."""
        if self.run is None:
            return
        try:
            from dataeng_gym.report import CSV_COLUMNS

            wandb = self._wandb
            comparison = wandb.Table(
                columns=list(CSV_COLUMNS), data=[[r[c] for c in CSV_COLUMNS] for r in rows]
            )
            actions = wandb.Table(columns=list(ACTION_COLUMNS), data=self.actions)
            self.run.log({"comparison": comparison, "actions": actions})
            artifact = wandb.Artifact(f"report-{self.run.id}", type="report")
            for path in paths.values():
                artifact.add_file(str(path), name=str(Path(path).relative_to(self.run_dir)))
            self.run.log_artifact(artifact)
            for r in rows:
                key = f"{r['policy']}/{r['domain']}"
                self.run.summary[f"{key}/gain_abs_points_mean"] = r["gain_abs_points_mean"]
                self.run.summary[f"{key}/gain_rel_pct_mean"] = r["gain_rel_pct_mean"]
        except Exception as exc:
            self._fail("log_report", exc)

    def finish(self) -> None:
        if self.run is None:
            return
        try:
            self.run.finish()
        except Exception as exc:
            self._fail("finish", exc)
        self.run = None

    def _fail(self, where: str, exc: Exception) -> None:
        warnings.warn(
            f"W&B logging stopped ({where}: {type(exc).__name__}: {exc}); the run goes on and "
            f"its results stay in {self.run_dir / 'results.jsonl'}",
            RuntimeWarning,
            stacklevel=3,
        )
        run, self.run = self.run, None
        if run is not None:
            try:
                run.finish(exit_code=1)
            except Exception:  # already broken: nothing more to do
                pass
