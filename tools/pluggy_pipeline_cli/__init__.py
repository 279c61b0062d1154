"""`pluggy-pipeline`, the operator CLI: events, dlq, records, send, register, secrets, against any stack.

A deployed stack (`--stack NAME`, through its CloudFormation outputs) or the running local one (its state
file). Only `local` and `demo` use the offline stack (pluggy_pipeline_local), imported when they run.
"""
