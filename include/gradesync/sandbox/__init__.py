"""An Infinite Campus OneRoster 1.1/1.2 sandbox: deterministic gradebook data, IC auth, faults.

Use ``SandboxProcess`` (a real server process) in integration tests and demos, ``SandboxServer``
(a thread in this process) where a process is too heavy, and ``generate`` for the data alone.
"""

from gradesync.sandbox.faults import FaultConfig
from gradesync.sandbox.generator import PRESETS, Dataset, generate
from gradesync.sandbox.process import SandboxAdmin, SandboxProcess, airflow_connection
from gradesync.sandbox.server import SandboxConfig, SandboxServer

__all__ = [
    "PRESETS",
    "Dataset",
    "FaultConfig",
    "SandboxAdmin",
    "SandboxConfig",
    "SandboxProcess",
    "SandboxServer",
    "airflow_connection",
    "generate",
]
