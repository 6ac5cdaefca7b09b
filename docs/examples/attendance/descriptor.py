"""What the tools need to know about the attendance module, declared once."""

from oea_core import ModuleDescriptor

from .module import AttendanceModule

DESCRIPTOR = ModuleDescriptor(
    name="attendance",
    title="SIS daily attendance",
    module=AttendanceModule,
    # notebooks=(NotebookStep("attendance/Attendance_ingestion.ipynb", "Land and ingest attendance",
    #                         takes=("lake_path", "source_path")),),
)
