"""python -m jobs.distill: the student's semantic head learns the ImageNet teacher's softmax."""
from __future__ import annotations

from jobs import _train

EPILOG = """\
Ray Train TorchTrainer (DDP; gloo on CPU, NCCL + bf16 on GPU). Decoding and augmentation run in
Ray Data; each worker reads its shard. Loss: T^2 KL(teacher_T || student_T) on the semantic head.
A checkpoint every epoch under STORAGE/NAME; a crashed worker group restarts from it
(--max-failures) and rerunning the same --name resumes (more --epochs trains on; other settings
are refused, --force starts over). A NaN or infinite loss stops the run, with no restart and no
checkpoint of the weights it reached.

example:
  python -m jobs.teacher_softmax --input work/ava/manifest.parquet --out work/teacher
  python -m jobs.distill --manifest work/ava/manifest.parquet \\
      --teacher work/teacher/teacher.parquet --storage work/runs --name distill-lite0 \\
      --init random --epochs 5
"""


def main(argv: list[str] | None = None) -> int:
    p = _train.parser("Distil the ImageNet teacher into an APM student.", EPILOG)
    return _train.run(p.parse_args(argv), "distill")


if __name__ == "__main__":
    raise SystemExit(main())
