"""The MCP tool layer: one module per group of tools, each declaring `ToolSpec`s (see base.py).

generation.py (the four generation tools), jobs.py (check_job, list_jobs, cancel_job), models.py
(list_models), resources.py (resources and legacy subscriptions), results.py (the job result),
schema.py (converter-safe schemas), argerrors.py (the one error form), _sdk.py (every SDK internal).
"""
