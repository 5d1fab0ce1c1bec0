"""The MCP tasks extension (`io.modelcontextprotocol/tasks`, SEP-2663) over the durable job store."""

from .extension import EXTENSION_ID, TASK_TOOLS, TasksExtension
from .store import TaskRow, TaskStore

__all__ = ["EXTENSION_ID", "TASK_TOOLS", "TaskRow", "TaskStore", "TasksExtension"]
