"""A tool call's planning: arguments, validation against the catalog, the stored request, the dry run."""
