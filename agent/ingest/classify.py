"""The classifier stage: batches of jobs in, a result (or a reject) on every job out."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Protocol

from agent.imaging.decode import DecodedImage
from agent.ingest.job import Counts, Job, PipelineError, Reject
from models.base import FrameResult

log = logging.getLogger(__name__)


class BatchClassifier(Protocol):
    """What the pipeline needs of a classifier; :class:`models.frame.FrameClassifier` is one.

    ``submit`` starts a batch and returns a handle that ``collect`` turns into its results, so
    the engine works on one batch while the next is prepared.
    """

    @property
    def input_px(self) -> int: ...

    def classify(self, images: list[DecodedImage]) -> list[FrameResult]: ...

    def submit(self, images: list[DecodedImage]) -> Any: ...  # the engine's own handle

    def collect(self, pending: Any) -> list[FrameResult]: ...


@dataclass
class Submitted:
    """A batch whose classifiable frames were handed to the engine."""

    jobs: list[Job]  # the whole batch, rejects included, in order
    ok: list[Job]  # those submitted
    handle: Any = None
    error: Exception | None = None  # submit itself failed: retried frame by frame


class ClassifierStage:
    """Runs the classifier on batches; a failed batch is retried one frame at a time, so one bad
    frame costs only itself, and a classifier that fails on every frame stops the pipeline."""

    def __init__(self, classifier: BatchClassifier, counts: Counts):
        self.classifier = classifier
        self.counts = counts

    def submit(self, jobs: list[Job]) -> Submitted:
        sub = Submitted(jobs=jobs, ok=[j for j in jobs if j.classifiable])
        if sub.ok:
            t0 = time.perf_counter()
            try:
                sub.handle = self.classifier.submit([j.image for j in sub.ok])
            except Exception as exc:  # retried in collect, one frame at a time
                sub.error = exc
            self.counts.timings["classify"] += time.perf_counter() - t0
        return sub

    def collect(self, sub: Submitted) -> list[Job]:
        """The batch, each classifiable job with its ``result`` or an ``inference_error`` reject.

        Raises :class:`PipelineError` when every frame of the batch fails on its own.
        """
        if not sub.ok:
            return sub.jobs
        t0 = time.perf_counter()
        try:
            if sub.error is not None:
                raise sub.error
            results = self.classifier.collect(sub.handle)
        except Exception:
            log.exception("classifying a batch of %d frames failed; retrying one by one", len(sub.ok))
            results = None
        finally:
            self.counts.timings["classify"] += time.perf_counter() - t0
        if results is None:
            self._one_by_one(sub.ok)
        else:
            for job, res in zip(sub.ok, results, strict=True):
                job.result = res
        return sub.jobs

    def classify(self, jobs: list[Job]) -> list[Job]:
        """Submit and collect in one call (no overlap): for one-off runs."""
        return self.collect(self.submit(jobs))

    def _one_by_one(self, jobs: list[Job]) -> None:
        errors: list[Exception] = []
        for job in jobs:
            try:
                job.result = self.classifier.classify([job.image])[0]
            except Exception as exc:
                errors.append(exc)
                job.reject = Reject("inference_error", str(exc))
        if len(errors) == len(jobs):
            raise PipelineError(f"the classifier fails on every frame: {errors[0]!r}")
