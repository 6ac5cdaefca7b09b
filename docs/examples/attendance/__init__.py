"""A worked example of a source module: daily attendance exported by a student information system."""

from .descriptor import DESCRIPTOR
from .module import AttendanceModule

__all__ = ["DESCRIPTOR", "AttendanceModule"]
