"""`python -m core.run SPEC --out DIR`: one training run, on one rank of a torchrun group or
alone. Rank 0 writes `spec.yaml`, the metrics, checkpoints, outputs and `summary.json`; a rank
that fails writes `error.json` with the root cause."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import traceback
from pathlib import Path
from typing import Any

from core import distributed as D
from core.spec import BaseJobSpec, SpecError, dump_spec, load_spec

log = logging.getLogger("core.run")


def find_resume_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint to resume a run directory from: `checkpoints/last.pt`, else the newest
    other one; a checkpoint that fails its digest check is skipped with a warning (the next
    newest that verifies is used)."""
    from core.checkpoint import CheckpointCorrupt, verify_checkpoint

    ckpts = run_dir / "checkpoints"
    found = sorted(ckpts.glob("*.pt"), key=lambda p: (p.name == "last.pt", p.stat().st_mtime))
    for path in reversed(found):
        try:
            verify_checkpoint(path)
        except CheckpointCorrupt as exc:
            log.warning("not resuming from a corrupt checkpoint: %s", exc)
            continue
        return path
    return None


def train(
    spec: BaseJobSpec, out_dir: Path, resume: str | None = None, progress: bool = False
) -> dict[str, Any]:
    """Train `spec` into `out_dir` on this process's rank; returns the summary (rank 0)."""
    from core.checkpoint import atomic_write_bytes
    from core.families import get_task_class
    from core.report import report_phase, start_phases
    from core.task import RunContext
    from core.trainer import Trainer

    info = D.init_distributed(spec.resources.accelerator, spec.resources.threads)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        if info.rank == 0:
            atomic_write_bytes(out_dir / "spec.yaml", dump_spec(spec).encode())
            start_phases(out_dir)  # the phases a watcher sees (`events.jsonl`)
        report_phase("loading data")  # the Trainer sets up the task's data and model
        ctx = RunContext(spec, out_dir, info.device, info.rank, info.world_size)
        trainer = Trainer(get_task_class(spec.family)(ctx), progress=progress)  # type: ignore[attr-defined]
        resume_path = None
        if resume == "auto":
            resume_path = find_resume_checkpoint(out_dir)
        elif resume:
            resume_path = Path(resume)
        return trainer.fit(resume_from=resume_path)
    finally:
        start_phases(None)
        D.cleanup()


def write_error(out_dir: Path, exc: BaseException) -> None:
    import os

    rank = int(os.environ.get("RANK", "0"))
    payload = {
        "type": type(exc).__name__,
        "message": str(exc),
        "rank": rank,
        "traceback": traceback.format_exc(),
    }
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        name = "error.json" if rank == 0 else f"error-rank{rank}.json"
        (out_dir / name).write_text(json.dumps(payload, indent=2))
    except OSError:
        pass


PREEMPTED_EXIT = 143  # 128 + SIGTERM: stopped on request, after saving


def _save_on_sigterm() -> None:
    """SIGTERM asks the trainer to save at its next optimizer step and stop (`Preempted`)."""
    import signal

    def request(signum: int, frame: Any) -> None:
        from core.trainer import PREEMPT

        PREEMPT.set()

    signal.signal(signal.SIGTERM, request)


def _preempted() -> type[BaseException]:
    from core.trainer import Preempted

    return Preempted


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.run", description=__doc__)
    parser.add_argument("spec", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--resume", default=None, help="'auto' or a checkpoint path")
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    _save_on_sigterm()
    try:
        spec = load_spec(args.spec, args.overrides)
        summary = train(spec, args.out, args.resume, args.progress)
    except _preempted() as exc:
        log.warning("%s; resume with --resume auto", exc)
        return PREEMPTED_EXIT
    except SpecError as exc:
        write_error(args.out, exc)
        print(exc, file=sys.stderr)
        return 2
    except BaseException as exc:
        write_error(args.out, exc)
        log.exception("training failed")
        return 1
    if summary:
        log.info("done: %s", json.dumps(summary.get("best_metrics", {})))
    return 0


if __name__ == "__main__":
    sys.exit(main())
