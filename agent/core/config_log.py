"""The ``log:`` section: what the agent writes to its log besides warnings and errors.

Kept beside :mod:`agent.core.config` (which embeds it) so that module stays one sitting long.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class LogConfig(BaseModel):
    # The same rules as every other section (agent.core.config._Section): typos fail loudly.
    model_config = ConfigDict(extra="forbid", validate_default=True)

    frames: bool = Field(
        default=False,
        description="One INFO line per committed frame (label, p_damaged, position), to watch "
        "a flight from the journal or the terminal; off by default: a busy flight is thousands.",
    )
