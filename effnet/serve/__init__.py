"""effnet serve: HTTP service and web page (issue 12, in progress)."""
