"""The operator's tools on the data: verify the invariants, every command's one outcome, dead
letters (explain, redrive), lag from the group offsets, migration to another partition count.
"""

from kes.streams.operations.deadletters import read_dead_letters, redrive
from kes.streams.operations.lag import LagReport, LagTarget, app_targets
from kes.streams.operations.lagmonitor import LagMonitor
from kes.streams.operations.migrator import Migration, migrate
from kes.streams.operations.outcomes import check_outcomes, read_outcomes
from kes.streams.operations.verify import Verification

__all__ = [
    "LagMonitor",
    "LagReport",
    "LagTarget",
    "Migration",
    "Verification",
    "app_targets",
    "check_outcomes",
    "migrate",
    "read_dead_letters",
    "read_outcomes",
    "redrive",
]
