"""Calling host code: timeouts on a bounded worker pool, what a call returned or raised
sorted into the core's typed answers, and the embedded ``LocalActivator``."""
