"""Crafter episodes that depend on the seed alone, in every process.

Used by every stage that runs Crafter: the stage-3/4 stand-in recordings (``wmkit.data.standins.record_crafter``)
and DreamerV3's ``wmkit.dreamer.envs.Crafter``. It lives here, beside ``wmkit.carracing``, because stage 2 must
not import the later stages' data layer.
"""
from __future__ import annotations


def crafter_reproducible() -> None:
    """Make Crafter episodes depend on the seed alone, not on the process.

    Crafter keeps each chunk's objects in a ``set`` and, when a chunk holds too many creatures, despawns
    ``creatures[random.randint(len(creatures))]`` of the list built from that set (``Env._balance_object``). Objects
    hash by memory address, so the set's order, the despawned creature and everything after it differed from process
    to process with the same seed (measured: 5 of 10 cpu-profile episodes changed length between three processes).
    This gives every object a hash equal to its creation index in its world (objects still compare by identity, so
    the sets hold the same objects); the order then follows the seed. Idempotent; changes nothing else in Crafter.
    """
    from crafter import objects

    if getattr(objects.Object, "_wmkit_reproducible", False):
        return
    init = objects.Object.__init__

    def __init__(self, world, pos):
        world._wmkit_objects = getattr(world, "_wmkit_objects", 0) + 1  # per world: one Env records the same way
        self._wmkit_index = world._wmkit_objects
        init(self, world, pos)

    objects.Object.__init__ = __init__
    objects.Object.__hash__ = lambda self: self._wmkit_index
    objects.Object._wmkit_reproducible = True
