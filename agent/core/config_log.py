"""The ``log:`` section: what the agent writes to its log besides warnings and errors.

Kept beside :mod:`agent.core.config` (which embeds it) so that module stays one sitting long.
"""

from __future__ import annotations

from pydantic import Field

from agent.core.config_values import Section


class LogConfig(Section):
    frames: bool = Field(
        default=False,
        description="One INFO line per committed frame (label, p_damaged, position), to watch "
        "a flight from the journal or the terminal; off by default: a busy flight is thousands.",
    )
