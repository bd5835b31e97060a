"""Ingest: frames from a source to committed rows, one stage per module.

Other rooms import these names from here, not from the stage modules.
"""

from agent.ingest.classify import BatchClassifier, ClassifierStage
from agent.ingest.commit import Committer
from agent.ingest.decoder import BatchSizer, Decoder
from agent.ingest.flights import FlightTracker
from agent.ingest.job import Counts, Job, PipelineError, Reject
from agent.ingest.locate import Location, Locator
from agent.ingest.pipeline import Pipeline
from agent.ingest.reader import InFlight, Reader, record_files
from agent.ingest.rows import build_row, captured_at
from agent.ingest.space import SpaceGuard, disk_free_bytes

__all__ = [
    "BatchClassifier",
    "BatchSizer",
    "ClassifierStage",
    "Committer",
    "Counts",
    "Decoder",
    "FlightTracker",
    "InFlight",
    "Job",
    "Location",
    "Locator",
    "Pipeline",
    "PipelineError",
    "Reader",
    "Reject",
    "SpaceGuard",
    "build_row",
    "captured_at",
    "disk_free_bytes",
    "record_files",
]
