"""What transitions tell the world: transition events and their listeners, the
structured log line, Prometheus metrics."""
