"""skysift: on-board damage classification agent for disaster response."""

__version__ = "0.2.0"
