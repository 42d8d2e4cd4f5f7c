"""eventsim: event-driven simulation of spiking and event-based language models.

Loads a checkpoint, runs it event by event, and counts every operation.
Runs without torch.
"""

from eventsim.errors import EventsimError

__version__ = "0.1.0"
__all__ = ["EventsimError", "__version__"]
