"""The generic task engine: task types (a parameters schema and a job function each), the
registry a deployment adds its own types to, and the context a running job reports through."""
