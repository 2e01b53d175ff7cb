"""RQ jobs. Jobs take ids, reload state, can run twice safely and never swallow a failure."""
